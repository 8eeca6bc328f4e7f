"""Central logs: a request's lines from the gateway and the service it reached arrive in the
store on the logs host (here: this machine) under /var/log/gekko/<host>/<container>.log, and
`gekko logs --correlation-id` follows it; a store that is down blocks no container and loses
nothing the relay queued meanwhile.

Runs among the modules that change the stack (conftest.REDEPLOY_ORDER): it stops the store.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import docker

from .conftest import REPO, wait_until

STORE = Path("/var/log/gekko/localhost")
QUOTE = "/api/v1/market-data/quotes/BTC-USD"


def lines_with(correlation_id: str, container: str) -> list[dict]:
    """The stored lines of `container` (either blue-green slot: gekko-gateway, -green)."""
    found = []
    for path in STORE.glob(f"{container}*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if correlation_id in line:
                found.append(json.loads(line[line.index("{") :]))
    return found


def test_a_request_is_followed_across_the_gateway_and_the_service(gateway):
    correlation_id = f"e2e-{uuid.uuid4()}"
    answer = gateway.get(QUOTE, headers={"X-Correlation-ID": correlation_id})
    assert answer.status_code == 200, answer.text
    for container in ("gekko-gateway", "gekko-market-data"):
        (line,) = wait_until(
            lambda c=container: lines_with(correlation_id, c), f"{container}'s line", 30, 1
        )
        assert line["correlation_id"] == correlation_id and line["status"] == 200
    followed = subprocess.run(
        [str(REPO / ".venv/bin/gekko"), "logs", "--correlation-id", correlation_id],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "gekko-gateway" in followed and "gekko-market-data" in followed, followed


def test_a_store_that_is_down_blocks_no_container_and_loses_nothing(gateway):
    engine = docker.from_env()
    store = engine.containers.get("gekko-log-store")
    service = engine.containers.get("gekko-social")
    store.stop(timeout=5)
    try:
        # A container starts and logs while the store is away.
        service.restart(timeout=10)
        wait_until(
            lambda: (service.reload() or service.attrs["State"]["Health"]["Status"]) == "healthy",
            "social healthy with the store down",
            90,
            2,
        )
        correlation_id = f"e2e-{uuid.uuid4()}"
        answer = gateway.get(QUOTE, headers={"X-Correlation-ID": correlation_id})
        assert answer.status_code == 200
    finally:
        store.start()
    # What the relay queued on disk meanwhile arrives once the store is back.
    wait_until(lambda: lines_with(correlation_id, "gekko-gateway"), "the queued line", 60, 1)
