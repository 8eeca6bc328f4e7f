"""Issue 14, item 4 on the deployed stack: playbooks/archive.yml.

A user's two orders from about six years ago (inserted as history, as an import from an earlier
system would) are in their order history. The archive run writes their month to a compressed,
checksummed file on the host and a second folder there (gekko_archive_copy_dirs), the controller
fetches its copy (gekko_archive_offhost_dir), and the month leaves the database, and the
history. `-e archive=verify` checks the archive against its manifest, the database's record and
the controller's audit anchors; `-e archive=restore` brings the month back, and the history
shows the orders again. A controller's copy that no longer matches the host's fails the next
run, and is not replaced.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gekko.archive.partitions import Month

from .conftest import ansible_playbook, audit_log, owner_sql, recap
from .rollout import order_history

pytestmark = pytest.mark.e2e


def _month_not_archived() -> Month:
    """About six years ago: within its 7 years. A month no earlier run on this stack archived
    (rows arriving for an archived month are kept in the database, not archived again)."""
    archived = set(owner_sql("SELECT month FROM archive.partitions").split())
    month = Month.of(datetime.now(UTC)).plus(-70)
    while str(month) in archived:
        month = month.plus(-1)
    return month


ON_HOST = Path("/var/lib/gekko/archive/orders")


def test_an_old_month_is_archived_copied_to_the_controller_verified_and_restored(
    gateway, admin, tmp_path
):
    month = _month_not_archived()
    name = f"archive-{uuid.uuid4().hex[:10]}"
    created = gateway.post(
        "/api/v1/users/register",
        json={"username": name, "email": f"{name}@example.com", "password": "pw-" + name},
    )
    assert created.status_code == 201, created.text
    login = gateway.post("/api/v1/users/login", json={"username": name, "password": "pw-" + name})
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    old = [
        int(line)
        # (psql takes no parameters here: the values are the test's own numbers and times)
        for line in owner_sql(
            "INSERT INTO trading.orders (user_id, symbol, side, quantity, price, notional,"  # noqa: S608
            " status, filled_at, created_at) SELECT "
            f"{int(created.json()['id'])}, 'BTC-USD', 'buy', 0.5, 20000, 10000, 'filled', t, t "
            f"FROM (VALUES (timestamptz '{month.start.isoformat()}' + interval '3 days'),"
            f" (timestamptz '{month.start.isoformat()}' + interval '20 days')) AS v(t) RETURNING id"
        ).split()
    ]
    assert sorted(order_history(gateway, headers)) == sorted(old)

    offhost, second = tmp_path / "offhost", Path("/var/lib/gekko/archive-copy")
    settings = {"gekko_archive_offhost_dir": str(offhost), "gekko_archive_copy_dirs": [str(second)]}
    run = ansible_playbook("archive.yml", "-e", json.dumps(settings))
    assert run.returncode == 0, run.stdout[-4000:]
    assert f"orders_{month.suffix}: 2 row(s) archived" in run.stdout
    assert recap(run.stdout)["localhost"]["changed"] > 0
    assert order_history(gateway, headers) == []
    recorded = audit_log(gateway, admin, "archive-run")[0]
    assert recorded["details"]["outcome"].endswith("month(s) archived"), recorded
    # The host's file, its copy on the second disk and the controller's are the same bytes,
    # those the manifest names.
    data = ON_HOST / f"orders_{month.suffix}.csv.gz"
    manifest = json.loads(data.with_name(f"orders_{month.suffix}.manifest.json").read_text())
    controllers = offhost / "local" / "localhost" / "orders" / data.name
    for copy in (controllers, second / "orders" / data.name):
        assert copy.read_bytes() == data.read_bytes(), copy
    assert hashlib.sha256(data.read_bytes()).hexdigest() == manifest["sha256"]
    assert manifest["rows"] == 2 and manifest["retain_until"].startswith(str(month.end.year + 7))

    # (the inventory's settings, on every run: verify checks the copies too)
    verify = ansible_playbook("archive.yml", "-e", "archive=verify", "-e", json.dumps(settings))
    assert verify.returncode == 0, verify.stdout[-4000:]
    assert "archive(s) intact, 0 problem(s)" in verify.stdout

    restore = ansible_playbook(
        "archive.yml", "-e", "archive=restore", "-e", "data_class=orders", "-e", f"month={month}"
    )
    assert restore.returncode == 0, restore.stdout[-4000:]
    assert sorted(order_history(gateway, headers)) == sorted(old)

    # The controller's copy changed (or the host's): the next run says so, replacing neither.
    tampered = gzip.compress(b"id\n1\n")
    controllers.write_bytes(tampered)
    again = ansible_playbook("archive.yml", "-e", json.dumps(settings))
    assert again.returncode != 0
    assert f"The controller's copy of orders/{data.name} differs from the host's" in again.stdout
    assert controllers.read_bytes() == tampered
    # The failed run released its lock: the next run does not wait for it or take it over.
    assert not Path("/var/lib/gekko/deploy.lock").exists()
