"""The audit log: every security event as a row of the append-only table audit.events.

Rows are hash-chained: each row's hash is SHA-256 over the previous row's hash and the row's own
canonical JSON, so changing, removing or reordering a row breaks the chain from that row on
(`gekko audit verify` finds where). The database refuses UPDATE, DELETE and TRUNCATE on the
table (revoked privileges and a trigger), and rows carry the request's correlation id, which
ties them to its log lines and trace.

Recording never waits for the database: events go to a bounded in-memory queue that a background
task writes in batches. The chain is kept in order across instances by a transaction-scoped
advisory lock around each batch. A full queue drops events rather than slowing requests; drops
are counted in `gekko_audit_dropped_total` and logged.

What callers send ends up in rows (a refused call's path, for one), so text is made storable
when it is recorded: PostgreSQL's text and jsonb hold no NUL and only valid UTF-8. A batch the
database still refuses as data is written one entry at a time, and an entry it refuses alone is
dropped (counted and logged): retrying it could never succeed, and it would hold back every
event after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter

from gekko.correlation import correlation_id_var

log = logging.getLogger("gekko.audit")

GENESIS = bytes(32)
# pg_advisory_xact_lock key of the chain's writers ("gekko-audit" as a number).
_CHAIN_LOCK = 0x67656B6B6F617564
_QUEUE_SIZE = 10_000
_BATCH = 200


@dataclass(frozen=True)
class AuditEntry:
    event: str
    component: str
    at: datetime
    actor_user_id: int | None = None
    subject_user_id: int | None = None
    source_address: str = ""
    correlation_id: str = ""
    details: Mapping[str, str] = field(default_factory=dict)

    def canonical(self, seq: int) -> bytes:
        """What the hash covers: every field, in a form that reads back the same from the
        database (details as strings, the time in UTC with microseconds)."""
        document = {
            "seq": seq,
            "at": self.at.astimezone(UTC).isoformat(timespec="microseconds"),
            "event": self.event,
            "component": self.component,
            "actor_user_id": self.actor_user_id,
            "subject_user_id": self.subject_user_id,
            "source_address": self.source_address,
            "correlation_id": self.correlation_id,
            "details": dict(self.details),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def chain_hash(prev_hash: bytes, entry: AuditEntry, seq: int) -> bytes:
    return hashlib.sha256(prev_hash + entry.canonical(seq)).digest()


def entry_from_row(row: Mapping[str, Any]) -> AuditEntry:
    details = row["details"]
    if isinstance(details, str):
        details = json.loads(details)
    return AuditEntry(
        event=row["event"],
        component=row["component"],
        at=row["at"],
        actor_user_id=row["actor_user_id"],
        subject_user_id=row["subject_user_id"],
        source_address=row["source_address"],
        correlation_id=row["correlation_id"],
        details=details,
    )


@dataclass(frozen=True)
class ChainReport:
    rows: int
    head: bytes
    broken_at: int | None = None  # the first seq whose row does not fit the chain
    reason: str = ""
    archived: int = 0  # rows stepped over because their month is archived (gekko.archive)


@dataclass(frozen=True)
class ArchivedRange:
    """The rows of an archived month: no longer in the database, but their ends are recorded
    (archive.partitions), and `gekko archive verify` checks the file's rows between them."""

    first_seq: int
    last_seq: int
    first_prev_hash: bytes
    last_hash: bytes

    def holds(self, seq: int) -> bool:
        return self.first_seq <= seq <= self.last_seq


