"""Request field types for values that reach PostgreSQL, checked where FastAPI validates the
request: input the database cannot take is a 422 problem before any handler runs, not a 500
from the driver halfway through one.

- `StoredText`: text without NUL. PostgreSQL's text types cannot hold U+0000 (the server
  answers "invalid byte sequence for encoding UTF8: 0x00"), and JSON and query strings carry it
  easily (`\\u0000`, `%00`). `NonBlankText`: the same, stripped, and not empty once it is.
- `Timestamp`: an RFC 3339 date-time with an offset (what the OpenAPI `date-time` format
  promises), in the range a `timestamptz` parameter can be sent in. Left to pydantic alone, a
  number of seconds ("0.5") passed as a Unix time, and a time near year 1 or 9999 passed
  validation, then overflowed in the driver's conversion to UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


StoredText = Annotated[str, AfterValidator(_no_nul)]


def _stripped_not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


# StoredText without the white space around it, refused when there is nothing else.
NonBlankText = Annotated[StoredText, AfterValidator(_stripped_not_blank)]

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T09:30:00Z")
    return value


def _in_utc_range(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except (OverflowError, ValueError, OSError):
        raise ValueError("is out of range once converted to UTC") from None
    return value


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc_range)]
