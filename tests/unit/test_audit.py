"""The audit log's hash chain: intact rows verify; a changed, removed or reordered row is found
at the row where the chain breaks. Recording never blocks: a full queue drops and counts."""

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta

import asyncpg
from prometheus_client import CollectorRegistry

from gekko.correlation import correlation_id_var
from gekko.security import audit
from gekko.security.audit import GENESIS, AuditEntry, AuditLog, chain_hash, verify_chain

START = datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=UTC)


def rows(n: int) -> list[dict]:
    """n rows as the database returns them (details as JSON text, as asyncpg gives jsonb)."""
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        entry = AuditEntry(
            event="login-failure" if seq % 2 else "login-success",
            component="users",
            at=START + timedelta(seconds=seq),
            actor_user_id=seq,
            source_address="10.0.0.1",
            correlation_id=f"c-{seq}",
            details={"reason": "x", "n": str(seq)},
        )
        digest = chain_hash(prev, entry, seq)
        out.append(
            {
                "seq": seq,
                "at": entry.at,
                "event": entry.event,
                "component": entry.component,
                "actor_user_id": entry.actor_user_id,
                "subject_user_id": None,
                "source_address": entry.source_address,
                "correlation_id": entry.correlation_id,
                "details": json.dumps(dict(entry.details)),
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    return out


def test_an_intact_chain_verifies_with_its_head():
    chain = rows(5)
    report = verify_chain(chain)
    assert (report.rows, report.broken_at, report.head) == (5, None, chain[-1]["hash"])
    assert verify_chain([]).rows == 0


def test_a_changed_row_breaks_the_chain_there():
    chain = rows(5)
    chain[2]["event"] = "login-success"  # row 3 was a failure
    report = verify_chain(chain)
    assert (report.broken_at, report.rows) == (3, 2)
    assert "does not match its hash" in report.reason


def test_a_changed_detail_or_time_is_found_too():
    chain = rows(3)
    chain[1]["details"] = json.dumps({"reason": "y", "n": "2"})
    assert verify_chain(chain).broken_at == 2
    chain = rows(3)
    chain[0]["at"] = START
    assert verify_chain(chain).broken_at == 1


def test_a_removed_or_reordered_row_is_found():
    chain = rows(5)
    assert verify_chain(chain[:2] + chain[3:]).broken_at == 4
    swapped = chain[:1] + [chain[2], chain[1]] + chain[3:]
    assert verify_chain(swapped).broken_at == 3
    # Rehashing a changed row alone does not help: the next row still points at the old hash.
    chain = rows(5)
    entry = audit.entry_from_row({**chain[1], "event": "forged"})
    chain[1]["event"] = "forged"
    chain[1]["hash"] = chain_hash(chain[1]["prev_hash"], entry, 2)
    report = verify_chain(chain)
    assert report.broken_at == 3 and "previous hash" in report.reason


def test_recording_takes_the_correlation_id_and_never_blocks(monkeypatch):
    monkeypatch.setattr(audit, "_QUEUE_SIZE", 2)
    registry = CollectorRegistry()

    async def scenario() -> list[AuditEntry]:
        log = AuditLog(pool=None, component="users", registry=registry)  # type: ignore[arg-type]
        token = correlation_id_var.set("corr-1")
        try:
            for n in range(3):
                log.record("login-failure", actor_user_id=7, attempt=n, skipped=None)
        finally:
            correlation_id_var.reset(token)
        return [log._queue.get_nowait() for _ in range(log._queue.qsize())]

    queued = asyncio.run(scenario())
    assert [e.details for e in queued] == [{"attempt": "0"}, {"attempt": "1"}]
    assert {e.correlation_id for e in queued} == {"corr-1"}
    assert registry.get_sample_value("gekko_audit_dropped_total") == 1


def test_what_callers_send_is_recorded_as_text_postgresql_can_store():
    """A refused call's path reaches the row: a NUL in it (jsonb and text hold none) used to
    make the batch fail again and again, and the component's audit log stopped there."""
    assert audit.storable("/api/v1/trading/orders/\x00x") == "/api/v1/trading/orders/\ufffdx"
    assert audit.storable("a\ud800b") == "a\ufffdb"
    assert audit.storable("plain ✓ 😀") == "plain ✓ 😀"

    async def scenario() -> AuditEntry:
        log = AuditLog(pool=None, component="trading", registry=CollectorRegistry())  # type: ignore[arg-type]
        log.record("access-denied\x00", source_address="\x00", path="/orders/\x00", status=401)
        return log._queue.get_nowait()

    entry = asyncio.run(scenario())
    assert entry.event == "access-denied\ufffd" and entry.source_address == "\ufffd"
    assert entry.details == {"path": "/orders/\ufffd", "status": "401"}
    entry.canonical(1).decode("utf-8")  # and it hashes


def test_an_entry_the_database_refuses_is_dropped_and_the_rest_written(monkeypatch):
    written: list[list[str]] = []

    async def append(conn, entries: list[AuditEntry]) -> None:
        if any(e.event == "refused" for e in entries):
            raise asyncpg.DataError("unsupported Unicode escape sequence")
        written.append([e.event for e in entries])

    class Pool:
        @contextlib.asynccontextmanager
        async def acquire(self):
            yield None

    monkeypatch.setattr(audit, "append", append)
    registry = CollectorRegistry()

    async def scenario() -> None:
        log = AuditLog(pool=Pool(), component="users", registry=registry)  # type: ignore[arg-type]
        for event in ("first", "refused", "last"):
            log.record(event)
        log.start()
        await asyncio.wait_for(log._queue.join(), timeout=5)
        log.record("later")
        await asyncio.wait_for(log._queue.join(), timeout=5)
        await log.stop()

    asyncio.run(scenario())
    assert written == [["first"], ["last"], ["later"]]
    assert registry.get_sample_value("gekko_audit_dropped_total") == 1
