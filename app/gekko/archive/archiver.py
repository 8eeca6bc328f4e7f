"""Archiving months past their hot window, checking the archives, restoring a month, and deleting
archives whose retention has ended. Runs as the database's owner (it detaches and drops
partitions), one job at a time (an advisory lock).

A month is detached, its rows are written to a file, the file is read back and checked, copied
to each configured place and the copies checked, and only then is the month recorded in
archive.partitions and its table dropped. Any failure attaches the month again, as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from gekko.archive import files
from gekko.archive.partitions import (
    LOCK_WAIT_S,
    MONTH_SUFFIX_SQL,
    TABLES,
    Month,
    PartitionedTable,
    bounds,
    ensure_partitions,
    partitions,
    protect_statements,
    quoted,
)
from gekko.archive.partitions import columns as table_columns
from gekko.archive.retention import DataClass
from gekko.security.audit import ChainWalker
from gekko.security.audit_anchors import Anchor

# A month restored for reading stays in the database this long before a run archives it again.
RESTORED_KEPT = timedelta(days=7)
# Detaching or attaching a month needs its table to itself: tried this often (each waiting
# partitions.LOCK_WAIT_S at most).
LOCK_TRIES = 5


@dataclass
class Outcome:
    """What a run did, month by month, in words for the operator."""

    archived: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def _session(conn: asyncpg.Connection) -> None:
    # The CSV's times in UTC and ISO form, bytes in hex, whoever's session defaults apply.
    await conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET bytea_output = 'hex'")


async def _recorded(conn: asyncpg.Connection, partition: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM archive.partitions WHERE partition = $1", partition)


async def _still_open(conn: asyncpg.Connection, table: PartitionedTable, relation: str) -> str:
    if not table.still_open:
        return ""
    count = await conn.fetchval(
        f"SELECT count(*) FROM {relation} WHERE {table.still_open}"  # noqa: S608 - our own SQL
    )
    return f"it holds {count} open row(s), kept until they close" if count else ""


async def _why_not_yet(
    conn: asyncpg.Connection, table: PartitionedTable, name: str, month: Month
) -> str:
    """Why a cold month cannot be archived now ('' when it can)."""
    relation = quoted(table.schema, name)
    reason = await _still_open(conn, table, relation)
    if reason or not table.append_only:
        return reason
    # The month must be one run of the chain: no other month's row among its own. (Rows
    # written before the chain's times were kept in order may interleave at a month's edge.)
    ends = await conn.fetchrow(f"SELECT min(seq) AS first, max(seq) AS last FROM {relation}")  # noqa: S608
    if ends["first"] is None:
        return ""
    # Appending reads the chain's head from the database and the archive records: the month
    # with the newest row stays until a newer one is written (it would be in neither while
    # detached).
    if ends["last"] == await conn.fetchval("SELECT max(seq) FROM audit.events"):
        return "it holds the chain's newest row, kept until a newer one is written"
    later = await conn.fetchval("SELECT min(seq) FROM audit.events WHERE at >= $1", month.end)
    earlier = await conn.fetchval("SELECT max(seq) FROM audit.events WHERE at < $1", month.start)
    if later is not None and later < ends["last"]:
        last = ends["last"]
        return f"its rows interleave with the next month's (row {later} before row {last})"
    if earlier is not None and earlier > ends["first"]:
        return (
            f"its rows interleave with the month before (row {earlier} after row {ends['first']})"
        )
    return ""


async def _chain_ends(conn: asyncpg.Connection, relation: str) -> dict[str, object]:
    first = await conn.fetchrow(f"SELECT seq, prev_hash FROM {relation} ORDER BY seq LIMIT 1")  # noqa: S608
    last = await conn.fetchrow(f"SELECT seq, hash FROM {relation} ORDER BY seq DESC LIMIT 1")  # noqa: S608
    if first is None:
        return {}
    return {
        "first_seq": first["seq"],
        "first_prev_hash": bytes(first["prev_hash"]).hex(),
        "last_seq": last["seq"],
        "last_hash": bytes(last["hash"]).hex(),
    }


async def _write(
    conn: asyncpg.Connection,
    table: PartitionedTable,
    relation: str,
    target: Path,
    columns: list[str] | None = None,
) -> tuple[str, str]:
    """The month's rows to `target`: every column, or `columns` (a restored month archived
    again, whose table has since gained a column: its archive holds the columns it had)."""
    writer = files.ArchiveWriter(target)
    selected = ", ".join(quoted(column) for column in columns) if columns else "*"
    try:
        await conn.copy_from_query(
            f"SELECT {selected} FROM {relation} ORDER BY {quoted(table.row_id)}",  # noqa: S608
            output=writer.write,
            format="csv",
            header=True,
        )
    except BaseException:
        writer.abandon()
        raise
    return writer.finish()


def _archived_columns(directory: Path, data_class: str, name: str) -> list[str] | None:
    """The columns the month's earlier archive holds (None when its manifest is gone)."""
    path = files.manifest_path(directory, data_class, name)
    return files.Manifest.load(path).columns if path.exists() else None