class ChainWalker:
    """Checks rows in seq order from the first: each must follow the one before. Fed a page at
    a time, so a log of any length is verified in constant memory. Rows of archived months are
    stepped over by their recorded ends, which must fit the chain like rows do."""

    def __init__(self, archived: Iterable[ArchivedRange] = ()) -> None:
        self.prev, self.rows = GENESIS, 0
        self.broken: ChainReport | None = None
        self.archived = {block.first_seq: block for block in archived}
        self.stepped = 0

    def _break(self, seq: int, reason: str) -> bool:
        self.broken = ChainReport(self.rows, self.prev, seq, reason, self.stepped)
        return False

    def _step_over_archives(self, before: int) -> None:
        """Steps over the archived months that start where the chain is, up to row `before`."""
        while self.rows + 1 < before and (block := self.archived.get(self.rows + 1)):
            if block.first_prev_hash != self.prev:
                return
            self.prev, self.rows = block.last_hash, block.last_seq
            self.stepped += block.last_seq - block.first_seq + 1

    def add(self, row: Mapping[str, Any]) -> bool:
        """False once the chain is broken (at this row or before)."""
        if self.broken is not None:
            return False
        seq = row["seq"]
        self._step_over_archives(seq)
        expected = self.rows + 1
        reason = ""
        if seq != expected and expected in self.archived:
            block = self.archived[expected]
            span = f"{block.first_seq}-{block.last_seq}"
            reason = f"the archived rows {span} do not follow row {self.rows}"
        elif seq != expected:
            reason = f"expected row {expected}, found {seq}"
        elif bytes(row["prev_hash"]) != self.prev:
            reason = "its previous hash is not the row before's hash"
        elif chain_hash(self.prev, entry_from_row(row), seq) != bytes(row["hash"]):
            reason = "its content does not match its hash"
        if reason:
            return self._break(seq, reason)
        self.prev, self.rows = bytes(row["hash"]), seq
        return True

    def report(self) -> ChainReport:
        if self.broken is None:
            # Every archived month after the last row in the database (all of them, when no
            # month is hot) must still follow on.
            last = max((block.last_seq for block in self.archived.values()), default=0)
            self._step_over_archives(last + 1)
            if self.rows < last:
                self._break(self.rows + 1, "an archived month does not follow the row before")
        return self.broken or ChainReport(self.rows, self.prev, archived=self.stepped)


def verify_chain(rows: Iterable[Mapping[str, Any]]) -> ChainReport:
    walker = ChainWalker()
    for row in rows:
        if not walker.add(row):
            break
    return walker.report()


async def archived_ranges(conn: asyncpg.Connection) -> list[ArchivedRange]:
    """The audit log's months archived and not restored (gekko.archive); none in a database from
    before the migration that made their record (one restored to an earlier time, say)."""
    if not await conn.fetchval("SELECT to_regclass('archive.partitions') IS NOT NULL"):
        return []
    rows = await conn.fetch(
        "SELECT first_seq, last_seq, first_prev_hash, last_hash FROM archive.partitions "
        "WHERE data_class = 'audit' AND restored_at IS NULL AND rows > 0"
    )
    return [
        ArchivedRange(
            row["first_seq"], row["last_seq"], bytes(row["first_prev_hash"]),
            bytes(row["last_hash"]),
        )
        for row in rows
    ]  # fmt: skip


async def verify_stored_chain(conn: asyncpg.Connection, page: int = 5000) -> ChainReport:
    walker, after = ChainWalker(await archived_ranges(conn)), 0
    while True:
        rows = await conn.fetch(
            "SELECT * FROM audit.events WHERE seq > $1 ORDER BY seq LIMIT $2", after, page
        )
        for row in rows:
            if not walker.add(row):
                return walker.report()
        if len(rows) < page:
            return walker.report()
        after = rows[-1]["seq"]


async def _chain_head(conn: asyncpg.Connection) -> tuple[int, bytes, datetime | None]:
    """The chain's last row: number, hash and time. The newest archived month's last row when it
    is later than every row in the database (no row in the hot months, and an older month
    restored), its time unknown."""
    last = await conn.fetchrow("SELECT seq, hash, at FROM audit.events ORDER BY seq DESC LIMIT 1")
    head = (last["seq"], bytes(last["hash"]), last["at"]) if last else (0, GENESIS, None)
    # (before the migration that made archive.partitions, nothing can have been archived)
    if await conn.fetchval("SELECT to_regclass('archive.partitions') IS NOT NULL"):
        archived = await conn.fetchrow(
            "SELECT last_seq, last_hash FROM archive.partitions WHERE data_class = 'audit' "
            "AND restored_at IS NULL AND rows > 0 ORDER BY last_seq DESC LIMIT 1"
        )
        if archived is not None and archived["last_seq"] > head[0]:
            return archived["last_seq"], bytes(archived["last_hash"]), None
    return head


