"""Per-container resource usage for Prometheus, read from the Docker engine's API.

Debian bookworm has no cAdvisor, and the engine's own /metrics has no per-container figures, so
this small exporter asks the engine on each scrape: the deployment's containers
(`/containers/json`), then each one's `stats?one-shot=true` (one sample, no 1 s wait) and its
restart count (`/containers/{id}/json`). It reads the engine only through GET requests.

It also relays pages that speak plain HTTP only and so listen on the host's loopback: the
engine's own metrics (daemon.json `metrics-addr`) at /engine/metrics and, on a datastores host,
the Redis exporter's (whose own TLS listener cannot be kept to TLS 1.3 when it checks client
certificates). With TLS on, all of it is served over mutual TLS 1.3: only a client with a
certificate from the internal CA (Prometheus) is answered.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger("gekko.observability.containers")

# Prometheus adds the target's `host` label: the exporter's own would collide with it.
_LABELS = ["container", "component"]


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the engine's unix socket."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._socket_path)


class DockerEngine:
    """The few read-only calls the exporter makes."""

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def get(self, path: str) -> Any:
        connection = _UnixConnection(self.socket_path, self.timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise OSError(f"GET {path}: engine answered {response.status}")
        return json.loads(body)

    def containers(self, deployment: str) -> list[dict]:
        filters = json.dumps({"label": [f"gekko.platform/deployment={deployment}"]})
        return self.get(f"/containers/json?all=1&filters={quote(filters)}")

    def stats(self, container_id: str) -> dict:
        return self.get(f"/containers/{container_id}/stats?stream=0&one-shot=1")

    def inspect(self, container_id: str) -> dict:
        return self.get(f"/containers/{container_id}/json")


def memory_in_use(memory_stats: dict) -> float:
    """Usage as `docker stats` shows it: the page cache the kernel can drop is not counted."""
    usage = float(memory_stats.get("usage", 0))
    stats = memory_stats.get("stats", {})
    # cgroup v1 names it total_inactive_file, v2 inactive_file.
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return max(usage - float(inactive), 0.0)


class ContainerCollector(Collector):
    """Collects on each scrape; an engine that does not answer gives scrape_ok 0."""

    def __init__(self, engine: DockerEngine, deployment: str) -> None:
        self.engine = engine
        self.deployment = deployment

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        cpu = CounterMetricFamily(
            "gekko_container_cpu_seconds", "CPU time the container used", labels=_LABELS
        )
        memory = GaugeMetricFamily(
            "gekko_container_memory_usage_bytes",
            "Memory in use, without reclaimable page cache",
            labels=_LABELS,
        )
        limit = GaugeMetricFamily(
            "gekko_container_memory_limit_bytes", "The container's memory limit", labels=_LABELS
        )
        restarts = GaugeMetricFamily(
            "gekko_container_restart_count",
            "Times the engine restarted the container (its restart policy)",
            labels=_LABELS,
        )
        running = GaugeMetricFamily(
            "gekko_container_running", "1 if the container runs", labels=_LABELS
        )
        healthy = GaugeMetricFamily(
            "gekko_container_healthy",
            "1 if the container's health check passes (or it has none and runs)",
            labels=_LABELS,
        )
        up = GaugeMetricFamily(
            "gekko_container_scrape_ok", "1 if the Docker engine answered this scrape"
        )
        started = time.monotonic()
        try:
            listed = self.engine.containers(self.deployment)
        except (OSError, ValueError) as exc:
            log.warning("the Docker engine did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        # A stats sample can take up to the engine's 1 s collection tick: ask for all at once.
        with ThreadPoolExecutor(max_workers=32) as pool:
            readings = list(pool.map(self._read, listed))
        for summary, details, stats in readings:
            if details is None:
                continue  # removed between the list and this call
            labels = [
                summary["Names"][0].lstrip("/"),
                summary.get("Labels", {}).get("gekko.platform/component", ""),
            ]
            state = details.get("State", {})
            is_running = bool(state.get("Running"))
            running.add_metric(labels, 1 if is_running else 0)
            restarts.add_metric(labels, details.get("RestartCount", 0))
            health = state.get("Health", {}).get("Status")
            healthy.add_metric(labels, 1 if is_running and health in (None, "healthy") else 0)
            if not stats:
                continue
            usage_ns = stats.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage", 0)
            cpu.add_metric(labels, usage_ns / 1e9)
            memory_stats = stats.get("memory_stats", {})
            memory.add_metric(labels, memory_in_use(memory_stats))
            if memory_stats.get("limit"):
                limit.add_metric(labels, float(memory_stats["limit"]))
        up.add_metric([], 1)
        log.debug("scraped %d containers in %.3fs", len(listed), time.monotonic() - started)
        yield from (cpu, memory, limit, restarts, running, healthy, up)

    def _read(self, summary: dict) -> tuple[dict, dict | None, dict | None]:
        """One container's inspect and, if it runs, one stats sample (None where it vanished)."""
        try:
            details = self.engine.inspect(summary["Id"])
        except (OSError, ValueError):
            return summary, None, None
        if not details.get("State", {}).get("Running"):
            return summary, details, None
        try:
            return summary, details, self.engine.stats(summary["Id"])
        except (OSError, ValueError):
            return summary, details, None