def _check_file(path: Path, manifest: files.Manifest) -> list[str]:
    """What is wrong with an archive file given its manifest (nothing: [])."""
    if not path.exists():
        return [f"{path} is missing"]
    chain = manifest.chain
    walker: ChainWalker | None = None
    if chain:
        walker = ChainWalker()
        walker.rows, walker.prev = (
            int(chain["first_seq"]) - 1,
            bytes.fromhex(str(chain["first_prev_hash"])),
        )
    found: list[str] = []

    def on_row(values: dict[str, str]) -> None:
        if walker is not None and walker.broken is None:
            walker.add(_audit_row(values))

    reading = files.read_back(path, on_row if walker else None)
    if reading.sha256 != manifest.sha256:
        found.append(f"{path.name}: its checksum is not the manifest's (the file changed)")
    if reading.content_sha256 != manifest.content_sha256:
        found.append(f"{path.name}: its content is not what was archived")
    if reading.rows != manifest.rows:
        found.append(f"{path.name}: {reading.rows} row(s), the manifest says {manifest.rows}")
    if reading.columns != manifest.columns:
        found.append(f"{path.name}: its columns are not the manifest's")
    if walker is not None:
        report = walker.broken
        if report is not None:
            found.append(f"{path.name}: the audit chain breaks at row {report.broken_at}")
        elif (walker.rows, walker.prev.hex()) != (chain["last_seq"], chain["last_hash"]):
            found.append(f"{path.name}: the audit chain does not end where the manifest says")
    return found


def _audit_row(values: dict[str, str]) -> dict[str, object]:
    """An audit row as read from the CSV, typed as the chain hashes it."""

    def number(text: str) -> int | None:
        return int(text) if text else None

    return {
        "seq": int(values["seq"]),
        "at": datetime.fromisoformat(values["at"]),
        "event": values["event"],
        "component": values["component"],
        "actor_user_id": number(values["actor_user_id"]),
        "subject_user_id": number(values["subject_user_id"]),
        "source_address": values["source_address"],
        "correlation_id": values["correlation_id"],
        "details": json.loads(values["details"]),
        "prev_hash": bytes.fromhex(values["prev_hash"].removeprefix("\\x")),
        "hash": bytes.fromhex(values["hash"].removeprefix("\\x")),
    }


async def archive_month(
    conn: asyncpg.Connection,
    data_class: DataClass,
    month: Month,
    name: str,
    directory: Path,
    copies: Sequence[Path],
    now: datetime,
) -> str:
    """Archives one month's partition; returns what happened, in words.

    The month is detached first, in a short transaction of its own: the parent's lock is then
    taken before the partition's, in the order the services' writers take them, and held only
    for the detach. Then, from the detached table, the file is written, checked and copied, and
    the month is recorded and dropped in one transaction. A failure attaches the month again
    (a run that dies in between leaves it detached, and the next run attaches it again)."""
    table = data_class.table
    earlier = await _recorded(conn, name)
    await detach(conn, table, name)
    try:
        return await _archive_detached(
            conn, data_class, month, name, directory, copies, now, earlier
        )
    except BaseException:
        # (if this fails too, the month stays detached, and the next run attaches it again)
        with contextlib.suppress(Exception):
            await attach(conn, table, month, name)
        raise


