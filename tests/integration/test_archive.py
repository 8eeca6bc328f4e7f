"""Issue 14, item 4: retention for 7+ years (BC-003), against a real PostgreSQL.

A database of its own gets 9 months of history (orders and a hash-chained audit log, straddling
the date 7 years ago), then the migration that partitions the tables by month. `gekko archive
run` writes each month past its hot window to a compressed, checksummed file with a manifest,
copies it to a second place, and detaches it; `gekko archive verify` checks every file and copy
and finds a change; `gekko audit verify` still walks the whole chain; one month is restored and
reads as before; `gekko archive prune` deletes only what is past its retention.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.resources import as_file, files
from pathlib import Path

import asyncpg
import pytest
from alembic import command

from gekko.archive.partitions import Month
from gekko.archive.retention import DEFAULTS
from gekko.migrate import alembic_config
from gekko.security.audit import AuditEntry, append

from .conftest import Postgres, gekko_cmd

pytestmark = pytest.mark.integration

DATABASE = "gekko_archive"
NOW = datetime.now(UTC)
# Nine months of history whose middle is 7 years ago: some of it past its retention, some not.
FIRST = Month.of(NOW).plus(-7 * 12 - 4)
HISTORY = FIRST.until(FIRST.plus(8))
OPEN_MONTH = HISTORY[3]  # holds an open (resting) order: it must stay in the database
RESTORED = HISTORY[5]
NEWEST = f"events_{HISTORY[-1].suffix}"  # the audit month with the chain's newest row
ARCHIVED = 3 * (len(HISTORY) - 1)  # audit rows archived: three a month, all but NEWEST's
RETENTION = json.dumps({"orders": {"hot_months": 3}, "audit": {"hot_months": 2}})


def archive(pg: Postgres, directory: Path, *args: str) -> subprocess.CompletedProcess:
    """`gekko archive --dir DIRECTORY ...` on the test's database."""
    return gekko(pg, "archive", "--dir", str(directory), *args)


def _run(pg: Postgres, sql: str, *args):
    async def go():
        conn = await asyncpg.connect(pg.owner_url(DATABASE))
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def gekko(pg: Postgres, *args: str, database_url: str | None = None) -> subprocess.CompletedProcess:
    # The test's environment without the platform's settings (coverage follows the child).
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEKKO_")}
    env |= {
        "GEKKO_MIGRATE_DATABASE_URL": pg.owner_url(DATABASE),
        "GEKKO_DATABASE_URL": database_url or pg.services_url(DATABASE),
        "GEKKO_RETENTION": RETENTION,
    }
    return subprocess.run(
        gekko_cmd(*args), env=env, capture_output=True, text=True, timeout=300, check=False
    )


