"""Monthly range partitions of the tables kept for years (BC-003): their names and bounds, their
creation a year ahead, and the rows a default partition caught moved into their own month.

Each kept table is partitioned by month of one timestamp column, in UTC, plus a default
partition: an insert never fails because a month's partition is missing, and the next
`ensure_partitions` (each migration, each archive run) moves such rows where they belong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

# Partitions exist this many months ahead, so inserts never depend on a job having run lately.
MONTHS_AHEAD = 12
# Making a month needs the table to itself: waited for at most this long (the services'
# transactions are short), so that writers queue behind it only briefly.
LOCK_WAIT_S = 5

_SUFFIX = re.compile(r"_y(\d{4})m(\d{2})$")
# The same suffix in PostgreSQL's regular expressions, to find month tables by name.
MONTH_SUFFIX_SQL = "_y[0-9]{4}m[0-9]{2}"


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12 or not 1970 <= self.year <= 9998:
            raise ValueError(f"not a month: {self.year}-{self.month}")

    @classmethod
    def of(cls, moment: datetime) -> Month:
        moment = moment.astimezone(UTC)
        return cls(moment.year, moment.month)

    @classmethod
    def parse(cls, text: str) -> Month:
        """'YYYY-MM'."""
        match = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
        if not match:
            raise ValueError(f"not a month (YYYY-MM): {text!r}")
        return cls(int(match[1]), int(match[2]))

    def plus(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    def until(self, last: Month) -> list[Month]:
        """This month through `last`, both included."""
        months, month = [], self
        while month <= last:
            months.append(month)
            month = month.plus(1)
        return months

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.plus(1).start

    @property
    def suffix(self) -> str:
        return f"y{self.year:04d}m{self.month:02d}"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True)
class PartitionedTable:
    schema: str
    name: str
    key: str  # the timestamp column partitions are cut by
    row_id: str  # the column that orders its rows (in an archive file too)
    append_only: bool = False
    # Rows that keep a month in the database whatever its age (SQL condition; '' for none).
    still_open: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def partition(self, month: Month) -> str:
        return f"{self.name}_{month.suffix}"

    @property
    def default(self) -> str:
        return f"{self.name}_default"

    def month_of(self, partition: str) -> Month | None:
        """The month a partition of this table holds; None for the default one."""
        match = _SUFFIX.search(partition)
        return Month(int(match[1]), int(match[2])) if match else None


# A resting order keeps its month hot until it fills or is cancelled.
ORDERS = PartitionedTable("trading", "orders", "created_at", "id", still_open="status = 'open'")
AUDIT = PartitionedTable("audit", "events", "at", "seq", append_only=True)
TABLES = (ORDERS, AUDIT)


def quoted(*names: str) -> str:
    """Our own identifiers (schema, table), checked, joined with dots."""
    for name in names:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not an identifier of the platform: {name!r}")
    return ".".join(f'"{name}"' for name in names)


async def columns(conn: asyncpg.Connection, relation: str) -> list[str]:
    """A table's columns (schema.name), in their order."""
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        relation,
    )
    return [row["attname"] for row in rows]


async def partitions(conn: asyncpg.Connection, table: PartitionedTable) -> dict[Month, str]:
    """Month -> partition name, for the month partitions attached now."""
    rows = await conn.fetch(
        """
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = $1::regclass
        """,
        table.qualified,
    )
    found = {}
    for row in rows:
        month = table.month_of(row["relname"])
        if month is not None:
            found[month] = row["relname"]
    return found


async def _months_in_default(conn: asyncpg.Connection, table: PartitionedTable) -> list[Month]:
    rows = await conn.fetch(
        f"SELECT DISTINCT date_trunc('month', {quoted(table.key)} AT TIME ZONE 'UTC') AS month "  # noqa: S608 - checked identifiers
        f"FROM ONLY {quoted(table.schema, table.default)}"
    )
    return [Month(row["month"].year, row["month"].month) for row in rows]


def bounds(month: Month) -> str:
    """A month's partition bounds. DDL takes no parameters: these are our own timestamps, in ISO
    form."""
    return f"FROM ('{month.start.isoformat()}') TO ('{month.end.isoformat()}')"


def protect_statements(table: PartitionedTable, partition: str) -> list[str]:
    """Row triggers pass from a parent to its partitions; an append-only table's statement
    trigger (no TRUNCATE) does not."""
    if not table.append_only:
        return []
    return [
        f"CREATE TRIGGER {table.name}_no_truncate BEFORE TRUNCATE "
        f"ON {quoted(table.schema, partition)} "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change()"
    ]


def partition_statements(table: PartitionedTable, month: Month | None) -> list[str]:
    """The DDL that makes one month's partition (None: the default one), shared with the
    migration that first partitioned the tables."""
    name = table.partition(month) if month else table.default
    where = f"FOR VALUES {bounds(month)}" if month else "DEFAULT"
    return [
        f"CREATE TABLE {quoted(table.schema, name)} "
        f"PARTITION OF {quoted(table.schema, table.name)} {where}",
        *protect_statements(table, name),
    ]


async def create_partition(conn: asyncpg.Connection, table: PartitionedTable, month: Month) -> str:
    for statement in partition_statements(table, month):
        await conn.execute(statement)
    return table.partition(month)


async def _missing(
    conn: asyncpg.Connection, table: PartitionedTable, now: datetime, since, skip
) -> tuple[list[Month], list[Month]]:
    """(the months to make, those of them whose rows wait in the default partition)."""
    have = await partitions(conn, table)
    waiting = set(await _months_in_default(conn, table))
    current = Month.of(now)
    wanted = {m for m in current.until(current.plus(MONTHS_AHEAD)) if m not in skip}
    wanted |= since | waiting
    missing = sorted(wanted - have.keys())
    return missing, sorted(waiting & set(missing))


async def ensure_partitions(
    conn: asyncpg.Connection,
    table: PartitionedTable,
    now: datetime,
    since: Iterable[Month] = (),
    skip: Iterable[Month] = (),
) -> list[str]:
    """Creates the partitions from this month to MONTHS_AHEAD ahead, and those of `since`, and
    moves the rows the default partition holds into their month's new partition. Months in `skip`
    (archived ones) get no partition again unless rows of theirs are waiting. Returns the new
    partitions' names.

    Looked at first without a lock (usually nothing is missing); then in one transaction that
    takes the table to itself, waiting LOCK_WAIT_S at most (asyncpg.LockNotAvailableError), so
    writers wait a moment and never see a half-made month, and no lock is ever upgraded."""
    since, skip = set(since), set(skip)
    missing, _ = await _missing(conn, table, now, since, skip)
    if not missing:
        return []
    parent = quoted(table.schema, table.name)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'")
        await conn.execute(f"LOCK TABLE {parent} IN ACCESS EXCLUSIVE MODE")
        missing, moving = await _missing(conn, table, now, since, skip)
        default = quoted(table.schema, table.default)
        if moving:
            await conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {default}")
        created = [await create_partition(conn, table, month) for month in missing]
        if moving:
            key = quoted(table.key)
            for month in moving:
                where = f"{key} >= $1 AND {key} < $2"
                await conn.execute(
                    f"INSERT INTO {parent} OVERRIDING SYSTEM VALUE "  # noqa: S608 - checked identifiers
                    f"SELECT * FROM {default} WHERE {where}",
                    month.start,
                    month.end,
                )
                await conn.execute(f"DELETE FROM {default} WHERE {where}", month.start, month.end)  # noqa: S608
            await conn.execute(f"ALTER TABLE {parent} ATTACH PARTITION {default} DEFAULT")
        return created
