"""The container exporter: what it reads from the engine's API and what Prometheus gets."""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gekko.observability.containers import ContainerCollector, DockerEngine, memory_in_use

LISTED = [
    {"Id": "a1", "Names": ["/gekko-trading"], "Labels": {"gekko.platform/component": "trading"}},
    {"Id": "b2", "Names": ["/gekko-users"], "Labels": {"gekko.platform/component": "users"}},
]
INSPECTED = {
    "a1": {"RestartCount": 2, "State": {"Running": True, "Health": {"Status": "healthy"}}},
    "b2": {"RestartCount": 0, "State": {"Running": False}},
}
STATS = {
    "a1": {
        "cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
        "memory_stats": {"usage": 300, "limit": 1000, "stats": {"total_inactive_file": 100}},
    }
}


class _FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    requests_seen: list[str]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests_seen.append(self.path)
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if url.path == "/containers/json":
            filters = json.loads(parse_qs(url.query)["filters"][0])
            body = LISTED if filters == {"label": ["gekko.platform/deployment=gekko"]} else []
        elif parts[-1] == "json" and parts[1] in INSPECTED:
            body = INSPECTED[parts[1]]
        elif parts[-1] == "stats" and parts[1] in STATS:
            body = STATS[parts[1]]
        else:
            self.send_error(404)
            return
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def engine_socket(tmp_path):
    path = str(tmp_path / "docker.sock")
    server = _FakeEngine(path, _Handler)
    server.requests_seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path, server
    server.shutdown()
    server.server_close()


def scrape(socket_path: str) -> str:
    registry = CollectorRegistry()
    registry.register(ContainerCollector(DockerEngine(socket_path), "gekko"))
    return generate_latest(registry).decode()


def test_each_container_gets_cpu_memory_restarts_and_state(engine_socket):
    path, server = engine_socket
    text = scrape(path)
    labels = 'component="trading",container="gekko-trading"'
    assert f"gekko_container_cpu_seconds_total{{{labels}}} 2.5" in text
    assert f"gekko_container_memory_usage_bytes{{{labels}}} 200.0" in text
    assert f"gekko_container_memory_limit_bytes{{{labels}}} 1000.0" in text
    assert f"gekko_container_restart_count{{{labels}}} 2.0" in text
    assert f"gekko_container_running{{{labels}}} 1.0" in text
    assert f"gekko_container_healthy{{{labels}}} 1.0" in text
    # A stopped container is reported as such, with no usage (the engine has none to give).
    stopped = 'component="users",container="gekko-users"'
    assert f"gekko_container_running{{{stopped}}} 0.0" in text
    assert f"gekko_container_healthy{{{stopped}}} 0.0" in text
    assert f"gekko_container_cpu_seconds_total{{{stopped}}}" not in text
    assert "gekko_container_scrape_ok 1.0" in text
    # Only reads, and no stats call for the stopped container.
    assert not any(seen.startswith("/containers/b2/stats") for seen in server.requests_seen)


def test_an_engine_that_does_not_answer_is_a_failed_scrape_not_an_error(tmp_path):
    text = scrape(str(tmp_path / "absent.sock"))
    assert "gekko_container_scrape_ok 0.0" in text
    assert "gekko_container_running{" not in text


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        ({"usage": 500, "stats": {"total_inactive_file": 200}}, 300),  # cgroup v1
        ({"usage": 500, "stats": {"inactive_file": 100}}, 400),  # cgroup v2
        ({"usage": 500}, 500),
        ({"usage": 100, "stats": {"inactive_file": 300}}, 0),
    ],
)
def test_memory_in_use_leaves_out_reclaimable_page_cache(stats, expected):
    assert memory_in_use(stats) == expected
