"""The container exporter: what it reads from the engine's API and what Prometheus gets."""

from __future__ import annotations

import http.client
import json
import socket
import socketserver
import ssl
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gekko.cli import healthcheck
from gekko.observability.containers import (
    ENGINE_PATH,
    ContainerCollector,
    DockerEngine,
    build_parser,
    build_server,
    memory_in_use,
)
from pki import make_pki

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


def _reply(handler: BaseHTTPRequestHandler, payload: bytes, content_type: str) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


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
        _reply(self, json.dumps(body).encode(), "application/json")

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


class _EngineMetrics(BaseHTTPRequestHandler):
    """The engine's own metrics-addr: plain HTTP, on loopback."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        payload = b"# TYPE engine_daemon_engine_info gauge\nengine_daemon_engine_info 1\n"
        _reply(self, payload, "text/plain; version=0.0.4")

    def log_message(self, *args):  # quiet
        pass


def _serve(argv: list[str]):
    server = build_server(build_parser().parse_args(argv))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def engine_metrics():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EngineMetrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


# However the refusal shows: a TLS alert, a reset, or a connection closed without an answer.
REFUSED = (ssl.SSLError, urllib.error.URLError, ConnectionError, http.client.HTTPException)


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_engines_own_metrics_are_relayed_and_its_silence_is_a_502(
    engine_socket, engine_metrics
):
    path, _ = engine_socket
    server = _serve(
        [
            "--listen",
            "127.0.0.1:0",
            "--docker-socket",
            path,
            "--relay",
            f"{ENGINE_PATH}={engine_metrics}",
        ]
    )
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        status, text = _get(base + ENGINE_PATH)
        assert status == 200 and "engine_daemon_engine_info 1" in text
        assert "gekko_container" not in text
        status, text = _get(base + "/metrics")
        assert status == 200 and "gekko_container_scrape_ok 1.0" in text
    finally:
        server.shutdown()
        server.server_close()
    server = _serve(
        [
            "--listen",
            "127.0.0.1:0",
            "--docker-socket",
            path,
            "--relay",
            f"{ENGINE_PATH}=http://127.0.0.1:9/metrics",
        ]
    )
    try:
        status, text = _get(f"http://127.0.0.1:{server.server_address[1]}{ENGINE_PATH}")
        assert status == 502 and "did not answer" in text
    finally:
        server.shutdown()
        server.server_close()


def test_with_tls_only_a_client_with_a_certificate_from_the_ca_is_answered(
    engine_socket, engine_metrics, tmp_path, capsys
):
    path, _ = engine_socket
    pki = make_pki(tmp_path)
    server = _serve(
        [
            "--listen",
            "127.0.0.1:0",
            "--docker-socket",
            path,
            "--relay",
            f"{ENGINE_PATH}={engine_metrics}",
            "--tls-dir",
            str(tmp_path),
        ]
    )
    port = server.server_address[1]
    try:
        # A client that connects and never shakes hands holds up no other scrape.
        with socket.create_connection(("127.0.0.1", port)):
            with_cert = ssl.create_default_context(cafile=str(pki.ca))
            with_cert.load_cert_chain(str(pki.cert), str(pki.key))
            status, text = _get(f"https://127.0.0.1:{port}{ENGINE_PATH}", with_cert)
            assert status == 200 and "engine_daemon_engine_info 1" in text
        without_cert = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises(REFUSED):
            _get(f"https://127.0.0.1:{port}/metrics", without_cert)
        tls12 = ssl.create_default_context(cafile=str(pki.ca))
        tls12.load_cert_chain(str(pki.cert), str(pki.key))
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(REFUSED):
            _get(f"https://127.0.0.1:{port}/metrics", tls12)
        with pytest.raises(REFUSED):
            _get(f"http://127.0.0.1:{port}/metrics")
        # The container's health check: gekko healthcheck with the same certificate folder.
        url = f"https://127.0.0.1:{port}/metrics"
        assert healthcheck(url, 5, str(tmp_path)) == 0
        assert healthcheck(url, 5) == 1
        assert healthcheck(url, 5, str(tmp_path / "absent")) == 1
        assert "absent" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "value",
    ["engine=http://127.0.0.1:1/metrics", "/metrics=http://127.0.0.1:1/metrics",
     "/engine/metrics=http://10.0.0.1:9323/metrics", "/engine/metrics=file:///etc/passwd"],
)  # fmt: skip
def test_a_relay_is_a_path_of_its_own_and_a_page_on_loopback(value, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--relay", value])
    assert "want PATH=URL" in capsys.readouterr().err
