"""A 60-service catalogue deploys in dependency order, and a second run changes nothing."""

import time

import docker

from .conftest import ansible_playbook

PLAYBOOK = "../tests/e2e/playbooks/synthetic_catalogue.yml"


def started_at(engine) -> dict[str, str]:
    return {
        c.name: c.attrs["State"]["StartedAt"]
        for c in engine.containers.list(filters={"label": "gekko.platform/set=synthetic"})
    }


def test_sixty_services_start_in_dependency_order_and_redeploy_is_a_noop():
    engine = docker.from_env()
    try:
        begun = time.monotonic()
        run = ansible_playbook(PLAYBOOK)
        elapsed = time.monotonic() - begun
        assert run.returncode == 0, run.stdout[-3000:]
        started = started_at(engine)
        assert len(started) == 60
        for i in range(1, 60):
            child, parent = f"gekko-syn-{i:02d}", f"gekko-syn-{(i - 1) // 2:02d}"
            assert started[child] > started[parent], f"{child} started before {parent}"
        print(f"60 services deployed in {elapsed:.1f}s")

        again = ansible_playbook(PLAYBOOK)
        assert again.returncode == 0
        assert "changed=0" in again.stdout
        assert started_at(engine) == started
    finally:
        cleanup = ansible_playbook(PLAYBOOK, "-e", "state=absent")
        assert cleanup.returncode == 0, cleanup.stdout[-2000:]
        assert started_at(engine) == {}
        # 60 containers and their health checks load this 2-core machine; let the platform's
        # own health checks catch up before the next test looks at them.
        deadline = time.monotonic() + 90
        while any(
            c.attrs["State"]["Health"]["Status"] != "healthy"
            for c in engine.containers.list(filters={"label": "gekko.platform/set"})
        ):
            assert time.monotonic() < deadline, "platform containers did not recover"
            time.sleep(2)
