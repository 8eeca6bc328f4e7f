"""A second deploy of what stands reports no change: every task is idempotent.

It runs on the stack the fresh deploy stood up, the first of the modules that run playbooks
(conftest.REDEPLOY_ORDER), so in `make test` beside the checks rather than in the late part."""

import time

from .conftest import ansible_playbook, recap


def test_second_deploy_reports_no_changes():
    started = time.monotonic()
    run = ansible_playbook("deploy.yml")
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    hosts = recap(run.stdout)
    assert hosts and all(h["changed"] == 0 and h["failed"] == 0 for h in hosts.values()), hosts
    assert "GEKKO DEPLOYMENT SUMMARY" in run.stdout
    print(f"no-op redeploy took {elapsed:.1f}s")