async def _history(pg: Postgres) -> dict:
    """Orders and audit rows, a few each month of HISTORY, written before the partitioning."""
    conn = await asyncpg.connect(pg.owner_url(DATABASE))
    try:
        orders = []
        for index, month in enumerate(HISTORY):
            for day in (3, 17):
                at = month.start + timedelta(days=day, hours=index)
                status = "open" if (month == OPEN_MONTH and day == 17) else "filled"
                orders.append(
                    await conn.fetchval(
                        """
                        INSERT INTO trading.orders (user_id, symbol, side, type, quantity,
                            limit_price, price, notional, status, idempotency_key, created_at)
                        VALUES (7, 'BTC-USD', 'buy', $1, 1, $2, $3, $3, $4, $5, $6)
                        RETURNING id
                        """,
                        "limit" if status == "open" else "market",
                        Decimal(90) if status == "open" else None,
                        None if status == "open" else Decimal(100 + index),
                        status,
                        f"key-{month}-{day}",
                        at,
                    )
                )
            entries = [
                AuditEntry("login-success", "users", month.start + timedelta(days=d), 7)
                for d in (1, 9, 20)
            ]
            await append(conn, entries)
        return {"orders": orders}
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def history(postgres: Postgres, migrate_runs, tmp_path_factory) -> dict:
    # (after the session's own first migrate: that one makes the services' role, and says so)
    async def create() -> None:
        conn = await asyncpg.connect(postgres.url)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            await conn.execute(f"CREATE DATABASE {DATABASE} OWNER {postgres.user}")
        finally:
            await conn.close()

    asyncio.run(create())
    with as_file(files("gekko") / "migrations") as location:
        command.upgrade(
            alembic_config(postgres.owner_url(DATABASE), str(location)), "0008_venue_keys"
        )
    written = asyncio.run(_history(postgres))
    migrated = gekko(postgres, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    root = tmp_path_factory.mktemp("archive")
    return {**written, "dir": root / "archive", "offhost": root / "offhost", "migrate": migrated}


def test_the_migration_moves_every_row_into_its_months_partition(postgres, history):
    assert "applied 5 revision(s), now at 0013_venue_fill_time" in history["migrate"].stdout
    by_partition = _run(
        postgres,
        "SELECT tableoid::regclass::text AS p, count(*) AS n, min(id) AS first FROM trading.orders"
        " GROUP BY 1 ORDER BY 1",
    )
    assert {row["p"] for row in by_partition} == {f"trading.orders_{m.suffix}" for m in HISTORY}
    assert sum(row["n"] for row in by_partition) == len(history["orders"])
    # Ids kept; the next order continues after them; an Idempotency-Key is still found.
    ids = [row["id"] for row in _run(postgres, "SELECT id FROM trading.orders ORDER BY id")]
    assert ids == sorted(history["orders"])
    new = _run(
        postgres,
        "INSERT INTO trading.orders (user_id, symbol, side, quantity, price, notional, status)"
        " VALUES (8, 'ETH-USD', 'sell', 1, 10, 10, 'filled')"
        " RETURNING id, tableoid::regclass::text",
    )[0]
    assert new["id"] > max(ids) and new["tableoid"] == f"trading.orders_{Month.of(NOW).suffix}"
    key = f"key-{HISTORY[0]}-3"
    assert _run(
        postgres, "SELECT id FROM trading.orders WHERE user_id = 7 AND idempotency_key = $1", key
    )
    # A year of months ahead exists already, and the audit log is still append-only.
    ahead = Month.of(NOW).plus(12).suffix
    assert _run(postgres, "SELECT 1 FROM pg_class WHERE relname = $1", f"orders_{ahead}")
    # (the partitions' names are the platform's own: y2019m08, not input)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        _run(postgres, f"DELETE FROM audit.events_{HISTORY[0].suffix}")  # noqa: S608
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        _run(postgres, f"TRUNCATE audit.events_{HISTORY[0].suffix}")


def test_a_run_archives_each_cold_month_copies_it_and_detaches_it(postgres, history):
    directory, offhost = history["dir"], history["offhost"]
    before = _run(postgres, "SELECT count(*) AS n FROM audit.events")[0]["n"]
    run = archive(postgres, directory, "run", "--copy-to", str(offhost))
    assert run.returncode == 0, run.stderr
    assert f"kept orders_{OPEN_MONTH.suffix}: it holds 1 open row(s)" in run.stdout
    # No audit row is newer than the history's: its last month holds the chain's head, which
    # appending reads from the database.
    assert f"kept {NEWEST}: it holds the chain's newest row" in run.stdout
    for month in HISTORY:
        for data_class, name in (("orders", "orders"), ("audit", "events")):
            partition = f"{name}_{month.suffix}"
            if partition in (f"orders_{OPEN_MONTH.suffix}", NEWEST):
                continue
            manifest = json.loads(
                (directory / data_class / f"{partition}.manifest.json").read_text()
            )
            assert manifest["rows"] == (2 if data_class == "orders" else 3), manifest
            assert manifest["month"] == str(month)
            retain = datetime.fromisoformat(manifest["retain_until"])
            assert retain == month.end.replace(year=month.end.year + 7)
            data = directory / data_class / manifest["file"]
            with gzip.open(data, "rt") as handle:
                assert len(handle.read().splitlines()) == manifest["rows"] + 1  # the header
            assert (offhost / data_class / manifest["file"]).read_bytes() == data.read_bytes()
            assert not _run(postgres, "SELECT 1 FROM pg_class WHERE relname = $1", partition)
    left = _run(
        postgres, "SELECT tableoid::regclass::text AS p FROM trading.orders WHERE user_id = 7"
    )
    assert {row["p"] for row in left} == {f"trading.orders_{OPEN_MONTH.suffix}"}
    assert _run(postgres, "SELECT count(*) AS n FROM audit.events")[0]["n"] == before - ARCHIVED

    # The chain is whole: the rows left continue from the archived months' recorded ends.
    audit = gekko(postgres, "audit", "verify")
    assert audit.returncode == 0, audit.stderr
    assert f"({ARCHIVED} in archived months), chain intact" in audit.stdout
    checked = archive(postgres, directory, "verify")
    assert checked.returncode == 0, checked.stderr
    # Every month before the hot window: orders keep 3 (one month still open), audit 2.
    orders = len(FIRST.until(Month.of(NOW).plus(-4))) - 1
    audit_months = len(FIRST.until(Month.of(NOW).plus(-3)))
    assert f"{orders + audit_months - 1} archive(s) intact, 0 problem(s)" in checked.stdout

    # The resting order closes: the next run archives its month too, and nothing else moves.
    _run(
        postgres,
        "UPDATE trading.orders SET status = 'cancelled', reserved = 0"
        " WHERE status = 'open' AND user_id = 7",
    )
    # ... but never over an archive of the same name holding other rows (here, as if kept from
    # a database purged since): that file is left as it was, and so is the month.
    foreign = directory / "orders" / f"orders_{OPEN_MONTH.suffix}.csv.gz"
    foreign.write_bytes(gzip.compress(b"id\n1\n"))
    refused = archive(postgres, directory, "run")
    assert refused.returncode == 1 and "already holds other rows" in refused.stderr
    assert gzip.decompress(foreign.read_bytes()) == b"id\n1\n"
    assert _run(postgres, "SELECT 1 FROM pg_class WHERE relname = $1", foreign.name[:-7])
    foreign.unlink()
    again = archive(postgres, directory, "run", "--copy-to", str(offhost))
    assert again.returncode == 0, again.stderr
    assert (
        "1 month(s) archived" in again.stdout
        and f"orders_{OPEN_MONTH.suffix}: 2 row(s)" in again.stdout
    )


def test_verify_finds_a_changed_archive_a_changed_copy_and_a_rewritten_anchor(postgres, history):
    directory, offhost = history["dir"], history["offhost"]
    anchor_row = _run(
        postgres,
        "SELECT last_seq - 1 AS seq FROM archive.partitions WHERE partition = $1",
        f"events_{HISTORY[1].suffix}",
    )[0]["seq"]
    events = directory / "audit" / f"events_{HISTORY[1].suffix}.csv.gz"
    with gzip.open(events, "rt") as handle:
        lines = handle.read().splitlines()
    row = next(line for line in lines if line.startswith(f"{anchor_row},"))
    good_hash = row.split(",")[-1].removeprefix("\\x")
    anchored = archive(
        postgres,
        directory,
        "verify",
        "--anchor",
        f"{anchor_row}:{good_hash}",
    )
    assert anchored.returncode == 0, anchored.stderr
    wrong = archive(
        postgres,
        directory,
        "verify",
        "--anchor",
        f"{anchor_row}:{'0' * 64}",
    )
    assert (
        wrong.returncode == 1
        and f"row {anchor_row} no longer has its anchored hash" in wrong.stderr
    )

    # A login moved to another user inside the archived month: the file, its content and the
    # chain all say so.
    original = events.read_bytes()
    try:
        changed = (
            "\n".join(line.replace(",7,", ",8,", 1) if line is row else line for line in lines)
            + "\n"
        )
        events.write_bytes(gzip.compress(changed.encode(), mtime=0))
        tampered = archive(postgres, directory, "verify")
        assert tampered.returncode == 1
        assert "its checksum is not the manifest's" in tampered.stderr
        assert f"the audit chain breaks at row {anchor_row}" in tampered.stderr
    finally:
        events.write_bytes(original)
    copy = offhost / "orders" / f"orders_{HISTORY[2].suffix}.csv.gz"
    kept = copy.read_bytes()
    try:
        copy.write_bytes(kept[:-8])
        torn = archive(postgres, directory, "verify")
        assert (
            torn.returncode == 1 and f"the copy {copy} does not match its checksum" in torn.stderr
        )
    finally:
        copy.write_bytes(kept)
    assert archive(postgres, directory, "verify").returncode == 0


def test_one_archived_month_is_restored_and_reads_as_before(postgres, history):
    directory = history["dir"]
    for data_class in ("orders", "audit"):
        restored = archive(postgres, directory, "restore", data_class, str(RESTORED))
        assert restored.returncode == 0, restored.stderr
        assert "restored from" in restored.stdout
    rows = _run(
        postgres,
        "SELECT id, price, status, tableoid::regclass::text AS p FROM trading.orders"
        " WHERE created_at >= $1 AND created_at < $2 ORDER BY id",
        RESTORED.start,
        RESTORED.end,
    )
    assert [row["p"] for row in rows] == [f"trading.orders_{RESTORED.suffix}"] * 2
    assert {row["status"] for row in rows} == {"filled"}
    assert rows[0]["price"] == Decimal(100 + HISTORY.index(RESTORED))
    audit = gekko(postgres, "audit", "verify")
    assert audit.returncode == 0, audit.stderr
    assert f"({ARCHIVED - 3} in archived months)" in audit.stdout
    # The next row continues the chain from its newest row, not from the restored month.
    recorded = gekko(postgres, "audit", "record", "archive-drill", "--operator", "test")
    assert recorded.returncode == 0, recorded.stderr
    assert f"at row {3 * len(HISTORY) + 1}," in recorded.stdout
    assert gekko(postgres, "audit", "verify").returncode == 0
    # The restored month stays for its week, not archived again by the next run.
    again = archive(postgres, directory, "run")
    assert again.returncode == 0 and f"kept orders_{RESTORED.suffix}: restored" in again.stdout
    twice = archive(postgres, directory, "restore", "orders", str(RESTORED))
    assert twice.returncode == 1 and "already restored" in twice.stderr


def test_prune_deletes_only_the_archives_whose_retention_has_ended(postgres, history):
    directory, offhost = history["dir"], history["offhost"]
    pruned = archive(postgres, directory, "prune")
    assert pruned.returncode == 0, pruned.stderr
    for month in HISTORY:
        expired = DEFAULTS["orders"].retain_until(month) < datetime.now(UTC) and month != RESTORED
        for data_class, name in (("orders", "orders"), ("audit", "events")):
            if f"{name}_{month.suffix}" == NEWEST:
                continue
            data = directory / data_class / f"{name}_{month.suffix}.csv.gz"
            assert data.exists() != expired, (data, expired)
            assert (offhost / data_class / data.name).exists() != expired
    assert any(DEFAULTS["orders"].retain_until(m) < NOW for m in HISTORY), (
        "the test covers a pruned month"
    )
    assert any(DEFAULTS["orders"].retain_until(m) > NOW for m in HISTORY), "and a kept one"
    # What was pruned is still accounted for, and the chain still reads whole.
    checked = archive(postgres, directory, "verify")
    assert checked.returncode == 0, checked.stderr
    assert "(retention ended)" in checked.stdout
    assert gekko(postgres, "audit", "verify").returncode == 0


def test_retention_under_seven_years_is_refused(postgres, history):
    run = subprocess.run(
        gekko_cmd("archive", "--dir", str(history["dir"]), "run"),
        env={**{k: v for k, v in os.environ.items() if not k.startswith("GEKKO_")},
             "GEKKO_MIGRATE_DATABASE_URL": postgres.owner_url(DATABASE),
             "GEKKO_RETENTION": json.dumps({"audit": {"keep_years": 5}})},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "audit.keep_years must be a whole number of at least 7" in run.stderr


def test_the_services_role_reads_the_archive_records_and_cannot_change_any_audit_month(
    postgres, history
):
    role = postgres.app_user
    privileges = _run(
        postgres,
        "SELECT c.relname, has_table_privilege($1, c.oid, 'SELECT') AS reads,"
        " has_table_privilege($1, c.oid, CASE WHEN n.nspname = 'audit' THEN 'UPDATE, DELETE,"
        " TRUNCATE' ELSE 'INSERT, UPDATE, DELETE, TRUNCATE' END) AS changes"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE (n.nspname = 'archive' AND c.relname = 'partitions')"
        " OR (n.nspname = 'audit' AND c.relname LIKE 'events_%' AND c.relkind = 'r')",
        role,
    )
    assert len(privileges) > 12, "the archive's record and every audit month"
    assert {(row["relname"], row["changes"]) for row in privileges} == {
        (row["relname"], False) for row in privileges
    }
    assert [row["reads"] for row in privileges if row["relname"] == "partitions"] == [True]


def test_one_archive_job_at_a_time_and_a_month_left_detached_is_attached_again(postgres, history):
    directory = history["dir"]
    current = f"orders_{Month.of(datetime.now(UTC)).suffix}"

    async def hold_the_job_lock_then_detach():
        conn = await asyncpg.connect(postgres.owner_url(DATABASE))
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", 0x67656B6B6F617263)
            busy = await asyncio.to_thread(
                gekko, postgres, "archive", "--dir", str(directory), "run"
            )
            # As a run killed between detaching a month and archiving it leaves it.
            await conn.execute(f"ALTER TABLE trading.orders DETACH PARTITION trading.{current}")
            return busy
        finally:
            await conn.close()

    busy = asyncio.run(hold_the_job_lock_then_detach())
    assert busy.returncode == 1 and "another archive job is running" in busy.stderr
    run = archive(postgres, directory, "run")
    assert run.returncode == 0, run.stderr
    assert f"kept {current}: attached again" in run.stdout
    assert _run(postgres, "SELECT relispartition FROM pg_class WHERE relname = $1", current)[0][0]
