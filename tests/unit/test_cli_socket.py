"""Two instances can hold the same port during a handover (SO_REUSEPORT), and each one's health
check reaches only its own server (a Unix socket in the container)."""

import http.server
import os
import socket
import socketserver
import subprocess
import sys
import threading

import pytest

from gekko import healthprobe
from gekko.cli import health_socket, listening_socket


def test_a_second_instance_binds_the_same_port_while_the_first_listens():
    first = listening_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = listening_socket("127.0.0.1", port)
    try:
        assert second.getsockname()[1] == port
        client = socket.create_connection(("127.0.0.1", port), timeout=2)
        client.close()
    finally:
        first.close()
        second.close()


def test_a_port_held_without_reuseport_is_refused():
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen()
    try:
        try:
            listening_socket("127.0.0.1", plain.getsockname()[1]).close()
        except OSError:
            return
        raise AssertionError("binding a port held by a non-sharing listener must fail")
    finally:
        plain.close()


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server(tmp_path, monkeypatch):
    """Serves GET /health with a given status on the socket `gekko healthcheck` asks."""
    path = str(tmp_path / "gekko-8000.sock")
    monkeypatch.setenv("GEKKO_HEALTH_SOCKET", path)
    servers = []

    def serve(status: int) -> None:
        handler = type("Handler", (_Health,), {"status": status})
        server = socketserver.UnixStreamServer(path, handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_health_check_asks_the_server_on_its_own_unix_socket(health_server):
    assert healthprobe.check(2) == 1, "no socket yet: the server has not started"
    health_server(200)
    assert healthprobe.check(2) == 0


def test_the_health_check_fails_on_an_unhealthy_answer(health_server, capsys):
    health_server(503)
    assert healthprobe.check(2) == 1
    assert "/health answered 503" in capsys.readouterr().err


def test_a_stale_health_socket_is_replaced_and_private(tmp_path):
    path = str(tmp_path / "gekko-8000.sock")
    stale = health_socket(path)
    stale.close()  # a previous run's file stays behind
    fresh = health_socket(path)
    try:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    finally:
        fresh.close()


def test_dockers_check_runs_as_a_script_on_the_standard_library_alone(health_server, tmp_path):
    """The images run `python3 -I -S healthprobe.py`: no site-packages, no gekko package."""
    health_server(200)
    probe = [sys.executable, "-I", "-S", healthprobe.__file__]
    healthy = subprocess.run(probe, capture_output=True, text=True, timeout=10)
    assert healthy.returncode == 0, healthy.stderr
    env = dict(os.environ, GEKKO_HEALTH_SOCKET=str(tmp_path / "none.sock"))
    absent = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=10)
    assert absent.returncode == 1 and "has not started" in absent.stderr


def test_what_startup_built_is_frozen_out_of_the_garbage_collectors_walks():
    """A full collection would otherwise walk every module, app and model object the process
    holds for its whole life, stalling requests (110 ms in the signals service)."""
    import asyncio
    import gc
    import types

    import uvicorn

    from gekko.cli import _draining_server_class, listening_socket

    built_at_startup: list[object] = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            built_at_startup.append([{"row": n} for n in range(1000)])  # a model, a pool...
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})

    async def start_and_stop() -> int:
        sock = listening_socket("127.0.0.1", 0)
        server_class = _draining_server_class(uvicorn.Server, types.SimpleNamespace())
        server = server_class(uvicorn.Config(app, lifespan="on", log_config=None))
        server.config.load()
        server.lifespan = server.config.lifespan_class(server.config)
        await server.startup(sockets=[sock])
        frozen = gc.get_freeze_count()
        await server.shutdown(sockets=[sock])
        return frozen

    gc.unfreeze()
    try:
        frozen = asyncio.run(start_and_stop())
    finally:
        gc.unfreeze()
    assert built_at_startup and frozen > 1000
