"""Anchors of the audit log's hash chain, kept outside the database.

The chain shows a row changed in place. But whoever can rewrite the table (a superuser lifting
its guard) can also recompute every hash after that row, or cut the tail off, and the chain reads
as intact again. An anchor is a row's number and hash, written down somewhere else when the row
was appended: the deploy's controller keeps one for each operation it records
(gekko.platform.audit). A rewrite or a cut that reaches back past an anchor then shows as that
row changed or gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from gekko.security.audit import ArchivedRange, archived_ranges

_ANCHOR = re.compile(r"^([1-9][0-9]{0,18}):([0-9a-f]{64})$")


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: bytes

    @classmethod
    def parse(cls, text: str) -> Anchor:
        match = _ANCHOR.match(text.strip().lower())
        if match is None:
            raise ValueError(
                f"{text.strip()[:80]!r} is not an anchor: ROW:HASH, a row number and its "
                "64-hex-digit hash (as `gekko audit record` prints them)"
            )
        return cls(int(match[1]), bytes.fromhex(match[2]))

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash.hex()}"


def anchor_problems(
    anchors: Iterable[Anchor],
    stored: Mapping[int, bytes],
    archived: Sequence[ArchivedRange] = (),
) -> list[str]:
    """What no longer matches, given the stored hash of each anchored row that still exists and
    the recorded ends of the archived months. An anchor inside an archived month is checked
    against its file by `gekko archive verify --anchors`; on the month's last row, here too."""
    problems = []
    for anchor in anchors:
        found = stored.get(anchor.seq)
        if found is None:
            block = next((b for b in archived if b.holds(anchor.seq)), None)
            if block is None:
                problems.append(f"row {anchor.seq} is gone: the log was cut back past it")
                continue
            if anchor.seq != block.last_seq:
                continue
            found = block.last_hash
        if found != anchor.hash:
            problems.append(
                f"row {anchor.seq} no longer has its anchored hash {anchor.hash.hex()[:16]}...: "
                "the chain was rewritten from that row or before it"
            )
    return problems


async def check_anchors(conn: asyncpg.Connection, anchors: list[Anchor]) -> list[str]:
    rows = await conn.fetch(
        "SELECT seq, hash FROM audit.events WHERE seq = ANY($1::bigint[])",
        [anchor.seq for anchor in anchors],
    )
    stored = {row["seq"]: bytes(row["hash"]) for row in rows}
    return anchor_problems(anchors, stored, await archived_ranges(conn))
