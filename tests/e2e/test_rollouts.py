"""Rollouts of the deployed stack under steady traffic that reads and places orders: one deploy
that rolls some services, switches others blue-green and promotes a canary, a canary rolled back,
and the operator playbooks (rollback, restart, scale). None may fail a client request or lose an
acknowledged order.

They run on the stack as deployed, whose order path (users, market data, trading, portfolio) is
redundant by default (gekko_order_path_min_instances: 2, two instances of each); should it not
be (an inventory that lowered it), the module deploys it so first. The tests run in file order
on that stack and leave it so.
"""

import json
import re
from collections import Counter

import pytest
import yaml

from .conftest import (
    APP_ONLY,
    REPO,
    ansible_playbook,
    prometheus_targets,
    register_users,
    wait_for_health,
    wait_until,
)
from .rollout import (
    SteadyTraffic,
    assert_runs_release,
    orders_kept,
    releases,
    running_containers,
)

CATALOGUE = yaml.safe_load((REPO / "roles/common/defaults/main.yml").read_text())["gekko_services"]
ORDER_PATH = {"users", "market_data", "trading", "portfolio"}
CANARY_WINDOW = 20
# The rollout's actions as the deploy prints them (keys sorted).
CANARY = re.compile(
    r'"action": "canary-analysis",\s*"container": "[^"]+",\s*'
    r'"error_rate": ([0-9.]+),\s*"requests": (\d+),\s*"service": "[^"]+",\s*'
    r'"verdict": "([a-z-]+)"'
)


def with_strategies(
    market_data: dict | None = None, blue_green: frozenset = frozenset()
) -> list[dict]:
    """The inventory's catalogue, every service rolling but those in `blue_green`; `market_data`
    overrides that service's entry (a canary, its settings)."""
    catalogue = []
    for service in CATALOGUE:
        strategy = "blue_green" if service["name"] in blue_green else "rolling"
        service = dict(service, strategy=strategy)
        if service["name"] == "market_data":
            service.update(market_data or {})
        catalogue.append(service)
    return catalogue


def deploy(tmp_path, mark: str, catalogue: list[dict], every_container: bool = True):
    """A deploy of `catalogue`; with `every_container`, a new setting in app.env (the mark)
    changes every container too."""
    settings = {
        "gekko_services": catalogue,
        "gekko_order_path_min_instances": 2,  # the default, whatever the inventory says
        "gekko_canary_window_seconds": CANARY_WINDOW,
        # The crash watch after a rollout is the rollback tests' concern.
        "gekko_settle_seconds": 2,
    }
    if every_container:
        settings["gekko_app_extra_env"] = {"GEKKO_ROLLOUT_MARK": mark}
    extra = tmp_path / f"{mark}.json"
    extra.write_text(json.dumps(settings))
    return ansible_playbook("deploy.yml", *APP_ONLY, "-e", f"@{extra}")


def marks() -> set[str]:
    """The GEKKO_ROLLOUT_MARK of every running application container."""
    return {
        next((e.split("=", 1)[1] for e in c["env"] if e.startswith("GEKKO_ROLLOUT_MARK=")), "")
        for c in running_containers().values()
    }


@pytest.fixture(scope="module")
def users(gateway, tmp_path_factory):
    """Four traders on the stack with a redundant order path."""

    def redundant() -> bool:
        per_service = Counter(
            c["service"]
            for c in running_containers().values()
            if c["status"] == "running" and c["health"] == "healthy"
        )
        return {s: per_service[s] for s in ORDER_PATH} == dict.fromkeys(ORDER_PATH, 2)

    if not redundant():  # an inventory that lowered gekko_order_path_min_instances
        setup = deploy(tmp_path_factory.mktemp("setup"), "setup", with_strategies())
        assert setup.returncode == 0, setup.stdout[-4000:]
        assert redundant(), running_containers()
    wait_for_health(gateway)
    return register_users(gateway, 4, "ro")


# One deploy proves the three strategies (a deploy each took about 2 minutes): these services
# switch blue-green, market data's first new instance is a canary, the others roll.
BLUE_GREEN = frozenset({"users", "portfolio", "social", "signals"})


def test_rolling_blue_green_and_canary_deploy_replaces_every_instance(tmp_path, gateway, users):
    """Rolled services are replaced instance by instance; blue-green ones start a whole new set
    beside the old and switch to it; market data's first new instance is a canary, judged on
    the traffic it served before the others follow."""
    catalogue = with_strategies(market_data={"strategy": "canary"}, blue_green=BLUE_GREEN)
    before = running_containers()
    with SteadyTraffic(users) as traffic:
        run = deploy(tmp_path, "rolling", catalogue)
    assert run.returncode == 0, run.stdout[-4000:]
    rate, requests, verdict = canary_result(run)
    print(f"healthy canary: {requests} requests, error rate {rate}, {verdict}")
    assert verdict == "pass" and requests >= 20 and rate <= 0.05
    traffic.assert_clean("rolling, blue-green and a canary")
    assert marks() == {"rolling"}, "every instance runs the new configuration"
    after = running_containers()

    # The gateway always switches blue-green (roles/app_services/vars/main.yml).
    switching = BLUE_GREEN | {"gateway"}

    def names(found: dict, blue_green: bool) -> set[str]:
        return {n for n, c in found.items() if (c["service"] in switching) == blue_green}

    # Rolled: the same instances, each started anew. Blue-green: the same number of instances,
    # all in the other colour's containers (the old set is gone).
    rolled = names(before, False)
    assert names(after, False) == rolled
    assert all(after[n]["started"] > before[n]["started"] for n in rolled)
    switched_from, switched_to = names(before, True), names(after, True)
    assert len(switched_to) == len(switched_from) and not switched_to & switched_from
    assert {after[n]["service"] for n in switched_to} == switching
    print(f"rollout: {orders_kept(gateway, users)} acknowledged orders kept")