async def _locked(conn: asyncpg.Connection, statement: str, what: str) -> None:
    """A statement that needs the parent table to itself, waiting for it a bounded time (the
    services' transactions are short), a few times."""
    for attempt in range(LOCK_TRIES):
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'")
                await conn.execute(statement)
            return
        except asyncpg.LockNotAvailableError:
            await asyncio.sleep(1 + attempt)
    raise ArchiveError(f"{what}: the table stayed busy for {LOCK_TRIES} tries; run again later")


async def detach(conn: asyncpg.Connection, table: PartitionedTable, name: str) -> None:
    parent, relation = quoted(table.schema, table.name), quoted(table.schema, name)
    await _locked(conn, f"ALTER TABLE {parent} DETACH PARTITION {relation}", name)


async def attach(
    conn: asyncpg.Connection, table: PartitionedTable, month: Month, name: str
) -> None:
    """A month's table made a partition again, with its indexes and (append-only) triggers."""
    parent, relation = quoted(table.schema, table.name), quoted(table.schema, name)
    await _locked(
        conn, f"ALTER TABLE {parent} ATTACH PARTITION {relation} FOR VALUES {bounds(month)}", name
    )


async def reattach_detached(conn: asyncpg.Connection, table: PartitionedTable) -> list[str]:
    """Months a run detached and then did not finish (it was killed): attached again."""
    rows = await conn.fetch(
        """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT c.relispartition
          AND c.relname ~ $2
        """,
        table.schema,
        f"^{table.name}{MONTH_SUFFIX_SQL}$",
    )
    again = []
    for row in rows:
        month = table.month_of(row["relname"])
        if month is not None:
            await attach(conn, table, month, row["relname"])
            again.append(f"{row['relname']}: attached again (a run stopped after detaching it)")
    return again


async def _archive_detached(
    conn: asyncpg.Connection,
    data_class: DataClass,
    month: Month,
    name: str,
    directory: Path,
    copies: Sequence[Path],
    now: datetime,
    earlier: asyncpg.Record | None,
) -> str:
    table = data_class.table
    relation = quoted(table.schema, name)
    target = files.data_path(directory, data_class.name, name)
    manifest_file = files.manifest_path(directory, data_class.name, name)
    async with conn.transaction():
        reason = await _still_open(conn, table, relation)
        if reason:
            raise ArchiveError(f"{name}: {reason}")
        columns = _archived_columns(directory, data_class.name, name) if earlier else None
        try:
            sha256, content_sha256 = await _write(conn, table, relation, target, columns)
        except FileExistsError:
            if earlier is None:
                raise
            how = (
                "was restored and has changed since"
                if earlier["restored_at"] is not None
                else "received rows after it was archived (a backdated import?)"
            )
            raise ArchiveError(
                f"{name} {how}: its rows differ from the archive {earlier['file']}, which is "
                "kept as it is; the rows stay in the database until an operator settles them"
            ) from None
        columns = columns or await table_columns(conn, f"{table.schema}.{name}")
        rows = await conn.fetchval(f"SELECT count(*) FROM {relation}")  # noqa: S608
        chain = await _chain_ends(conn, relation) if table.append_only else {}
        manifest = files.Manifest(
            data_class=data_class.name,
            table=table.qualified,
            partition=name,
            month=str(month),
            rows=rows,
            columns=columns,
            file=target.name,
            sha256=sha256,
            content_sha256=content_sha256,
            archived_at=now.isoformat(),
            retain_until=data_class.retain_until(month).isoformat(),
            chain=chain,
        )
        problems = _check_file(target, manifest)
        if problems:
            raise ArchiveError(f"{name}: the file read back wrong: {'; '.join(problems)}")
        # A manifest already there is replaced only when it is this database's (a restored
        # month archived again): another's is left as it was.
        files.write_manifest(manifest_file, manifest, replace=earlier is not None)
        copied = [
            str(files.copy_verified(target, manifest_file, place, sha256)) for place in copies
        ]
        await conn.execute(
            """
            INSERT INTO archive.partitions (partition, data_class, parent, month, rows, file,
                sha256, content_sha256, archived_at, retain_until, copies, first_seq, last_seq,
                first_prev_hash, last_hash)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            ON CONFLICT (partition) DO UPDATE SET rows = EXCLUDED.rows, file = EXCLUDED.file,
                sha256 = EXCLUDED.sha256, content_sha256 = EXCLUDED.content_sha256,
                archived_at = EXCLUDED.archived_at, retain_until = EXCLUDED.retain_until,
                copies = EXCLUDED.copies, first_seq = EXCLUDED.first_seq,
                last_seq = EXCLUDED.last_seq, first_prev_hash = EXCLUDED.first_prev_hash,
                last_hash = EXCLUDED.last_hash, restored_at = NULL
            """,
            name,
            data_class.name,
            table.qualified,
            str(month),
            rows,
            str(target),
            sha256,
            content_sha256,
            now,
            data_class.retain_until(month),
            copied,
            chain.get("first_seq"),
            chain.get("last_seq"),
            bytes.fromhex(str(chain["first_prev_hash"])) if chain else None,
            bytes.fromhex(str(chain["last_hash"])) if chain else None,
        )
        await conn.execute(f"DROP TABLE {relation}")
    where = f" (copied to {', '.join(copied)})" if copied else ""
    return f"{name}: {rows} row(s) archived to {target}{where}"


