"""Steady traffic through the gateway during a rolling and a blue-green deploy: zero failures.

Each deploy changes every container (a new setting in app.env), so every service and the
gateway are replaced while four users keep trading-platform reads going.
"""

import json
import threading
import time
from collections import Counter

import httpx
import yaml

from .conftest import GATEWAY, REPO, ansible_playbook, register_users, wait_for_health

CATALOGUE = yaml.safe_load((REPO / "roles/common/defaults/main.yml").read_text())["gekko_services"]


class SteadyTraffic:
    """Four users at ~2 requests/s each (inside the 200/min limit), a new connection each."""

    def __init__(self, users):
        self.users = users
        self.stop = threading.Event()
        self.outcomes: Counter = Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(u,), daemon=True) for u in users]

    def run(self, user):
        paths = [
            "/api/v1/market-data/quotes/BTC-USD",
            "/api/v1/portfolio",
            "/api/v1/trading/orders",
            "/api/v1/users/me",
        ]
        n = 0
        while not self.stop.is_set():
            path = paths[n % len(paths)]
            n += 1
            try:
                response = httpx.get(
                    GATEWAY + path, headers={**user, "Connection": "close"}, timeout=10
                )
                self.outcomes[response.status_code] += 1
                if response.status_code >= 500:
                    self.failures.append(f"{path}: {response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                self.outcomes["error"] += 1
                self.failures.append(f"{path}: {exc!r}")
            time.sleep(0.5)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


def deploy(tmp_path, catalogue, mark):
    extra = tmp_path / f"{mark}.json"
    extra.write_text(
        json.dumps(
            {"gekko_services": catalogue, "gekko_app_extra_env": {"GEKKO_ROLLOUT_MARK": mark}}
        )
    )
    return ansible_playbook("deploy.yml", "-e", f"@{extra}")


def rollout_under_traffic(tmp_path, gateway, catalogue, mark):
    # First bring the stack to the shape under test, then change everything under traffic.
    assert deploy(tmp_path, catalogue, mark + "-setup").returncode == 0
    wait_for_health(gateway)
    with SteadyTraffic(register_users(gateway, 4, "zd")) as traffic:
        time.sleep(2)
        run = deploy(tmp_path, catalogue, mark)
        time.sleep(2)
    assert run.returncode == 0, run.stdout[-3000:]
    served = sum(v for k, v in traffic.outcomes.items() if k != "error")
    print(f"{mark}: {dict(traffic.outcomes)}")
    assert served > 50, traffic.outcomes
    assert traffic.failures == [], traffic.failures[:10]
    assert set(traffic.outcomes) <= {200}, traffic.outcomes


def test_rolling_deploy_of_two_instances_per_service_drops_no_request(tmp_path, gateway):
    catalogue = [dict(s, instances=2, strategy="rolling") for s in CATALOGUE]
    rollout_under_traffic(tmp_path, gateway, catalogue, "rolling")


def test_blue_green_deploy_drops_no_request(tmp_path, gateway):
    catalogue = [dict(s, strategy="blue_green") for s in CATALOGUE]
    try:
        rollout_under_traffic(tmp_path, gateway, catalogue, "blue-green")
    finally:
        # Back to the inventory's own catalogue for the tests after this one.
        assert ansible_playbook("deploy.yml").returncode == 0
        wait_for_health(gateway)
