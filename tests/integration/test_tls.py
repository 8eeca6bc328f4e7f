"""TLS as the deployment configures it with gekko_tls_enabled: the gateway's listener serves
TLS 1.3 only, with HSTS; a domain service serves TLS 1.3 only and admits only clients with a
certificate from the internal CA (mutual TLS: the gateway and peers), the gateway verifies it
against that CA; Redis speaks TLS 1.3 only, wants a client certificate and has no default user
(one ACL user per kind of client).

A separate small stack: its own TLS Redis (so the main stack's registry never sees https URLs),
one market data instance and a gateway."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pki import Pki, make_pki

from .conftest import (
    LOOPBACK,
    OPS,
    Stack,
    _wait_for,
    base_env,
    eventually,
    free_port,
    gekko_cmd,
)

GATEWAY_PASSWORD = "gateway-" + "g" * 24
SERVICES_PASSWORD = "services-" + "s" * 24


def client_context(pki: Pki, *, max_version: ssl.TLSVersion | None = None, cert: bool = True):
    context = ssl.create_default_context(cafile=str(pki.ca))
    if max_version is not None:
        context.maximum_version = max_version
    if cert:
        context.load_cert_chain(str(pki.cert), str(pki.key))
    return context


def tls_exchange(port: int, context: ssl.SSLContext, payload: bytes) -> bytes:
    """Handshake, send, and read the first answer (or raise what the server did instead)."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=LOOPBACK) as sock:
            sock.sendall(payload)
            return sock.recv(200)


def plain_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(payload)
        try:
            return sock.recv(200)
        except ConnectionResetError:
            return b""


def refused(exchange) -> bool:
    """The server ended the connection: an error, or closed without an answer."""
    try:
        return exchange() == b""
    except (ssl.SSLError, ConnectionResetError):
        return True


@dataclass
class TlsStack:
    pki: Pki
    redis_port: int
    stack: Stack

    @property
    def service_port(self) -> int:
        return self.stack.ports["market_data"]


@pytest.fixture(scope="module")
def tls_stack(postgres, redis_server) -> Iterator[TlsStack]:
    root = Path(tempfile.mkdtemp(prefix="gekko-it-tls-"))
    pki = make_pki(root)
    redis_port = free_port()
    log_file = root / "redis.log"
    client_rules = ["~*", "&*", "+@all", "-@dangerous"]
    acl = [
        "--user", "default", "off",
        "--user", "gekko-gateway", "on", f">{GATEWAY_PASSWORD}", *client_rules,
        "--user", "gekko-services", "on", f">{SERVICES_PASSWORD}", *client_rules,
    ]  # fmt: skip
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--bind", LOOPBACK, "--port", "0",
         "--tls-port", str(redis_port), "--tls-cert-file", str(pki.cert),
         "--tls-key-file", str(pki.key), "--tls-ca-cert-file", str(pki.ca),
         "--tls-auth-clients", "yes", "--tls-protocols", "TLSv1.3", "--save", "",
         "--appendonly", "no", "--dir", str(root), *acl],
        stdout=log_file.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    query = (
        f"ssl_ca_certs={pki.ca}&ssl_certfile={pki.cert}&ssl_keyfile={pki.key}"
        "&ssl_cert_reqs=required"
    )
    env = base_env(postgres, redis_server)
    env.update(
        GEKKO_REDIS_URL=f"rediss://gekko-services:{SERVICES_PASSWORD}@{LOOPBACK}:{redis_port}/0?{query}",
        GEKKO_GATEWAY_REDIS_URL=f"rediss://gekko-gateway:{GATEWAY_PASSWORD}@{LOOPBACK}:{redis_port}/0?{query}",
        GEKKO_TLS_CA_FILE=str(pki.ca),
        GEKKO_TLS_CERT_FILE=str(pki.cert),
        GEKKO_TLS_KEY_FILE=str(pki.key),
        GEKKO_HEALTH_SOCKET="",
    )
    stack = Stack(env=env, root=root, postgres=postgres)
    try:
        _wait_for(
            lambda: b"NOAUTH" in tls_exchange(redis_port, client_context(pki), b"PING\r\n"),
            15,
            "the TLS Redis",
            log_file,
        )
        market_data = stack.start(
            "market_data", "market_data", GEKKO_HEALTH_SOCKET=str(root / "market-data.sock")
        )
        stack.start(
            "gateway",
            "gateway",
            GEKKO_HEALTH_SOCKET=str(root / "gateway.sock"),
            GEKKO_STATIC_SERVICES=f'{{"market_data": ["https://{LOOPBACK}:{market_data}"]}}',
            # The edge certificate: the operator's, or one from the internal CA as here.
            GEKKO_EDGE_TLS_CERT_FILE=str(pki.cert),
            GEKKO_EDGE_TLS_KEY_FILE=str(pki.key),
        )

        def routed() -> bool:
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode}:\n{stack.log_tail(name)}")
            url = f"https://{LOOPBACK}:{stack.ports['gateway']}/api/v1/market-data/symbols"
            return httpx.get(url, timeout=2, verify=client_context(pki)).status_code == 200

        _wait_for(routed, 60, "the gateway to route to the TLS service", root / "gateway.log")
        yield TlsStack(pki, redis_port, stack)
    finally:
        for name in list(stack.procs):
            stack.stop(name)
        redis.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            redis.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def test_gateway_reaches_the_service_over_verified_tls(tls_stack):
    gateway = f"https://{LOOPBACK}:{tls_stack.stack.ports['gateway']}"
    # Closed at the end: an idle TLS connection whose client never reads the server's
    # close_notify holds the gateway's shutdown for its whole 10 s grace.
    with httpx.Client(verify=client_context(tls_stack.pki, cert=False), timeout=5) as client:
        quotes = client.get(f"{gateway}/api/v1/market-data/quotes/BTC-USD")
        assert quotes.status_code == 200, quotes.text

        # The service registered itself (over TLS to Redis) with its https address. The gateway
        # routed through its static entry already; the registration shows at its next registry
        # read.
        def registered() -> set[str]:
            listed = client.get(f"{gateway}/services", headers=OPS).json()
            return {i["url"] for i in listed["services"]["market_data"] if i["source"] == "redis"}

        eventually(
            lambda: f"https://{LOOPBACK}:{tls_stack.service_port}" in registered(),
            10,
            "the TLS service's own registration",
        )


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def test_service_admits_only_tls13_clients_with_a_certificate_from_the_ca(tls_stack):
    port = tls_stack.service_port
    answer = tls_exchange(port, client_context(tls_stack.pki), HEALTH)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    with pytest.raises(ssl.SSLError):
        tls_exchange(
            port, client_context(tls_stack.pki, max_version=ssl.TLSVersion.TLSv1_2), HEALTH
        )
    # Plain HTTP gets no HTTP answer: the server only completes TLS handshakes.
    assert not plain_exchange(port, HEALTH).startswith(b"HTTP")
    # A direct caller without a certificate from the internal CA (anyone but the gateway and
    # peers) is refused in the handshake, before any HTTP is read.
    assert refused(lambda: tls_exchange(port, client_context(tls_stack.pki, cert=False), HEALTH))
    # Nor does a certificate from another CA get in.
    other_root = tls_stack.stack.root / "other-ca"
    other_root.mkdir(exist_ok=True)
    other = make_pki(other_root)
    mixed = ssl.create_default_context(cafile=str(tls_stack.pki.ca))
    mixed.load_cert_chain(str(other.cert), str(other.key))
    assert refused(lambda: tls_exchange(port, mixed, HEALTH))