class ArchiveError(RuntimeError):
    pass


# What reading a damaged or foreign file can raise (besides OSError).
UNREADABLE = (OSError, ValueError, KeyError, TypeError, EOFError, csv.Error, zlib.error)

# pg_advisory_lock key of the archive job ("gekko-archive" as a number): one job at a time.
_JOB_LOCK = 0x67656B6B6F617263


class JobRunning(RuntimeError):
    pass


@contextlib.asynccontextmanager
async def one_job(conn: asyncpg.Connection):
    """The archive job's lock for the session: a second job (the playbook and a hand-run
    `gekko archive` at once) is refused rather than racing the first over the same month."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _JOB_LOCK):
        raise JobRunning("another archive job is running on this database; try again later")
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _JOB_LOCK)


async def _archived_months(conn: asyncpg.Connection, table: PartitionedTable) -> set[Month]:
    rows = await conn.fetch(
        "SELECT month FROM archive.partitions WHERE parent = $1 AND restored_at IS NULL",
        table.qualified,
    )
    return {Month.parse(row["month"]) for row in rows}


async def make_months(conn: asyncpg.Connection, now: datetime) -> list[str]:
    """The partitions from this month to a year ahead, for every kept table (each migration and
    each archive run): an archived month is not made again."""
    made = []
    for table in TABLES:
        made += await ensure_partitions(conn, table, now, skip=await _archived_months(conn, table))
    return made


async def run(
    conn: asyncpg.Connection,
    data_classes: Sequence[DataClass],
    directory: Path,
    copies: Sequence[Path] = (),
    now: datetime | None = None,
) -> Outcome:
    """Makes the months ahead, then archives every cold month that can be."""
    now = now or datetime.now(UTC)
    await _session(conn)
    outcome = Outcome()
    for data_class in data_classes:
        table = data_class.table
        outcome.kept += await reattach_detached(conn, table)
        try:
            outcome.created += await ensure_partitions(
                conn, table, now, skip=await _archived_months(conn, table)
            )
        except asyncpg.LockNotAvailableError:
            outcome.problems.append(
                f"{table.qualified}: the months ahead were not made (the table stayed busy)"
            )
        cold_before = data_class.cold_before(now)
        for month, name in sorted((await partitions(conn, table)).items()):
            if month >= cold_before:
                continue
            record = await _recorded(conn, name)
            if record is not None and record["restored_at"] is not None:
                until = record["restored_at"] + RESTORED_KEPT
                if now < until:
                    outcome.kept.append(f"{name}: restored, kept until {until:%Y-%m-%d}")
                    continue
            reason = await _why_not_yet(conn, table, name, month)
            if reason:
                outcome.kept.append(f"{name}: {reason}")
                continue
            try:
                outcome.archived.append(
                    await archive_month(conn, data_class, month, name, directory, copies, now)
                )
            except (ArchiveError, asyncpg.PostgresError, *UNREADABLE) as exc:
                outcome.problems.append(f"{name}: not archived: {exc}")
    return outcome


async def verify(
    conn: asyncpg.Connection, directory: Path, anchors: Sequence[Anchor] = ()
) -> tuple[list[str], list[str]]:
    """Checks every archived month's file (and its copies) against its manifest and the
    database's record, and the audit anchors that fall in archived months. Returns (what was
    checked, problems)."""
    checked, problems = [], []
    anchored = {anchor.seq: anchor for anchor in anchors}
    records = await conn.fetch("SELECT * FROM archive.partitions ORDER BY parent, month")
    for record in records:
        name = record["partition"]
        if record["pruned_at"] is not None:
            checked.append(f"{name}: pruned on {record['pruned_at']:%Y-%m-%d} (retention ended)")
            continue
        try:
            found = _check_recorded(directory, record, anchored)
        except UNREADABLE as exc:
            found = [f"unreadable: {exc}"]
        problems += [f"{name}: {problem}" for problem in found]
        if not found:
            copies = f", {len(record['copies'])} copies match" if record["copies"] else ""
            checked.append(f"{name}: {record['rows']} row(s), checksums match{copies}")
    known = {files.data_path(directory, r["data_class"], r["partition"]) for r in records}
    problems += [
        f"{path}: an archive file the database has no record of"
        for path in files.unrecorded(directory, known)
    ]
    return checked, problems


def _check_recorded(directory: Path, record: asyncpg.Record, anchored: dict) -> list[str]:
    """What is wrong with one recorded month's file, manifest and copies."""
    name, data_class = record["partition"], record["data_class"]
    manifest_file = files.manifest_path(directory, data_class, name)
    if not manifest_file.exists():
        return [f"its manifest {manifest_file} is missing"]
    manifest = files.Manifest.load(manifest_file)
    found = []
    if manifest.sha256 != record["sha256"] or manifest.rows != record["rows"]:
        found.append("the manifest does not match the database's record")
    if manifest.chain and manifest.chain != _recorded_chain(record):
        # `gekko audit verify` steps over the month by the record's ends: they must be the file's.
        found.append("the audit chain's ends in the manifest are not the database's record")
    path = files.data_path(directory, data_class, name)
    found += _check_file(path, manifest)
    for copy in map(Path, record["copies"]):
        if not copy.exists():
            found.append(f"the copy {copy} is missing")
        elif files.file_sha256(copy) != record["sha256"]:
            found.append(f"the copy {copy} does not match its checksum")
    if manifest.chain and anchored and path.exists():
        found += _anchors_in(path, manifest, anchored)
    return found


