"""Retention's pure parts (issue 14, item 4): months and their partitions, the retention each data
class keeps, the audit chain stepping over archived months, and the archive file format."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from gekko.archive import files
from gekko.archive.partitions import AUDIT, ORDERS, Month, partition_statements, quoted
from gekko.archive.retention import DEFAULTS, RetentionError, parse
from gekko.security.audit import GENESIS, ArchivedRange, AuditEntry, ChainWalker, chain_hash
from gekko.security.audit_anchors import Anchor, anchor_problems


def test_months_step_across_years_and_cut_in_utc():
    assert Month(2026, 12).plus(1) == Month(2027, 1)
    assert Month(2027, 1).plus(-13) == Month(2025, 12)
    assert Month.parse("2019-08").until(Month(2019, 10)) == [
        Month(2019, 8), Month(2019, 9), Month(2019, 10),
    ]  # fmt: skip
    assert Month(2026, 12).start == datetime(2026, 12, 1, tzinfo=UTC)
    assert Month(2026, 12).end == datetime(2027, 1, 1, tzinfo=UTC)
    # 23:30 on the 30th of November in New York is already December in UTC.
    late = datetime(2026, 11, 30, 23, 30, tzinfo=ZoneInfo("America/New_York"))
    assert Month.of(late) == Month(2026, 12)
    assert ORDERS.partition(Month(2026, 3)) == "orders_y2026m03"
    assert ORDERS.month_of("orders_y2026m03") == Month(2026, 3)
    assert ORDERS.month_of("orders_default") is None
    for bad in ("2026-13", "26-01", "2026/01", ""):
        with pytest.raises(ValueError):
            Month.parse(bad)


def test_partition_ddl_names_its_bounds_and_guards_an_append_only_month():
    orders = partition_statements(ORDERS, Month(2026, 12))
    assert orders == [
        'CREATE TABLE "trading"."orders_y2026m12" PARTITION OF "trading"."orders" '
        "FOR VALUES FROM ('2026-12-01T00:00:00+00:00') TO ('2027-01-01T00:00:00+00:00')"
    ]
    audit = partition_statements(AUDIT, None)
    assert audit[0].endswith('PARTITION OF "audit"."events" DEFAULT')
    assert "BEFORE TRUNCATE" in audit[1] and '"audit"."events_default"' in audit[1]
    with pytest.raises(ValueError):
        quoted("orders; DROP TABLE x")


def test_retention_comes_from_the_inventory_and_never_goes_under_seven_years():
    assert parse("") == DEFAULTS
    classes = parse('{"orders": {"hot_months": 6, "keep_years": 10}}')
    assert (classes["orders"].hot_months, classes["orders"].keep_years) == (6, 10)
    assert classes["audit"] == DEFAULTS["audit"]
    orders = classes["orders"]
    assert orders.cold_before(datetime(2026, 12, 6, tzinfo=UTC)) == Month(2026, 6)
    assert orders.retain_until(Month(2019, 12)) == datetime(2030, 1, 1, tzinfo=UTC)
    refused = {
        '{"audit": {"keep_years": 5}}': "audit.keep_years must be a whole number of at least 7",
        '{"orders": {"hot_months": 0}}': "orders.hot_months must be a whole number of at least 1",
        '{"orders": {"hot_months": true}}': "orders.hot_months",
        '{"fills": {}}': "unknown data class(es) fills: known are orders, audit",
        '{"orders": {"keep": 9}}': "give hot_months and keep_years only",
        "[1]": "must map data classes",
        "{": "not JSON",
    }
    for text, message in refused.items():
        with pytest.raises(RetentionError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse(text)


def _chain(count: int) -> list[dict]:
    rows, prev = [], GENESIS
    for seq in range(1, count + 1):
        entry = AuditEntry("login-success", "users", datetime(2019, 8, seq, tzinfo=UTC), seq)
        digest = chain_hash(prev, entry, seq)
        rows.append({
            "seq": seq, "at": entry.at, "event": entry.event, "component": entry.component,
            "actor_user_id": seq, "subject_user_id": None, "source_address": "",
            "correlation_id": "", "details": {}, "prev_hash": prev, "hash": digest,
        })  # fmt: skip
        prev = digest
    return rows


def _archived(rows: list[dict], first: int, last: int) -> ArchivedRange:
    return ArchivedRange(first, last, rows[first - 1]["prev_hash"], rows[last - 1]["hash"])


def _walk(rows, archived) -> tuple:
    walker = ChainWalker(archived)
    for row in rows:
        walker.add(row)
    report = walker.report()
    return report.rows, report.broken_at, report.archived, report.reason


def test_the_chain_steps_over_archived_months_by_their_recorded_ends():
    rows = _chain(9)
    early, middle, late = _archived(rows, 1, 3), _archived(rows, 4, 6), _archived(rows, 7, 9)
    assert _walk(rows[6:], [early, middle]) == (9, None, 6, "")
    # A month restored between archived ones, and every month archived.
    assert _walk(rows[3:6], [early, late]) == (9, None, 6, "")
    assert _walk([], [early, middle, late]) == (9, None, 9, "")
    # The database's rows must continue from the archived ends ...
    forged = ArchivedRange(4, 6, rows[3]["prev_hash"], bytes(32))
    walked = _walk(rows[6:], [early, forged])
    assert walked[:2] == (6, 7) and "previous hash" in walked[3]
    # ... an archived month must follow the rows before it ...
    unlinked = ArchivedRange(4, 6, bytes(32), rows[5]["hash"])
    walked = _walk(rows[:3] + rows[6:], [unlinked])
    assert walked[:2] == (3, 7) and walked[3] == "the archived rows 4-6 do not follow row 3"
    # ... and rows neither in the database nor archived are missing.
    assert _walk(rows[6:], [early])[:2] == (3, 7)
    assert _walk(rows[:3], [ArchivedRange(5, 9, rows[4]["prev_hash"], rows[8]["hash"])])[:2] == (
        3,
        4,
    )


def test_anchors_in_archived_months_are_checked_where_their_ends_are_known():
    rows = _chain(6)
    archived = [_archived(rows, 1, 3)]
    stored = {row["seq"]: row["hash"] for row in rows[3:]}
    inside, at_end = Anchor(2, rows[1]["hash"]), Anchor(3, rows[2]["hash"])
    assert anchor_problems([inside, at_end, Anchor(5, rows[4]["hash"])], stored, archived) == []
    rewritten = anchor_problems([Anchor(3, bytes(32))], stored, archived)
    assert rewritten and "row 3 no longer has its anchored hash" in rewritten[0]
    assert anchor_problems([Anchor(9, bytes(32))], stored, archived) == [
        "row 9 is gone: the log was cut back past it"
    ]


def test_an_archive_file_is_the_same_bytes_for_the_same_rows_and_reads_back(tmp_path):
    # (a refused request's path can carry a CR LF into an audit row: it must read back as is)
    csv_text = b'id,symbol,details\n1,BTC-USD,"{""a"": 1}"\n2,ETH-USD,"two\r\nlines"\n'

    def write(path):
        writer = files.ArchiveWriter(path)

        async def feed():
            for start in range(0, len(csv_text), 7):
                await writer.write(csv_text[start : start + 7])

        asyncio.run(feed())
        return writer.finish()

    first = write(tmp_path / "a" / "orders_y2019m08.csv.gz")
    second = write(tmp_path / "b" / "orders_y2019m08.csv.gz")
    assert first == second and not list(tmp_path.glob("*/*.partial"))
    path = tmp_path / "a" / "orders_y2019m08.csv.gz"
    assert gzip.decompress(path.read_bytes()) == csv_text
    seen = []
    reading = files.read_back(path, seen.append)
    assert (reading.sha256, reading.content_sha256) == first
    assert reading.rows == 2 and reading.columns == ["id", "symbol", "details"]
    assert seen[1] == {"id": "2", "symbol": "ETH-USD", "details": "two\r\nlines"}
    manifest = files.Manifest(
        "orders", "trading.orders", "orders_y2019m08", "2019-08", 2, reading.columns,
        path.name, first[0], first[1], "2026-12-06T00:00:00+00:00", "2026-09-01T00:00:00+00:00",
    )  # fmt: skip
    files.write_manifest(tmp_path / "m.json", manifest)
    assert files.Manifest.load(tmp_path / "m.json") == manifest
    copy = files.copy_verified(path, tmp_path / "m.json", tmp_path / "offhost", first[0])
    assert copy == tmp_path / "offhost" / "a" / path.name and copy.read_bytes() == path.read_bytes()
    with pytest.raises(OSError, match="does not match its checksum"):
        files.copy_verified(path, tmp_path / "m.json", tmp_path / "elsewhere", "0" * 64)


def test_an_archive_is_never_overwritten_by_other_rows(tmp_path):
    path = tmp_path / "orders" / "orders_y2019m08.csv.gz"

    def write(text: bytes):
        writer = files.ArchiveWriter(path)
        asyncio.run(writer.write(text))
        return writer.finish()

    first = write(b"id\n1\n")
    # Another database's month of the same name (kept after a purge): refused, left as it was.
    with pytest.raises(FileExistsError, match="already holds other rows"):
        write(b"id\n2\n")
    assert gzip.decompress(path.read_bytes()) == b"id\n1\n"
    # The same rows again (a restored month archived anew): the file is kept.
    assert write(b"id\n1\n") == first
    assert not list(path.parent.glob("*.partial"))
    assert oct(path.stat().st_mode & 0o777) == "0o640"
