"""A second deploy of what stands reports no change: every task is idempotent. And one run at a
time: a deploy finds another run's lock and fails naming it before changing anything, and takes
over the lock a killed run left.

It runs on the stack the fresh deploy stood up, the first of the modules that run playbooks
(conftest.REDEPLOY_ORDER), so in `make test` beside the checks rather than in the late part."""

import contextlib
import io
import json
import re
import socket
import subprocess
import time
from pathlib import Path

import docker
import pytest

from .conftest import APP_ONLY, ansible_playbook, recap
from .rollout import releases

LOCK = Path("/var/lib/gekko/deploy.lock")
STARTED = Path("/var/lib/gekko/metrics/deploy-started.prom")


def platform_containers(engine) -> dict[str, str]:
    """The platform's running containers (name -> when started); not what runs beside it on the
    same engine, such as molecule's, which `make test` runs beside these tests."""
    found = engine.containers.list(filters={"label": "gekko.platform/deployment"})
    return {c.name: c.attrs["State"]["StartedAt"] for c in found}


def plant_lock(**holder) -> None:
    run = {"run": "e2e-other-run", "operator": "bob", "playbook": "deploy.yml", **holder}
    LOCK.write_text(json.dumps(dict(run, taken_at=time.time())))


def test_a_deploy_fails_naming_another_runs_lock_before_changing_anything():
    plant_lock(controller="ci-elsewhere", pid=1)
    started_before = STARTED.read_text()
    try:
        run = ansible_playbook("deploy.yml", "-e", "gekko_deploy_lock_wait=0")
        assert run.returncode != 0
        assert (
            "the deploy lock /var/lib/gekko/deploy.lock is held by run e2e-other-run of "
            "deploy.yml by bob on ci-elsewhere (process 1)" in run.stdout
        ), run.stdout[-3000:]
        assert "-e gekko_deploy_lock_break=e2e-other-run" in run.stdout
        hosts = recap(run.stdout)
        assert hosts and all(h["changed"] == 0 for h in hosts.values()), hosts
        # It never started: no start recorded for Prometheus, the other run's lock untouched.
        assert STARTED.read_text() == started_before
        assert json.loads(LOCK.read_text())["run"] == "e2e-other-run"
    finally:
        LOCK.unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("playbook", "args"),
    [
        ("scale.yml", ("-e", "service=trading", "-e", "instances=3")),
        ("restart.yml", ("-e", "container=gekko-trading-2")),
        ("runtime.yml", ("-e", '{"gekko_dynamic_config": {"log_level": "DEBUG"}}')),
    ],
)
def test_the_operator_playbooks_wait_for_a_deploy_too(playbook, args):
    """Scaling, restarting or changing settings while a deploy runs: refused, naming it."""
    plant_lock(controller="ci-elsewhere", pid=1)
    try:
        run = ansible_playbook(playbook, *args, "-e", "gekko_deploy_lock_wait=0")
        assert run.returncode != 0
        assert "is held by run e2e-other-run of deploy.yml by bob" in run.stdout, run.stdout[-3000:]
        hosts = recap(run.stdout)
        assert hosts and all(h["changed"] == 0 for h in hosts.values()), hosts
        assert json.loads(LOCK.read_text())["run"] == "e2e-other-run"
    finally:
        LOCK.unlink(missing_ok=True)


def test_second_deploy_reports_no_changes_and_takes_over_a_killed_runs_lock():
    # A run of this controller that was killed: its process is gone.
    killed = subprocess.Popen(["true"])
    killed.wait()
    plant_lock(controller=socket.gethostname(), pid=killed.pid)
    started = time.monotonic()
    run = ansible_playbook("deploy.yml")
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    hosts = recap(run.stdout)
    assert hosts and all(h["changed"] == 0 and h["failed"] == 0 for h in hosts.values()), hosts
    assert "GEKKO DEPLOYMENT SUMMARY" in run.stdout
    assert "WARNING: took over the deploy lock on localhost from run e2e-other-run" in run.stdout
    assert not LOCK.exists(), "the run releases its lock when it ends"
    print(f"no-op redeploy took {elapsed:.1f}s")


def test_a_deploy_short_of_disk_space_gives_back_what_it_can_then_fails_clearly():
    """EC-HW-003: a deploy whose builds would not fit removes dangling images, the build cache
    and application images of no kept release first, and then fails saying what it needs and
    has, before anything of the platform changed."""
    engine = docker.from_env()
    current = releases()["current"]
    # An application image of an old release (run by nothing), and a dangling image.
    old, _ = engine.images.build(
        fileobj=io.BytesIO(b"FROM gekko/base:bookworm\nRUN echo old > /old-release\n"),
        tag="gekko/app:e2e-old-release",
        rm=True,
    )
    dangling, _ = engine.images.build(
        fileobj=io.BytesIO(b"FROM gekko/base:bookworm\nRUN echo dangling > /dangling\n"), rm=True
    )
    before = platform_containers(engine)
    try:
        run = ansible_playbook(
            "deploy.yml", *APP_ONLY, "-e", "gekko_deploy_space_margin_mb=100000000"
        )
        assert run.returncode != 0
        # Validate estimated it before anything changed, and said what prepare would do.
        estimate = re.search(r"This deploy needs about .*?if that is not enough", run.stdout, re.S)
        assert estimate, run.stdout[-3000:]
        text = " ".join(estimate.group(0).split())
        assert "needs about 100000000 MiB on /var/lib (nothing to build, plus a" in text, text
        assert "MiB short. The prepare phase will first remove dangling images" in text, text
        message = re.search(
            r"Not enough disk space on localhost: .*?nothing of the platform", run.stdout, re.S
        )
        assert message, run.stdout[-3000:]
        text = " ".join(message.group(0).split())
        assert (
            "this deploy's builds need 100000000 MiB on /var/lib/docker (nothing to build, plus "
            "a 100000000 MiB margin)" in text
        ), text
        assert "after removing 1 old image(s), dangling images and the build cache" in text
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get(old.id)
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get(dangling.id)
        # The platform is as it was: its release, its images, its containers.
        assert releases()["current"]["id"] == current["id"]
        for ref in current["images"].values():
            engine.images.get(ref.split("@", 1)[0])
        assert platform_containers(engine) == before
    finally:
        # The failed run's lock: the next run of this controller takes it over (its process is
        # gone); removed here so the modules after this one start clean.
        LOCK.unlink(missing_ok=True)
        for image in (old, dangling):
            with contextlib.suppress(docker.errors.ImageNotFound):
                engine.images.remove(image.id, force=True)
