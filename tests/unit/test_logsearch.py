"""`gekko logs --correlation-id`: the central log store's files, read back in time order."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from gekko.cli import main as cli_main
from gekko.observability import logsearch

ID = "req-42"


def entry(service: str, msg: str, correlation_id: str | None = ID) -> str:
    fields = {"ts": "x", "level": "INFO", "service": service, "instance": service, "msg": msg}
    if correlation_id:
        fields["correlation_id"] = correlation_id
    return json.dumps(fields, separators=(",", ":"))


def store_line(at: str, host: str, container: str, message: str) -> str:
    return f"{at} {host} {container} {message}\n"


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(lines).encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Two hosts; the gateway's file rotated twice (one plain, one compressed)."""
    gateway = tmp_path / "gw-1" / "gekko-gateway.log"
    write(
        gateway.with_name("gekko-gateway.log.2.gz"),
        [
            store_line(
                "2025-01-02T10:00:00.000100+00:00", "gw-1", "gekko-gateway", entry("gateway", "in")
            )
        ],
    )
    write(
        gateway.with_name("gekko-gateway.log.1"),
        [
            store_line(
                "2025-01-02T10:00:00.000900+00:00", "gw-1", "gekko-gateway", entry("gateway", "a")
            ),
            store_line(
                "2025-01-02T10:00:00.000900+00:00", "gw-1", "gekko-gateway", entry("gateway", "b")
            ),
        ],
    )
    write(
        gateway,
        [
            store_line(
                "2025-01-02T10:00:01.5+00:00", "gw-1", "gekko-gateway", entry("gateway", "out")
            ),
            store_line(
                "2025-01-02T10:00:02+00:00", "gw-1", "gekko-gateway", entry("gateway", "x", "other")
            ),
        ],
    )
    write(
        tmp_path / "svc-1" / "gekko-trading.log",
        [
            # Another host's clock in another zone: 11:00:00.0005+01:00 is 10:00:00.0005 UTC.
            store_line(
                "2025-01-02T11:00:00.000500+01:00",
                "svc-1",
                "gekko-trading",
                entry("trading", "order"),
            ),
            "cut short\n",
            f"not-a-time svc-1 gekko-trading {entry('trading', 'no time')}\n",
            # A prefix of the id is another request.
            store_line(
                "2025-01-02T10:00:00.7+00:00",
                "svc-1",
                "gekko-trading",
                entry("trading", "y", ID + "7"),
            ),
        ],
    )
    write(tmp_path / "svc-1" / "notes.txt", [f"{ID}\n"])
    (tmp_path / ".logrotate.status").write_text(f"logrotate state -- version 2\n{ID}\n")
    return tmp_path


def test_a_request_is_followed_across_hosts_and_rotations_in_time_order(store):
    lines = logsearch.search(store, ID)
    assert [(line.host, json.loads(line.message)["msg"]) for line in lines] == [
        ("gw-1", "in"),
        ("svc-1", "order"),
        ("gw-1", "a"),
        ("gw-1", "b"),
        ("gw-1", "out"),
    ]
    # Printed as the store wrote them, time included.
    assert str(lines[1]).startswith("2025-01-02T11:00:00.000500+01:00 svc-1 gekko-trading {")


def test_the_store_files_are_the_logs_and_their_rotations_oldest_first(store):
    names = [f"{p.parent.name}/{p.name}" for p in logsearch.store_files(store)]
    assert names == [
        "gw-1/gekko-gateway.log.2.gz",
        "gw-1/gekko-gateway.log.1",
        "gw-1/gekko-gateway.log",
        "svc-1/gekko-trading.log",
    ]


def test_a_line_the_store_got_twice_counts_once(tmp_path):
    line = store_line("2025-01-02T10:00:00+00:00", "h", "gekko-users", entry("users", "once"))
    write(tmp_path / "h" / "gekko-users.log", [line, line])
    assert len(logsearch.search(tmp_path, ID)) == 1


@pytest.mark.parametrize(
    ("message", "found"),
    [
        (entry("users", "m"), True),
        (entry("users", f"about {ID}", correlation_id="another"), False),
        (f"plain text for {ID} here", True),
        (f"plain text for {ID}-2 here", False),
        (f"id={ID}", True),
        ("nothing", False),
    ],
)
def test_json_lines_match_by_their_field_and_plain_lines_by_the_whole_id(message, found):
    assert logsearch.mentions(message, ID) is found


def test_lines_that_are_not_the_stores_are_passed_over():
    assert logsearch.parse_line("2025-01-02T10:00:00 h c naive time\n") is None
    assert logsearch.parse_line("too short\n") is None
    line = logsearch.parse_line("2025-01-02T10:00:00Z h c  two  spaces kept \n")
    assert line is not None and line.message == " two  spaces kept "


def test_a_broken_compressed_file_is_reported_and_the_rest_still_read(store, capsys):
    (store / "gw-1" / "gekko-gateway.log.3.gz").write_bytes(b"not gzip")
    assert len(logsearch.search(store, ID)) == 5
    assert "skipped" in capsys.readouterr().err


def test_the_cli_prints_the_lines_and_says_when_there_are_none(store, capsys):
    assert cli_main(["logs", "--correlation-id", ID, "--dir", str(store)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and " gw-1 gekko-gateway " in out[0]
    assert cli_main(["logs", "--correlation-id", "nobody", "--dir", str(store)]) == 1
    assert "no line mentions nobody" in capsys.readouterr().err
    assert cli_main(["logs", "--correlation-id", ID, "--dir", str(store / "missing")]) == 2
