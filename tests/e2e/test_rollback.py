"""Failed deploys roll back by themselves: each injected failure ends with the last good
release serving again, nothing lost. Rollback times are printed; `make bench` judges the 30 s
target (docs/benchmarks.md).

"Serving again" is checked on what runs, not on the state file alone (a failed deploy never
records a release, so its id cannot change): every container has the image, spec and
configuration it had before the failed deploy, and they are the last good release's as
recorded in /var/lib/gekko/releases.json. These run after the read-only tests (conftest).
"""

import json
import re
import time
from pathlib import Path

import docker
import pytest
import yaml

from .conftest import APP_ONLY, OPERATOR, REPO, ansible_playbook, audit_log, wait_for_health
from .rollout import APP_ENV, assert_runs_release, releases, running_containers

CATALOGUE = yaml.safe_load((REPO / "roles/common/defaults/main.yml").read_text())["gekko_services"]
# The health check of a service whose catalogue entry names none.
DEFAULT_HEALTHCHECK = yaml.safe_load((REPO / "roles/app_services/vars/main.yml").read_text())[
    "_gekko_default_healthcheck"
]
ROLLED_BACK = re.compile(r"The last good release was restored in ([0-9.]+) s")


def catalogue_with(service: str, **changes) -> list[dict]:
    return [dict(s, **changes) if s["name"] == service else s for s in CATALOGUE]


def deploy_with(tmp_path, extra: dict):
    path = tmp_path / "extra.json"
    path.write_text(json.dumps(extra))
    return ansible_playbook("deploy.yml", *APP_ONLY, "-e", f"@{path}")


def what_runs() -> dict[str, tuple]:
    """Name -> (image id, spec hash, environment) of every application container."""
    return {
        name: (c["image"], c["spec"], sorted(c["env"])) for name, c in running_containers().items()
    }


@pytest.fixture
def last_good(gateway, trader):
    """The release, what runs, its configuration and a user, from before the failed deploy."""
    return {
        "release": releases()["current"],
        "running": what_runs(),
        "app.env": APP_ENV.read_bytes(),
        "user": trader,
    }


def assert_rolled_back(run, gateway, last_good, what: str):
    output = run.stdout + run.stderr
    assert run.returncode != 0, f"{what}: the deploy should fail"
    match = ROLLED_BACK.search(output)
    assert match, f"{what}: no rollback reported:\n{output[-4000:]}"
    seconds = float(match.group(1))
    print(f"rollback after {what}: {seconds:.1f}s")
    # The requirement's 30 s is judged by `make bench` on a quiet machine (stage 11, this
    # module's worst case). Here, beside the lab's first deploy on the same two cores, it took up
    # to 30.8 s in CI (about 20 s alone): the bound only catches a rollback that hangs or
    # restores its containers one by one (12 of them, 5 s or more each).
    assert seconds < 60
    assert releases()["current"]["id"] == last_good["release"]["id"]
    wait_for_health(gateway, timeout=30)
    assert what_runs() == last_good["running"], "the containers of the last good release run"
    assert APP_ENV.read_bytes() == last_good["app.env"], "its configuration is back"
    assert_runs_release(last_good["release"])
    user = last_good["user"]
    login = gateway.post(
        "/api/v1/users/login", json={"username": user["username"], "password": user["password"]}
    )
    assert login.status_code == 200, "data written before the failed deploy must survive"
    for container in docker.from_env().containers.list(filters={"label": "gekko.platform/set"}):
        assert container.status == "running", container.name
        assert container.attrs["State"]["Health"]["Status"] == "healthy", container.name


