"""A trader's client on the lab's controller: run there (`lab.py controller -- python client.py`),
the only place that reaches the lab's addresses. Prints one JSON document.

    client.py smoke                 register, log in, buy, read the order back
    client.py services              the gateway's view of the service instances
    client.py traffic --result F    steady reads and orders until F.stop appears, then checks that
                                    every acknowledged order is stored; the outcome goes to F
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

# The lab deploys with TLS on: the gateway's listener serves TLS 1.3 only, with a certificate
# from the environment's internal CA, which the controller keeps.
GATEWAY = "https://10.77.0.13:8000"
CA_FILE = str(Path.home() / ".gekko/ca/staging/ca.crt")
ORDER = {"symbol": "BTC-USD", "side": "buy", "quantity": 0.0001, "type": "market"}
READS = ("/api/v1/market-data/quotes/BTC-USD", "/api/v1/portfolio", "/api/v1/users/me")


def new_user(client: httpx.Client, prefix: str) -> dict:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    password = "pw-" + uuid.uuid4().hex
    created = client.post(
        "/api/v1/users/register",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    created.raise_for_status()
    login = client.post("/api/v1/users/login", json={"username": name, "password": password})
    login.raise_for_status()
    return {"headers": {"Authorization": f"Bearer {login.json()['access_token']}"}, "acked": []}


def stored_orders(client: httpx.Client, user: dict) -> list[int]:
    """Every order in the user's history, page by page (newest first)."""
    ids: list[int] = []
    while True:
        params = {"limit": 500, **({"before": ids[-1]} if ids else {})}
        listed = client.get("/api/v1/trading/orders", params=params, headers=user["headers"])
        listed.raise_for_status()
        page = [order["id"] for order in listed.json()["orders"]]
        if not page:
            return ids
        if ids and page[0] >= ids[-1]:
            raise RuntimeError("the order history repeated a page")
        ids += page


def smoke(client: httpx.Client) -> dict:
    user = new_user(client, "lab-smoke")
    placed = client.post(
        "/api/v1/trading/execute",
        headers={**user["headers"], "Idempotency-Key": str(uuid.uuid4())},
        json=ORDER,
    )
    return {
        "status": placed.status_code,
        "order": placed.json(),
        "stored": stored_orders(client, user),
    }


class Traffic:
    """Each user reads and places orders at about 2 requests/s, a new connection each. An order
    that fails is retried with the same Idempotency-Key (`retries` more tries, 1 s apart), as a
    careful client does. `attempts_failed` counts every failed try, `failed` what failed for
    good."""

    def __init__(self, users: list[dict], retries: int):
        self.users = users
        self.retries = retries
        self.outcomes: Counter = Counter()
        self.attempts_failed: list[str] = []
        self.failed: list[str] = []
        self.stop = threading.Event()

    def attempt(self, user: dict, n: int, key: str) -> httpx.Response:
        headers = {**user["headers"], "Connection": "close"}
        if n % 3 == 2:
            return httpx.post(
                GATEWAY + "/api/v1/trading/execute",
                headers={**headers, "Idempotency-Key": key},
                json=ORDER,
                timeout=10,
                verify=CA_FILE,
            )
        return httpx.get(
            GATEWAY + READS[n % len(READS)], headers=headers, timeout=10, verify=CA_FILE
        )

    def request(self, user: dict, n: int) -> None:
        key = f"lab-{uuid.uuid4()}"
        for _ in range(1 + self.retries):
            started = time.monotonic()
            try:
                response = self.attempt(user, n, key)
                self.outcomes[response.status_code] += 1
                if response.status_code in (200, 201):
                    if n % 3 == 2:
                        user["acked"].append(response.json()["id"])
                    return
                outcome = f"{response.status_code} {response.text[:160]}"
            except httpx.HTTPError as exc:
                self.outcomes["error"] += 1
                outcome = repr(exc)
            self.attempts_failed.append(f"{time.time():.1f} {outcome}")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        self.failed.append(outcome)

    def run(self, user: dict) -> None:
        n = 0
        while not self.stop.is_set():
            self.request(user, n)
            n += 1
            time.sleep(0.5)


def traffic(client: httpx.Client, result: Path, users: int, retries: int, limit: float) -> dict:
    people = [new_user(client, "lab-load") for _ in range(users)]
    load = Traffic(people, retries)
    threads = [threading.Thread(target=load.run, args=(u,), daemon=True) for u in people]
    for thread in threads:
        thread.start()
    result.with_suffix(".started").touch()
    deadline = time.monotonic() + limit
    while not result.with_suffix(".stop").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    load.stop.set()
    for thread in threads:
        thread.join(timeout=40)
    acked = [order for user in people for order in user["acked"]]
    stored = [order for user in people for order in stored_orders(client, user)]
    return {
        "outcomes": dict(load.outcomes),
        "attempts_failed": load.attempts_failed,
        "failed": load.failed,
        "acked": len(acked),
        "lost": sorted(set(acked) - set(stored)),
        "unexpected": sorted(set(stored) - set(acked)),
        "stopped_by": "deadline" if time.monotonic() >= deadline else "stop file",
    }


def monitor(client: httpx.Client, tries: int = 4) -> dict[str, str]:
    """The deploy's viewer account: /services is for viewers, operators and admins (the last
    two need a second factor). Its password is the lab's GEKKO_MONITOR_PASSWORD, exported to
    every controller command. A sign-in is safe to repeat, so one that meets a host just cut
    off (the gateway answers 5xx until it takes that host out of rotation) is tried again."""
    body = {"username": "monitor", "password": os.environ["GEKKO_MONITOR_PASSWORD"]}
    for attempt in range(tries):
        try:
            login = client.post("/api/v1/users/login", json=body)
            if login.status_code < 500 or attempt == tries - 1:
                break
        except httpx.TransportError:
            if attempt == tries - 1:
                raise
        time.sleep(1)
    login.raise_for_status()
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["smoke", "services", "traffic"])
    parser.add_argument("--result", type=Path)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--retries", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args()
    with httpx.Client(base_url=GATEWAY, timeout=10, verify=CA_FILE) as client:
        if args.command == "smoke":
            print(json.dumps(smoke(client)))
        elif args.command == "services":
            print(json.dumps(client.get("/services", headers=monitor(client)).json()))
        else:
            outcome = traffic(client, args.result, args.users, args.retries, args.max_seconds)
            args.result.write_text(json.dumps(outcome))


if __name__ == "__main__":
    main()
