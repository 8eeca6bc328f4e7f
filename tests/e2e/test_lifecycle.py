"""Teardown removes containers but keeps the data, and a deploy brings the stack back.

These run after the other modules that change the stack but test_rollouts
(conftest.REDEPLOY_ORDER), in file order: the teardown removes whatever shape the earlier modules
left, and the deploy after it stands the stack up fresh as the inventory has it (with the order
path's two instances of each service, the shape test_rollouts runs on). A second deploy of the same
reporting no change is test_noop_deploy's, on the fresh deploy's stack.
"""

import asyncio
import contextlib
import stat
from pathlib import Path

import asyncpg
import docker

from .conftest import OPERATOR, ansible_playbook, audit_log, wait_for_health


def test_teardown_keeps_data_and_a_redeploy_brings_it_back(gateway, trader):
    engine = docker.from_env()
    with contextlib.suppress(docker.errors.NotFound):  # an earlier failed run's
        engine.containers.get("gekko-left-behind").remove(force=True)
    # A container of this deployment that no role of this release knows (left by a feature
    # the inventory has since turned off) goes too.
    engine.containers.run(
        engine.containers.get("gekko-postgres").image,
        ["600"],
        entrypoint=["sleep"],
        name="gekko-left-behind",
        labels={"gekko.platform/managed": "true", "gekko.platform/deployment": "gekko"},
        detach=True,
    )
    down = ansible_playbook("teardown.yml")
    assert down.returncode == 0, down.stdout[-3000:]
    names = {c.name for c in engine.containers.list(all=True)}
    assert not {n for n in names if n.startswith("gekko-")}, names
    volumes = {v.name for v in engine.volumes.list()}
    assert {"gekko-postgres-data", "gekko-redis-data"} <= volumes

    # The crash watch after a rollout (10 s by default) is test_rollback's concern.
    up = ansible_playbook("deploy.yml", "-e", "gekko_settle_seconds=2")
    assert up.returncode == 0, up.stdout[-3000:]
    wait_for_health(gateway)
    login = gateway.post(
        "/api/v1/users/login",
        json={"username": trader["username"], "password": trader["password"]},
    )
    assert login.status_code == 200, "the user registered before teardown must survive it"


def test_each_deploy_is_in_the_audit_log_with_who_ran_it(gateway, admin):
    latest = audit_log(gateway, admin, "deploy-succeeded")[0]
    assert latest["component"] == "deploy"
    assert latest["details"]["operator"] == OPERATOR
    assert latest["details"]["release"].startswith("r-")
    assert latest["details"]["environment"] == "local"


def test_each_recorded_operation_is_anchored_on_the_controller_and_the_log_verifies(
    gateway, admin, secret
):
    """The controller keeps each recorded row's number and hash (0600); the newest is the last
    deploy's row as the database holds it, and audit-verify.yml checks the chain and every
    anchor the earlier playbooks of this run left."""
    anchors = Path.home() / ".gekko/audit/local/anchors"
    assert stat.S_IMODE(anchors.stat().st_mode) == 0o600
    lines = anchors.read_text().splitlines()
    anchor, _, event = lines[-1].split()
    seq, digest = anchor.split(":")
    assert event == "deploy-succeeded"
    assert int(seq) == audit_log(gateway, admin, "deploy-succeeded")[0]["seq"]

    async def stored_hash() -> bytes:
        conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="gekko", database="gekko",
                                     password=secret("postgres_password"))  # fmt: skip
        try:
            return await conn.fetchval("SELECT hash FROM audit.events WHERE seq = $1", int(seq))
        finally:
            await conn.close()

    assert asyncio.run(stored_hash()).hex() == digest
    checked = ansible_playbook("audit-verify.yml")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert f"chain intact, {len(lines)} anchor(s) match" in checked.stdout