def test_image_that_does_not_start(tmp_path, gateway, last_good, admin):
    # An image of its own without a user runs as root: the security policy gate lets it through
    # only with an approval, which the audit log keeps with what it waived.
    run = deploy_with(
        tmp_path,
        {
            "gekko_services": catalogue_with(
                "trading", image="gekko/base:bookworm", command=["false"]
            ),
            "gekko_security_approval": "E2E-ROLLBACK-1",
        },
    )
    # One violation per trading container: the order path runs two instances.
    assert "approval E2E-ROLLBACK-1 waives 2 violation(s)" in run.stdout + run.stderr
    assert_rolled_back(run, gateway, last_good, "an image that does not start")
    waiver = audit_log(gateway, admin, "security-policy-waived")[0]
    assert waiver["details"]["ticket"] == "E2E-ROLLBACK-1"
    assert waiver["details"]["violations"] == "container-root"
    assert waiver["details"]["outcome"] == "rolled-back"
    assert waiver["details"]["operator"] == OPERATOR


def test_failing_health_check(tmp_path, gateway, last_good, admin):
    run = deploy_with(
        tmp_path,
        {
            "gekko_services": catalogue_with(
                "portfolio",
                healthcheck={
                    "test": ["CMD", "false"],
                    "interval": 1,
                    "timeout": 1,
                    "retries": 2,
                    "start_period": 0,
                },
            )
        },
    )
    assert_rolled_back(run, gateway, last_good, "a failing health check")
    # The audit log says who ran the failed deploy, where it failed and that it was undone.
    latest = audit_log(gateway, admin, "deploy-rolled-back")[0]
    assert latest["details"]["operator"] == OPERATOR
    assert latest["details"]["phase"] == "activate" and latest["details"]["host"] == "localhost"


def test_invalid_configuration_at_runtime(tmp_path, gateway, last_good):
    # Passes the inventory checks and the services (which do not read it), but the gateway, which
    # rolls out last, refuses a static discovery map that is not JSON: the worst case, every
    # container of the release to restore.
    run = deploy_with(tmp_path, {"gekko_app_extra_env": {"GEKKO_STATIC_SERVICES": "not-json"}})
    assert_rolled_back(run, gateway, last_good, "an invalid configuration")
    env = Path("/etc/gekko/app.env").read_text()
    assert "GEKKO_STATIC_SERVICES=not-json" not in env, "the last good configuration is restored"


def test_service_that_crashes_after_start(tmp_path, gateway, last_good):
    crashing = {
        "image": "gekko/base:bookworm",
        # Not root: the security policy gate refuses an image of unknown user without one.
        "user": "65534:65534",
        "command": ["bash", "-c", "sleep 5; exit 3"],
        "healthcheck": {
            "test": ["CMD", "true"],
            "interval": 1,
            "timeout": 1,
            "retries": 1,
            "start_period": 0,
        },
    }
    run = deploy_with(tmp_path, {"gekko_services": catalogue_with("social", **crashing)})
    assert_rolled_back(run, gateway, last_good, "a service that crashes after start")


def test_dependency_that_is_down(tmp_path, gateway, last_good):
    # The new release points at a Redis that does not answer: its services never turn ready.
    # What is under test is that readiness and the rollback, not the grace period a slow start
    # gets (15 s, 60 s for the model server): each service keeps its own check, with 3 s of it.
    quick = [
        dict(s, healthcheck=dict(s.get("healthcheck") or DEFAULT_HEALTHCHECK, start_period=3))
        for s in CATALOGUE
    ]
    run = deploy_with(
        tmp_path,
        {
            "gekko_app_extra_env": {"GEKKO_REDIS_URL": "redis://127.0.0.1:6399/0"},
            "gekko_services": quick,
        },
    )
    assert_rolled_back(run, gateway, last_good, "a dependency that is down")


def test_invalid_inventory_value_fails_before_anything_changes(tmp_path, gateway, last_good):
    engine = docker.from_env()
    started = {c.name: c.attrs["State"]["StartedAt"] for c in engine.containers.list()}
    begun = time.monotonic()
    run = deploy_with(tmp_path, {"gekko_bind_address": "999.1.1.1"})
    assert run.returncode != 0
    assert "gekko_bind_address must be an IPv4" in run.stdout
    assert time.monotonic() - begun < 30
    assert {c.name: c.attrs["State"]["StartedAt"] for c in engine.containers.list()} == started
    assert releases()["current"]["id"] == last_good["release"]["id"]