# Where the Docker engine's own metrics are relayed (job `docker`).
ENGINE_PATH = "/engine/metrics"
_Respond = Callable[[str, list[tuple[str, str]]], Any]
_App = Callable[[dict, _Respond], Iterable[bytes]]


def relay_app(url: str, timeout: float = 5.0) -> _App:
    """WSGI app relaying a local plain-HTTP metrics page as it was written; 502 when it does not
    answer, so Prometheus marks the target down rather than seeing an empty page."""

    def app(environ: dict, respond: _Respond) -> Iterable[bytes]:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - checked
                body = response.read()
                content_type = response.headers.get("Content-Type", "text/plain")
        except (urllib.error.URLError, OSError) as exc:
            log.warning("%s did not answer: %s", url, exc)
            respond("502 Bad Gateway", [("Content-Type", "text/plain")])
            return [f"{url} did not answer\n".encode()]
        respond("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return app


def relay(value: str) -> tuple[str, str]:
    """--relay PATH=URL: a path of this exporter's own, and a plain-HTTP page on loopback."""
    path, _, url = value.partition("=")
    if (
        not path.startswith("/")
        or path == "/metrics"
        or not url.startswith(("http://127.0.0.1:", "http://localhost:"))
    ):
        raise argparse.ArgumentTypeError(
            f"{value!r}: want PATH=URL, PATH like /engine/metrics (not /metrics), URL on "
            "loopback like http://127.0.0.1:9323/metrics"
        )
    return path, url


def exporter_app(registry: CollectorRegistry, relays: dict[str, str]) -> _App:
    """The containers' metrics on every path (as prometheus_client serves them), each relayed
    page on its own path."""
    from prometheus_client import make_wsgi_app

    containers = make_wsgi_app(registry)
    relayed = {path: relay_app(url) for path, url in relays.items()}

    def app(environ: dict, respond: _Respond) -> Iterable[bytes]:
        page = relayed.get(environ.get("PATH_INFO", ""))
        return (page or containers)(environ, respond)

    return app


class _QuietHandler(WSGIRequestHandler):
    # A client that connects and then says nothing (no TLS handshake, no request) frees its
    # thread after this many seconds.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Prometheus scrapes every few seconds: no line per request."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gekko container-exporter",
        description="serve the deployment's per-container usage for Prometheus",
    )
    parser.add_argument("--listen", default="127.0.0.1:9338", metavar="ADDRESS:PORT")
    parser.add_argument("--docker-socket", default="/var/run/docker.sock")
    parser.add_argument("--deployment", default="gekko")
    parser.add_argument(
        "--relay",
        type=relay,
        action="append",
        default=[],
        metavar="PATH=URL",
        help="also serve a plain-HTTP page on loopback at PATH, such as the engine's own metrics "
        f"(its metrics-addr) at {ENGINE_PATH}; repeatable",
    )
    parser.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="serve mutual TLS 1.3 with DIR/tls.crt and DIR/tls.key, "
        "clients checked against DIR/ca.crt",
    )
    return parser


def build_server(args: argparse.Namespace):
    """The exporter's HTTP(S) server, listening, not yet serving."""
    from prometheus_client.exposition import ThreadingWSGIServer

    class _Server(ThreadingWSGIServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            """A client refused by TLS (no certificate, plain text) is one line, not a traceback."""
            log.info("%s: %s", client_address[0] if client_address else "?", sys.exc_info()[1])

    address, _, port = args.listen.rpartition(":")
    registry = CollectorRegistry()
    registry.register(ContainerCollector(DockerEngine(args.docker_socket), args.deployment))
    app = exporter_app(registry, dict(args.relay))
    server = make_server(address, int(port), app, _Server, handler_class=_QuietHandler)
    if args.tls_dir:
        from gekko.config import TlsFiles
        from gekko.tls import server_context

        files = TlsFiles.in_directory(args.tls_dir)
        # The handshake happens in the request's own thread (on its first read), so a client that
        # never completes one holds up no one else's scrape.
        server.socket = server_context(files).wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    return server


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = build_server(args)
    log.info(
        "serving container metrics on %s%s", args.listen, " (mutual TLS)" if args.tls_dir else ""
    )
    server.serve_forever()
    return 0