def test_rollback_playbook_restores_the_previous_release(gateway, users):
    state = releases()
    previous = state["previous"]
    assert previous and previous["id"] != state["current"]["id"], "no other release to go back to"
    with SteadyTraffic(users) as traffic:
        run = ansible_playbook("rollback.yml")
    assert run.returncode == 0, run.stdout[-4000:]
    traffic.assert_clean("rollback.yml")
    assert releases()["current"]["id"] == previous["id"]
    assert_runs_release(previous)  # its images, containers and app.env (with its rollout mark)
    print(re.search(r"rolled back and verified in [0-9.]+ s", run.stdout).group(0))
    orders_kept(gateway, users)


def test_restart_playbook_restarts_one_instance_without_a_failed_request(gateway, users):
    before = running_containers()
    with SteadyTraffic(users) as traffic:
        run = ansible_playbook("restart.yml", "-e", "container=gekko-trading-2")
    assert run.returncode == 0, run.stdout[-4000:]
    traffic.assert_clean("restart.yml")
    after = running_containers()
    assert after["gekko-trading-2"]["started"] > before["gekko-trading-2"]["started"]
    unchanged = {n: c for n, c in before.items() if n != "gekko-trading-2"}
    assert {n: c for n, c in after.items() if n != "gekko-trading-2"} == unchanged, (
        "only the named instance restarts"
    )
    assert after["gekko-trading-2"]["spec"] == before["gekko-trading-2"]["spec"]
    orders_kept(gateway, users)


def not_trading() -> dict[str, tuple]:
    """Every other container: its image, spec and start time."""
    return {
        name: (c["image"], c["spec"], c["started"])
        for name, c in running_containers().items()
        if c["service"] != "trading"
    }


def scraped_trading() -> set[str]:
    return {
        t["labels"]["container"]
        for t in prometheus_targets("services")
        if t["labels"]["service"] == "trading"
    }


def test_scale_playbook_adds_and_removes_instances(gateway, users, monitor):
    def healthy_trading() -> int:
        listed = gateway.get("/services", headers=monitor).json()["services"]["trading"]
        return sum(1 for i in listed if i["source"] == "redis" and i["health"] == "ok")

    others = not_trading()
    with SteadyTraffic(users) as traffic:
        up = ansible_playbook("scale.yml", "-e", "service=trading", "-e", "instances=3")
        assert up.returncode == 0, up.stdout[-4000:]
        assert "gekko-trading-3" in running_containers()
        wait_until(lambda: healthy_trading() == 3, "three healthy trading instances")
        # Prometheus follows: the new instance is a target of its own (file service discovery).
        wait_until(
            lambda: "gekko-trading-3" in scraped_trading(), "Prometheus to find the third instance"
        )
        down = ansible_playbook("scale.yml", "-e", "service=trading", "-e", "instances=2")
        assert down.returncode == 0, down.stdout[-4000:]
    traffic.assert_clean("scale.yml 2 -> 3 -> 2")
    assert "gekko-trading-3" not in running_containers()
    wait_until(lambda: healthy_trading() == 2, "two healthy trading instances")
    wait_until(
        lambda: scraped_trading() == {"gekko-trading", "gekko-trading-2"},
        "Prometheus to drop the third instance",
    )
    # Scaling trading touches nothing else: the other services keep their two-instance shape.
    assert not_trading() == others
    assert_runs_release(releases()["current"])
    orders_kept(gateway, users)


def canary_result(run) -> tuple[float, int, str]:
    match = CANARY.search(run.stdout)
    assert match, f"no canary analysis in the output:\n{run.stdout[-4000:]}"
    return float(match.group(1)), int(match.group(2)), match.group(3)


def test_canary_serving_errors_is_rolled_back_with_the_release(tmp_path, gateway, users):
    last_good = releases()["current"]
    bad = with_strategies(
        market_data={"strategy": "canary", "env": {"GEKKO_CHAOS_ERROR_RATE": "0.5"}}
    )
    # Only market data changes: its canary is the release's first new instance either way.
    with SteadyTraffic(users) as traffic:
        run = deploy(tmp_path, "canary-bad", bad, every_container=False)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    judged = re.search(
        r"canary gekko-market-data\S* served ([0-9.]+)% server errors over (\d+) requests", output
    )
    assert judged, output[-4000:]
    print(f"bad canary: {judged.group(1)}% server errors over {judged.group(2)} requests")
    assert float(judged.group(1)) > 5
    assert "The last good release was restored" in output
    # The gateway retried the canary's failures on the healthy instance: clients saw none.
    traffic.assert_clean("bad canary")
    assert releases()["current"]["id"] == last_good["id"]
    assert_runs_release(last_good)
    orders_kept(gateway, users)
