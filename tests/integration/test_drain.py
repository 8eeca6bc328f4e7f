"""SIGUSR1 drains an instance before the deployment stops it (zero-downtime replacement)."""

import signal

import httpx
import pytest

from .conftest import LOOPBACK, OPS, eventually


def test_sigusr1_leaves_the_registry_stops_accepting_and_finishes_open_connections(stack):
    port = stack.start("market-data-drain", "market_data", GEKKO_INSTANCE_ID="md-drain")
    base = f"http://{LOOPBACK}:{port}"
    try:
        eventually(lambda: httpx.get(f"{base}/health").status_code == 200, 30, "instance healthy")

        def registered() -> bool:
            services = httpx.get(f"{stack.gateway}/services", headers=OPS).json()["services"]
            return any(i["instance_id"] == "md-drain" for i in services["market_data"])

        eventually(registered, 15, "instance registered in discovery")
        with httpx.Client(base_url=base) as open_connection:
            assert open_connection.get("/health").status_code == 200

            stack.procs["market-data-drain"].send_signal(signal.SIGUSR1)

            eventually(lambda: not registered(), 5, "instance gone from discovery after SIGUSR1")
            # The connection it already had keeps being served; it reports itself draining.
            health = open_connection.get("/health")
            assert health.status_code == 503
            assert health.json()["status"] == "draining"
            quote = open_connection.get("/api/v1/market-data/quotes/BTC-USD")
            assert quote.status_code == 200
        # New connections go elsewhere: the listener is closed (a successor can own the port).
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/health", timeout=2)
        assert stack.procs["market-data-drain"].poll() is None
    finally:
        stack.stop("market-data-drain")
