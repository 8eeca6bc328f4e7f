"""SIGUSR1 drains an instance before the deployment stops it (zero-downtime replacement)."""

import signal

import httpx

from .conftest import LOOPBACK, eventually


def test_sigusr1_leaves_the_registry_fails_health_and_keeps_serving(stack):
    port = stack.start("market-data-drain", "market_data", GEKKO_INSTANCE_ID="md-drain")
    base = f"http://{LOOPBACK}:{port}"
    try:
        eventually(lambda: httpx.get(f"{base}/health").status_code == 200, 30, "instance healthy")

        def registered() -> bool:
            services = httpx.get(f"{stack.gateway}/services").json()["services"]
            return any(i["instance_id"] == "md-drain" for i in services["market_data"])

        eventually(registered, 15, "instance registered in discovery")

        stack.procs["market-data-drain"].send_signal(signal.SIGUSR1)

        eventually(lambda: not registered(), 5, "instance gone from discovery after SIGUSR1")
        health = httpx.get(f"{base}/health")
        assert health.status_code == 503
        assert health.json()["status"] == "draining"
        # Requests already routed to it still succeed while it drains.
        quote = httpx.get(f"{base}/api/v1/market-data/quotes/BTC-USD")
        assert quote.status_code == 200
        assert stack.procs["market-data-drain"].poll() is None
    finally:
        stack.stop("market-data-drain")
