"""Helpers for the e2e tests that change the running stack: steady client traffic that also
places orders, and checks that what runs is exactly a recorded release."""

import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import docker
import httpx

from .conftest import GATEWAY

RELEASES = Path("/var/lib/gekko/releases.json")
CONFIG_ARCHIVE = Path("/var/lib/gekko/config")
APP_ENV = Path("/etc/gekko/app.env")
DEPLOYMENT = "gekko"


class SteadyTraffic:
    """Users reading and placing market orders through the gateway while a rollout runs.

    Each user sends about 2 requests/s (inside the 200/min limit), a new connection each; every
    third request is an order with its own Idempotency-Key, so the gateway may retry it on another
    instance but never fills it twice. Acknowledged order ids are appended to user["acked"], to
    be checked against the order history afterwards (orders_kept).
    """

    READS = (
        "/api/v1/market-data/quotes/BTC-USD",
        "/api/v1/portfolio",
        "/api/v1/market-data/quotes/ETH-USD",
        "/api/v1/users/me",
    )

    def __init__(self, users: list[dict], orders: bool = True):
        self.users = users
        self.orders = orders
        self.stop = threading.Event()
        self.outcomes: Counter = Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(u,), daemon=True) for u in users]

    def request(self, user: dict, n: int) -> httpx.Response:
        headers = {**user["headers"], "Connection": "close"}
        if self.orders and n % 3 == 2:
            response = httpx.post(
                GATEWAY + "/api/v1/trading/execute",
                headers={**headers, "Idempotency-Key": f"rollout-{uuid.uuid4()}"},
                json={"symbol": "BTC-USD", "side": "buy", "quantity": 0.0001, "type": "market"},
                timeout=10,
            )
            if response.status_code == 201:
                user["acked"].append(response.json()["id"])
            return response
        return httpx.get(GATEWAY + self.READS[n % len(self.READS)], headers=headers, timeout=10)

    def run(self, user: dict) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                response = self.request(user, n)
                self.outcomes[response.status_code] += 1
                if response.status_code not in (200, 201):
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                self.outcomes["error"] += 1
                self.failures.append(repr(exc))
            n += 1
            time.sleep(0.5)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        time.sleep(1)  # traffic is flowing before the rollout starts
        return self

    def __exit__(self, *exc):
        time.sleep(1)  # and after it ended
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def assert_clean(self, what: str, at_least: int = 30) -> None:
        served = sum(v for k, v in self.outcomes.items() if k != "error")
        print(f"{what}: {dict(self.outcomes)}")
        assert served >= at_least, f"{what}: too little traffic to prove anything: {self.outcomes}"
        assert self.failures == [], f"{what}: {self.failures[:10]}"


def order_history(gateway: httpx.Client, headers: dict) -> list[int]:
    """The ids of every order in a user's history, page by page (newest first)."""
    ids: list[int] = []
    while True:
        params = {"limit": 500, **({"before": ids[-1]} if ids else {})}
        listed = gateway.get("/api/v1/trading/orders", params=params, headers=headers)
        assert listed.status_code == 200, listed.text
        page = [o["id"] for o in listed.json()["orders"]]
        if not page:
            return ids
        assert not ids or page[0] < ids[-1], "a page must start after the previous one"
        ids += page


def orders_kept(gateway: httpx.Client, users: list[dict]) -> int:
    """Every order acknowledged to a user is in their history, once; returns how many."""
    for user in users:
        stored = order_history(gateway, user["headers"])
        lost, unexpected = set(user["acked"]) - set(stored), set(stored) - set(user["acked"])
        assert sorted(stored) == sorted(user["acked"]), (
            f"acknowledged {len(user['acked'])} orders, stored {len(stored)}: "
            f"lost {lost}, unexpected {unexpected}"
        )
    return sum(len(u["acked"]) for u in users)


def releases() -> dict:
    return json.loads(RELEASES.read_text())


def running_containers() -> dict[str, dict]:
    """The deployment's application containers: name -> image id, spec hash, state."""
    engine = docker.from_env()
    found = engine.containers.list(
        all=True,
        filters={"label": ["gekko.platform/set", f"gekko.platform/deployment={DEPLOYMENT}"]},
    )
    return {
        c.name: {
            "image": c.attrs["Image"],
            "spec": c.labels.get("gekko.platform/spec"),
            "service": c.labels.get("gekko.platform/service"),
            "status": c.status,
            "started": c.attrs["State"]["StartedAt"],
            "health": (c.attrs["State"].get("Health") or {}).get("Status"),
            "env": c.attrs["Config"]["Env"],
        }
        for c in found
    }


def env_lines(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")
    return dict(pairs)


def assert_runs_release(release: dict) -> None:
    """What runs is the release as recorded in releases.json: one healthy container per recorded
    spec with the recorded image id and the release's configuration, nothing else, and
    /etc/gekko/app.env is the release's file."""
    # "ref@id" for the images the release built (the datastore's is recorded by reference).
    image_ids = dict(v.split("@", 1) for v in release["images"].values() if "@" in v)
    config = (CONFIG_ARCHIVE / f"app.env.{release['config_checksums']['app.env']}").read_text()
    checksum = hashlib.sha1(APP_ENV.read_bytes()).hexdigest()  # noqa: S324 - Ansible's checksum
    assert checksum == release["config_checksums"]["app.env"], "app.env is not the release's"
    running = running_containers()
    recorded = [spec for specs in release["container_sets"].values() for spec in specs]
    assert len(running) == len(recorded), (sorted(running), [s["name"] for s in recorded])
    for spec in recorded:
        # A blue-green service may run in its second slot.
        name = spec["name"] if spec["name"] in running else spec["name"] + "-green"
        assert name in running, f"{spec['name']} of the release does not run"
        container = running[name]
        assert container["status"] == "running" and container["health"] == "healthy", name
        assert container["image"] == image_ids[spec["image"]], f"{name} runs another image"
        env = env_lines("\n".join(container["env"]))
        for key, value in env_lines(config).items():
            if key not in spec["env"]:
                assert env.get(key) == value, f"{name}: {key} is not the release's value"
