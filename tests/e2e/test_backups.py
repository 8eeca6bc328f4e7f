"""Issue 14, item 3: backups and point-in-time restore, proved by a drill on the deployed stack.

Orders are placed and acknowledged, a full backup is taken and trading goes on. Then the data
volume is destroyed (PostgreSQL's container and volume removed, as a lost disk) and
playbooks/restore.yml brings back every acknowledged order: the ones after the backup come from
the WAL archive and the stream of the segment still being written. A restore to a time between
two batches of orders then brings back exactly the orders before it, and each portfolio agrees
with its orders both times.
"""

from __future__ import annotations

import datetime
import time
import uuid
from pathlib import Path

import docker
import pytest

from .conftest import ansible_playbook, owner_sql, register_users, wait_for_health, wait_until
from .rollout import order_history

pytestmark = pytest.mark.e2e

QUANTITY = 0.001
ORDER = {"symbol": "BTC-USD", "side": "buy", "quantity": QUANTITY, "type": "market"}
PER_BATCH = 3
METRICS = Path("/var/lib/gekko/metrics/backups.prom")


@pytest.fixture(scope="module")
def users(gateway):
    return register_users(gateway, 2, "drill")


@pytest.fixture(autouse=True)
def stack_healthy_after(gateway):
    yield
    wait_for_health(gateway, timeout=120)


def _place(gateway, users) -> dict[int, list[int]]:
    """PER_BATCH acknowledged orders for each user: their ids, by user."""
    placed: dict[int, list[int]] = {}
    for n, user in enumerate(users):
        for _ in range(PER_BATCH):
            answer = gateway.post(
                "/api/v1/trading/execute",
                headers={**user["headers"], "Idempotency-Key": str(uuid.uuid4())},
                json=ORDER,
            )
            assert answer.status_code == 201, answer.text
            placed.setdefault(n, []).append(answer.json()["id"])
    return placed


def _orders_are(gateway, users, expected: dict[int, list[int]], timeout: float = 60) -> None:
    """Each user's history is exactly `expected` (PostgreSQL may still be recovering), and
    their portfolio agrees with it: one trade and QUANTITY of BTC per order."""
    for n, user in enumerate(users):
        want = sorted(expected[n])
        wait_until(
            lambda u=user, w=want: sorted(order_history(gateway, u["headers"])) == w,
            f"user {n}'s history to be {want}",
            timeout=timeout,
            interval=1.0,  # well inside the 200 requests a minute each user may make
        )

        def portfolio_agrees(u=user, w=want):
            body = gateway.get("/api/v1/portfolio", headers=u["headers"]).json()
            held = sum(p["quantity"] for p in body["positions"] if p["symbol"] == "BTC-USD")
            return body["trades"] == len(w) and held == pytest.approx(len(w) * QUANTITY)

        wait_until(
            portfolio_agrees,
            f"user {n}'s portfolio to hold {len(want)} orders",
            timeout=30,
            interval=1.0,
        )


def _joined(*batches: dict[int, list[int]]) -> dict[int, list[int]]:
    return {n: [i for batch in batches for i in batch[n]] for n in batches[0]}


def _metrics() -> dict[str, float]:
    lines = METRICS.read_text().splitlines()
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in lines if not ln.startswith("#"))}


def test_the_backup_agent_runs_without_network_password_or_privileges():
    attrs = docker.from_env().containers.get("gekko-backup").attrs
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert attrs["Config"]["User"] == "postgres"
    # It signs in over the Unix socket as the OS user postgres (peer), so it holds no password.
    assert not [e for e in attrs["Config"]["Env"] if "PASSWORD" in e.split("=", 1)[0]]
    data = next(m for m in attrs["Mounts"] if m.get("Name") == "gekko-postgres-data")
    assert data["RW"] is False


def test_an_unclear_or_unreachable_target_is_refused_before_anything_stops(gateway, users):
    postgres = docker.from_env().containers.get("gekko-postgres")
    started_at = postgres.attrs["State"]["StartedAt"]

    run = ansible_playbook("restore.yml", "-e", "target=yesterday")
    assert run.returncode != 0
    assert "neither 'latest' nor an ISO 8601 timestamp" in run.stdout

    run = ansible_playbook("restore.yml", "-e", "target='2026-12-05 08:00:00'")
    assert run.returncode != 0
    assert "has no time zone" in run.stdout

    long_ago = "2001-01-01 00:00:00+00:00"
    run = ansible_playbook("restore.yml", "-e", f"target='{long_ago}'")
    assert run.returncode != 0
    assert "is before the oldest backup kept" in run.stdout, run.stdout[-2000:]

    run = ansible_playbook("backup.yml", "-e", "type=weekly")
    assert run.returncode != 0
    assert "is not a backup type" in run.stdout

    postgres.reload()
    assert postgres.attrs["State"]["StartedAt"] == started_at, (
        "a refused restore stopped PostgreSQL"
    )


def test_a_lost_data_volume_is_restored_with_every_acknowledged_order_then_to_a_time(
    gateway, users
):
    before_backup = _place(gateway, users)

    began = time.time()
    run = ansible_playbook("backup.yml", "-e", "type=full")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "backups kept; the newest" in run.stdout
    # The backup's metrics, for the BackupTooOld alert (node exporter's textfile collector).
    assert _metrics()['gekko_backup_last_success_timestamp_seconds{type="full"}'] >= began
    assert _metrics()["gekko_backup_last_attempt_success"] == 1

    after_backup = _place(gateway, users)
    time.sleep(1.0)
    target = datetime.datetime.now(datetime.UTC).isoformat()
    time.sleep(1.0)
    # A fresh WAL segment, which nothing fills or times out (archive_timeout, 60 s) before the
    # disk is lost below: the last orders are then in no archived segment, only in the agent's
    # stream, and the restore must replay them from there.
    owner_sql("SELECT pg_switch_wal()")
    after_target = _place(gateway, users)
    everything = _joined(before_backup, after_backup, after_target)
    segment = owner_sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    assert owner_sql("SELECT last_archived_wal FROM pg_stat_archiver") < segment

    # The disk is lost: the server dies with it (SIGKILL), its container and volume go.
    engine = docker.from_env()
    for name in ("gekko-postgres", "gekko-backup"):
        engine.containers.get(name).remove(force=True)
    engine.volumes.get("gekko-postgres-data").remove()

    run = ansible_playbook("restore.yml")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "restore backup set" in run.stdout
    _orders_are(gateway, users, everything)

    run = ansible_playbook("restore.yml", "-e", f"target='{target}'")
    assert run.returncode == 0, run.stdout[-3000:]
    _orders_are(gateway, users, _joined(before_backup, after_backup))

    # Trading goes on on the restored data, and the backup agent streams the new timeline.
    _place(gateway, users)

    def streaming():
        docker.from_env().containers.get("gekko-backup").exec_run(["backup-agent", "metrics"])
        return _metrics()["gekko_backup_wal_streaming"] == 1

    wait_until(streaming, "the backup agent to stream the WAL again", timeout=30, interval=2)
