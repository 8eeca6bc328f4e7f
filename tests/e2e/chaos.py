"""The chaos suite's harness: orders at a fixed rate through the gateway while one fault is
injected into the deployed stack, and what it cost (issue 14's table).

A client here behaves as a real one: each order carries its own Idempotency-Key and is tried
up to three times over 3.5 s with that same key (at 0, 1 and 2.5 s, each try given 1 s).
Acknowledged means a 201; an order that got none of its tries acknowledged failed. Afterwards
every acknowledged order must be in its user's history (none lost).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import docker
import httpx

from .conftest import GATEWAY

ORDER = {"symbol": "BTC-USD", "side": "buy", "quantity": 0.0001, "type": "market"}
TRY_AT_S = (0.0, 1.0, 2.5)  # three tries over 3.5 s, as the clients
TRY_TIMEOUT_S = 1.0
RATE_PER_S = 10.0
ROWS: list[dict] = []  # this run's table, printed at the end of the session (conftest)
BEFORE_S = 2.0  # steady orders before the fault
# After the fault ends: long enough to see recovery (the target is 5 s) and a quiet stretch.
AFTER_S = 8.0


@dataclass
class Order:
    started: float
    user: dict
    acked_at: float | None = None
    order_id: int | None = None
    answers: list[str] = field(default_factory=list)
    failed_tries_at: list[float] = field(default_factory=list)


@dataclass
class FaultRun:
    """One fault's figures; times are seconds from the fault's start."""

    name: str
    fault_s: float  # how long the fault lasted (until the part was back or restarted)
    orders: list[Order]
    extra: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[Order]:
        return [o for o in self.orders if o.acked_at is None]

    def recovered_s(self, fault_at: float) -> float:
        """From the fault's start until orders succeed again: the end of the last try that was
        not acknowledged (0 when every try was)."""
        failed_at = [t for o in self.orders for t in o.failed_tries_at]
        return max(failed_at) - fault_at if failed_at else 0.0

    def failed_answers(self) -> set[str]:
        """Every answer other than a 201 (status codes, or the client's exception names)."""
        return {a for o in self.orders for a in o.answers if a != "201"}

    def row(self, fault_at: float) -> dict:
        return {
            "fault": self.name,
            "fault_s": round(self.fault_s, 1),
            "orders": len(self.orders),
            "acknowledged": len(self.orders) - len(self.failed),
            "failed_after_retries": len(self.failed),
            "recovered_s": round(self.recovered_s(fault_at), 1),
            **self.extra,
        }


async def _place(client: httpx.AsyncClient, order: Order) -> None:
    key = f"chaos-{uuid.uuid4()}"
    for at in TRY_AT_S:
        delay = order.started + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            answer = await client.post(
                "/api/v1/trading/execute",
                headers={**order.user["headers"], "Idempotency-Key": key},
                json=ORDER,
                timeout=TRY_TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            order.answers.append(type(exc).__name__)
            order.failed_tries_at.append(time.monotonic())
            continue
        # A 503 must say when to retry: one without Retry-After is recorded as "503!".
        bare_503 = answer.status_code == 503 and "retry-after" not in answer.headers
        order.answers.append(f"{answer.status_code}{'!' if bare_503 else ''}")
        if answer.status_code != 201:
            order.failed_tries_at.append(time.monotonic())
        else:
            order.acked_at = time.monotonic()
            order.order_id = answer.json()["id"]
            order.user["acked"].append(order.order_id)
            return


async def _orders(users: list[dict], until: Callable[[], bool]) -> list[Order]:
    """Orders at RATE_PER_S, spread over `users` (each well inside its rate limit), until
    `until()`; returns them once every one has its answer."""
    orders: list[Order] = []
    tasks: list[asyncio.Task] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=GATEWAY, limits=limits) as client:
        n = 0
        start = time.monotonic()
        while not until():
            order = Order(started=time.monotonic(), user=users[n % len(users)])
            orders.append(order)
            tasks.append(asyncio.create_task(_place(client, order)))
            n += 1
            await asyncio.sleep(max(0.0, start + n / RATE_PER_S - time.monotonic()))
        await asyncio.gather(*tasks)
    return orders


async def _drive(users: list[dict], fault: Callable[[], dict]) -> tuple[list[Order], float, dict]:
    done = asyncio.Event()
    runner = asyncio.create_task(_orders(users, done.is_set))
    await asyncio.sleep(BEFORE_S)
    fault_at = time.monotonic()
    extra = await asyncio.to_thread(fault)
    await asyncio.sleep(AFTER_S)
    done.set()
    return await runner, fault_at, extra


def run_fault(name: str, users: list[dict], fault: Callable[[], dict]) -> tuple[FaultRun, dict]:
    """Orders before, during and after `fault()` (which returns once the fault is over, with
    {"fault_s": ..., and any figures of its own}); returns the run and its table row."""
    orders, fault_at, extra = asyncio.run(_drive(users, fault))
    run = FaultRun(name, extra.pop("fault_s"), orders, extra)
    return run, run.row(fault_at)


# -- faults ---------------------------------------------------------------------------------


def engine() -> docker.DockerClient:
    return docker.from_env()


def running_container(service: str) -> str:
    """The name of the running container of a single-instance service (blue-green moves the
    gateway between two names)."""
    found = engine().containers.list(filters={"label": f"gekko.platform/service={service}"})
    assert len(found) == 1, [c.name for c in found]
    return found[0].name


def stop_for(container: str, seconds: float) -> Callable[[], dict]:
    """Stop a container (as `docker stop` does: SIGTERM, then SIGKILL), start it again
    `seconds` after the stop began."""

    def fault() -> dict:
        target = engine().containers.get(container)
        began = time.monotonic()
        target.stop(timeout=5)
        time.sleep(max(0.0, began + seconds - time.monotonic()))
        target.start()
        return {"fault_s": time.monotonic() - began}

    return fault


def crash(
    container: str, serving: Callable[[], bool], within_s: float = 30.0
) -> Callable[[], dict]:
    """SIGKILL a container's main process from the host, as a crash would (not `docker kill`,
    which the engine takes for an operator's stop and does not restart); returns when
    `serving()` says it serves again, with the time that took."""

    def fault() -> dict:
        target = engine().containers.get(container)
        started_at = target.attrs["State"]["StartedAt"]
        began = time.monotonic()
        os.kill(target.attrs["State"]["Pid"], signal.SIGKILL)
        deadline = began + within_s
        while time.monotonic() < deadline:
            target.reload()
            restarted = target.attrs["State"]["StartedAt"] != started_at
            if restarted and target.status == "running" and serving():
                took = time.monotonic() - began
                return {"fault_s": took, "serving_again_s": round(took, 1)}
            time.sleep(0.1)
        raise AssertionError(f"{container} was not serving again {within_s:.0f} s after a crash")

    return fault


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table (the issue's and docs/benchmarks.md's shape)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