def test_gateway_listener_speaks_tls13_only_and_sends_hsts(tls_stack):
    port = tls_stack.stack.ports["gateway"]
    public = client_context(tls_stack.pki, cert=False)  # a client of the platform has no cert
    answer = httpx.get(f"https://{LOOPBACK}:{port}/openapi.json", verify=public, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.http_version == "HTTP/1.1"
    assert answer.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    with pytest.raises(ssl.SSLError):
        tls_exchange(
            port, client_context(tls_stack.pki, max_version=ssl.TLSVersion.TLSv1_2), HEALTH
        )
    assert not plain_exchange(port, HEALTH).startswith(b"HTTP")
    # The container's own health socket stays plain HTTP, and so gets no HSTS (RFC 6797 8.1).
    local = httpx.HTTPTransport(uds=str(tls_stack.stack.root / "gateway.sock"))
    with httpx.Client(transport=local, timeout=5) as client:
        answer = client.get("http://gateway/openapi.json")
    assert answer.status_code == 200, answer.text
    assert "strict-transport-security" not in answer.headers


def test_healthcheck_works_on_a_tls_service(tls_stack):
    """Docker's check talks to the server's own Unix socket, which stays plain HTTP."""
    stack = tls_stack.stack
    env = dict(stack.env, GEKKO_HEALTH_SOCKET=str(stack.root / "market-data.sock"))
    result = subprocess.run(gekko_cmd("healthcheck"), env=env, capture_output=True, timeout=10)
    assert result.returncode == 0, result.stderr


def test_redis_wants_tls13_a_client_certificate_and_a_user(tls_stack):
    port, pki = tls_stack.redis_port, tls_stack.pki
    assert not plain_exchange(port, b"PING\r\n").startswith(b"+PONG")
    with pytest.raises(ssl.SSLError):
        tls_exchange(port, client_context(pki, max_version=ssl.TLSVersion.TLSv1_2), b"PING\r\n")
    # Without a client certificate the server ends the handshake (TLS 1.3 reports it on read).
    assert refused(lambda: tls_exchange(port, client_context(pki, cert=False), b"PING\r\n"))
    # With a certificate but no user: the default user is off.
    assert tls_exchange(port, client_context(pki), b"PING\r\n").startswith(b"-NOAUTH")
    # The gateway's user works, but may not run dangerous commands.
    auth = f"AUTH gekko-gateway {GATEWAY_PASSWORD}\r\nPING\r\nFLUSHALL\r\n".encode()
    with socket.create_connection((LOOPBACK, port), timeout=5) as raw:
        with client_context(pki).wrap_socket(raw, server_hostname=LOOPBACK) as sock:
            sock.sendall(auth)
            time.sleep(0.2)
            answer = sock.recv(500)
    assert answer.startswith(b"+OK\r\n+PONG\r\n-NOPERM"), answer


def test_tls_settings_must_be_complete(tls_stack):
    env = dict(tls_stack.stack.env, GEKKO_TLS_KEY_FILE="", GEKKO_PORT=str(free_port()))
    result = subprocess.run(
        gekko_cmd("serve", "market_data"), env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "GEKKO_TLS_KEY_FILE not set" in result.stderr

    env = dict(tls_stack.stack.env, GEKKO_EDGE_TLS_CERT_FILE="/nonexistent/edge.crt")
    env.update(GEKKO_EDGE_TLS_KEY_FILE=str(tls_stack.pki.key), GEKKO_PORT=str(free_port()))
    result = subprocess.run(
        gekko_cmd("serve", "gateway"), env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "GEKKO_EDGE_TLS_CERT_FILE=/nonexistent/edge.crt cannot be read" in result.stderr
