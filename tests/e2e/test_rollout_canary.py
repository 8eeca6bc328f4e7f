"""Canary rollouts under steady traffic: the first new instance of market_data takes its share
of the gateway's traffic for a window and is judged on its own server-error rate. A healthy
canary is promoted; one that fails too many requests is rolled back with the whole release.

These redeploy the stack, so they run after the read-only e2e tests (file order), and end with
the stack back on the default catalogue.
"""

import json
import re

from .conftest import ansible_playbook, register_users, wait_for_health
from .test_zero_downtime import CATALOGUE, SteadyTraffic

WINDOW_SECONDS = 20
# The rollout's actions as the deploy prints them (keys sorted).
CANARY = re.compile(
    r'"action": "canary-analysis",\s*"container": "[^"]+",\s*'
    r'"error_rate": ([0-9.]+),\s*"requests": (\d+)'
)


def canary_catalogue(**env) -> list[dict]:
    """market_data by canary; the other services the traffic reads roll two instances, so that
    only the canary's own errors could reach a client (signals is not in the traffic)."""
    catalogue = []
    for service in CATALOGUE:
        if service["name"] == "market_data":
            service = dict(service, instances=2, strategy="canary", env=env)
        elif service["name"] != "signals":
            service = dict(service, instances=2, strategy="rolling")
        catalogue.append(service)
    return catalogue


def deploy(tmp_path, mark, catalogue):
    extra = tmp_path / f"{mark}.json"
    settings = {
        "gekko_services": catalogue,
        "gekko_app_extra_env": {"GEKKO_ROLLOUT_MARK": mark},
        "gekko_canary_window_seconds": WINDOW_SECONDS,
    }
    extra.write_text(json.dumps(settings))
    return ansible_playbook("deploy.yml", "-e", f"@{extra}")


def canary_result(run) -> tuple[float, int]:
    match = CANARY.search(run.stdout)
    assert match, f"no canary analysis in the output:\n{run.stdout[-4000:]}"
    return float(match.group(1)), int(match.group(2))


def test_healthy_canary_is_promoted_and_bad_canary_rolled_back(tmp_path, gateway):
    users = register_users(gateway, 4, "cn")
    try:
        # A canary with no traffic proves nothing and fails, so every rollout here has traffic.
        with SteadyTraffic(users):
            setup = deploy(tmp_path, "canary-setup", canary_catalogue())
        assert setup.returncode == 0, setup.stdout[-4000:]
        wait_for_health(gateway)
        with SteadyTraffic(users) as traffic:
            good = deploy(tmp_path, "canary-good", canary_catalogue())
        assert good.returncode == 0, good.stdout[-4000:]
        rate, requests = canary_result(good)
        print(f"healthy canary: {requests} requests in {WINDOW_SECONDS}s, error rate {rate}")
        assert requests > 0 and rate <= 0.05
        assert traffic.failures == [], traffic.failures[:5]

        # Half of the new release's requests fail: the canary is judged and rolled back.
        with SteadyTraffic(users) as traffic:
            bad = deploy(tmp_path, "canary-bad", canary_catalogue(GEKKO_CHAOS_ERROR_RATE="0.5"))
        output = bad.stdout + bad.stderr
        assert bad.returncode != 0
        judged = re.search(
            r"canary gekko-market-data\S* served ([0-9.]+)% server errors over (\d+) requests",
            output,
        )
        assert judged, output[-4000:]
        print(f"bad canary: {judged.group(1)}% server errors over {judged.group(2)} requests")
        assert "The last good release was restored" in output
        # Retries on the healthy instance hide the canary's errors from clients.
        assert traffic.failures == [], traffic.failures[:5]
    finally:
        restore = ansible_playbook("deploy.yml")
        assert restore.returncode == 0, restore.stdout[-4000:]
        wait_for_health(gateway)