async def append(conn: asyncpg.Connection, entries: list[AuditEntry]) -> tuple[int, bytes]:
    """Appends entries to the chain in one transaction (the lock keeps writers in turn); returns
    the chain's head after them: the last row's number and hash."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _CHAIN_LOCK)
        seq, prev, latest = await _chain_head(conn)
        # A writer whose clock runs ahead gets the database's time: one fast clock must not
        # carry every later row's time forward with it.
        database_now = await conn.fetchval("SELECT clock_timestamp()")
        rows = []
        for entry in entries:
            seq += 1
            # Times never go back along the chain, so a month's rows are one run of it, which
            # archiving takes out whole (a clock stepping back, or a batch recorded earlier but
            # written later, gets the row before's time).
            if entry.at > database_now:
                entry = replace(entry, at=database_now)
            if latest is not None and entry.at < latest:
                entry = replace(entry, at=latest)
            latest = entry.at
            digest = chain_hash(prev, entry, seq)
            rows.append(
                (
                    seq,
                    entry.at,
                    entry.event,
                    entry.component,
                    entry.actor_user_id,
                    entry.subject_user_id,
                    entry.source_address,
                    entry.correlation_id,
                    json.dumps(dict(entry.details), sort_keys=True),
                    prev,
                    digest,
                )
            )
            prev = digest
        await conn.executemany(
            """
            INSERT INTO audit.events (seq, at, event, component, actor_user_id, subject_user_id,
                source_address, correlation_id, details, prev_hash, hash)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11)
            """,
            rows,
        )
    return seq, prev


def storable(text: str) -> str:
    """`text` as a text or jsonb column can hold it: NUL and unpaired surrogates (which are not
    UTF-8) become U+FFFD, the replacement character."""
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class AuditLog:
    """A component's writer: `record` queues, a background task appends in batches."""

    def __init__(self, pool: asyncpg.Pool, component: str, registry: CollectorRegistry) -> None:
        self.pool = pool
        self.component = component
        self._queue: asyncio.Queue[AuditEntry] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None
        self._dropped = Counter(
            "gekko_audit_dropped_total",
            "Audit events dropped: the queue to the database was full, or the database refused "
            "the event.",
            registry=registry,
        )

    def record(
        self,
        event: str,
        *,
        actor_user_id: int | None = None,
        subject_user_id: int | None = None,
        source_address: str = "",
        **details: object,
    ) -> None:
        entry = AuditEntry(
            event=storable(event),
            component=self.component,
            at=datetime.now(UTC),
            actor_user_id=actor_user_id,
            subject_user_id=subject_user_id,
            source_address=storable(source_address),
            correlation_id=storable(correlation_id_var.get() or ""),
            details={k: storable(str(v)) for k, v in details.items() if v is not None},
        )
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self._dropped.inc()
            log.error("audit queue full: dropped %s", event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        """Writes what is queued (briefly), then stops."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout=5)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)
            for _ in batch:
                self._queue.task_done()

    async def _write(self, batch: list[AuditEntry]) -> None:
        delay = 0.5
        while True:
            try:
                async with self.pool.acquire() as conn:
                    await append(conn, batch)
                return
            except asyncpg.DataError as exc:
                # Refused for what it holds: trying again cannot help.
                if len(batch) > 1:
                    for entry in batch:
                        await self._write([entry])
                    return
                self._dropped.inc()
                entry = batch[0]
                log.error(
                    "audit event %s (correlation id %s) dropped: the database refuses it (%s)",
                    entry.event,
                    entry.correlation_id,
                    exc,
                )
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # Kept and retried: the database coming back writes them in order.
                log.warning("audit events not written yet (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
