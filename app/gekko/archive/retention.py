"""What each data class keeps, and for how long: GEKKO_RETENTION (JSON, from the inventory's
gekko_retention), for example {"orders": {"hot_months": 3, "keep_years": 7}}.

hot_months: whole months kept in the database before the current one; older months are
archived. keep_years: how long an archived month is kept after it ends; never under
MIN_KEEP_YEARS, the regulatory floor (BC-003)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from gekko.archive.partitions import AUDIT, ORDERS, Month, PartitionedTable

MIN_KEEP_YEARS = 7


class RetentionError(ValueError):
    pass


@dataclass(frozen=True)
class DataClass:
    name: str
    table: PartitionedTable
    hot_months: int
    keep_years: int

    def cold_before(self, now: datetime) -> Month:
        """The first month still hot: the months before it are archived."""
        return Month.of(now).plus(-self.hot_months)

    def retain_until(self, month: Month) -> datetime:
        end = month.end
        return end.replace(year=end.year + self.keep_years)


# Orders (their fills are rows of the same table) and the audit log, with their defaults.
DEFAULTS = {
    "orders": DataClass("orders", ORDERS, hot_months=3, keep_years=7),
    "audit": DataClass("audit", AUDIT, hot_months=12, keep_years=7),
}


def _whole(value: object, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise RetentionError(f"{what} must be a whole number of at least {least}, not {value!r}")
    return value


def parse(text: str | None) -> dict[str, DataClass]:
    """The data classes with the settings of `text` (JSON) applied over the defaults."""
    if not text or not text.strip():
        return dict(DEFAULTS)
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RetentionError(f"GEKKO_RETENTION is not JSON: {exc}") from exc
    if not isinstance(settings, dict):
        raise RetentionError("GEKKO_RETENTION must map data classes to their settings")
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise RetentionError(
            f"unknown data class(es) {', '.join(unknown)}: known are {', '.join(DEFAULTS)}"
        )
    classes = dict(DEFAULTS)
    for name, given in settings.items():
        if not isinstance(given, dict) or set(given) - {"hot_months", "keep_years"}:
            raise RetentionError(f"{name}: give hot_months and keep_years only, not {given!r}")
        default = DEFAULTS[name]
        classes[name] = DataClass(
            name,
            default.table,
            hot_months=_whole(given.get("hot_months", default.hot_months), f"{name}.hot_months", 1),
            keep_years=_whole(
                given.get("keep_years", default.keep_years), f"{name}.keep_years", MIN_KEEP_YEARS
            ),
        )
    return classes