def _recorded_chain(record: asyncpg.Record) -> dict[str, object]:
    return {
        "first_seq": record["first_seq"],
        "first_prev_hash": bytes(record["first_prev_hash"] or b"").hex(),
        "last_seq": record["last_seq"],
        "last_hash": bytes(record["last_hash"] or b"").hex(),
    }


def _anchors_in(path: Path, manifest: files.Manifest, anchored: dict) -> list[str]:
    first, last = int(manifest.chain["first_seq"]), int(manifest.chain["last_seq"])
    wanted = {seq: anchor for seq, anchor in anchored.items() if first <= seq <= last}
    if not wanted:
        return []
    found: dict[int, bytes] = {}

    def on_row(values: dict[str, str]) -> None:
        seq = int(values["seq"])
        if seq in wanted:
            found[seq] = bytes.fromhex(values["hash"].removeprefix("\\x"))

    files.read_back(path, on_row)
    return [
        f"row {seq} no longer has its anchored hash: the archived chain was rewritten"
        for seq, anchor in sorted(wanted.items())
        if found.get(seq) != anchor.hash
    ]


async def restore(
    conn: asyncpg.Connection, data_class: DataClass, month: Month, directory: Path
) -> str:
    """Attaches an archived month again, from its file (checked first)."""
    table = data_class.table
    name = table.partition(month)
    record = await _recorded(conn, name)
    if record is None:
        raise ArchiveError(f"{data_class.name} {month} was never archived")
    if record["restored_at"] is not None:
        raise ArchiveError(f"{name} is already restored (on {record['restored_at']:%Y-%m-%d})")
    if record["pruned_at"] is not None:
        raise ArchiveError(
            f"{name} was deleted on {record['pruned_at']:%Y-%m-%d}: its retention ended"
        )
    path = files.data_path(directory, data_class.name, name)
    manifest = files.Manifest.load(files.manifest_path(directory, data_class.name, name))
    problems = _check_file(path, manifest)
    if problems or manifest.sha256 != record["sha256"]:
        raise ArchiveError(f"{name}: the archive does not check out: {'; '.join(problems)}")
    relation = quoted(table.schema, name)
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{table.schema}.{name}"):
        raise ArchiveError(
            f"{name} is in the database already (rows arrived for the month after it was "
            "archived): the archive is left as it is"
        )
    # By name: a column added since the month was archived takes its default.
    gone = sorted(set(manifest.columns) - set(await table_columns(conn, table.qualified)))
    if gone:
        raise ArchiveError(f"{name}: the table no longer has the column(s) {', '.join(gone)}")
    await _session(conn)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'")
        await conn.execute(
            f"CREATE TABLE {relation} (LIKE {quoted(table.schema, table.name)} "
            "INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        await conn.copy_to_table(
            name,
            schema_name=table.schema,
            columns=manifest.columns,
            source=_chunks(path),
            format="csv",
            header=True,
        )
        rows = await conn.fetchval(f"SELECT count(*) FROM {relation}")  # noqa: S608
        if rows != manifest.rows:
            raise ArchiveError(f"{name}: {rows} row(s) loaded, the manifest says {manifest.rows}")
        # Attached like a new month: the same bounds, indexes and (append-only) triggers.
        await conn.execute(
            f"ALTER TABLE {quoted(table.schema, table.name)} ATTACH PARTITION {relation} "
            f"FOR VALUES {bounds(month)}"
        )
        for statement in protect_statements(table, name):
            await conn.execute(statement)
        await conn.execute(
            "UPDATE archive.partitions SET restored_at = now() WHERE partition = $1", name
        )
    return (
        f"{name}: {rows} row(s) restored from {path}, in the database for {RESTORED_KEPT.days} days"
    )


async def _chunks(path: Path):
    """The file's CSV, for asyncpg's copy_to_table (an async iterable of bytes)."""
    for chunk in files.content_chunks(path):
        yield chunk


async def prune(
    conn: asyncpg.Connection, directory: Path, now: datetime | None = None
) -> list[str]:
    """Deletes the archive files (and their copies) whose retention has ended; nothing else."""
    now = now or datetime.now(UTC)
    done = []
    for record in await conn.fetch(
        "SELECT * FROM archive.partitions WHERE retain_until < $1 AND pruned_at IS NULL "
        "AND restored_at IS NULL ORDER BY partition",
        now,
    ):
        name, data_class = record["partition"], record["data_class"]
        paths = [
            files.data_path(directory, data_class, name),
            files.manifest_path(directory, data_class, name),
        ]
        for copy in record["copies"]:
            paths += [Path(copy), Path(copy).with_name(f"{name}.manifest.json")]
        for path in paths:
            path.unlink(missing_ok=True)
        await conn.execute(
            "UPDATE archive.partitions SET pruned_at = $2 WHERE partition = $1", name, now
        )
        done.append(f"{name}: deleted, its retention ended {record['retain_until']:%Y-%m-%d}")
    return done
