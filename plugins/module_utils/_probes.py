# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only probes of the world outside the host for the validate_host module.

Each probe returns what it saw (or the error text) and never raises, so the rules in
_software_checks and _net_checks decide what it means. Nothing here changes anything: the
Docker probe asks for the version only, the datastore probes send one harmless opening message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import struct
import time

from ansible.module_utils.urls import fetch_url

DOCKER_IMPORT_ERROR = None
try:
    import docker
except ImportError as exc:
    DOCKER_IMPORT_ERROR = str(exc)

DNSPYTHON_IMPORT_ERROR = None
try:
    import dns.resolver
except ImportError as exc:
    DNSPYTHON_IMPORT_ERROR = str(exc)

# PostgreSQL's SSLRequest: length 8, code 1234.5679. Every server answers one byte, S or N,
# before any authentication, so the probe neither logs in nor leaves a failed login behind.
POSTGRES_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
REDIS_PING = b"PING\r\n"


def _error_text(exc):
    return str(exc) or type(exc).__name__


def exchange(host, port, payload, timeout, reply_bytes=64):
    """Connect, optionally send payload, read the first reply bytes: (reply, error)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if not payload:
                return b"", None
            sock.sendall(payload)
            reply = sock.recv(reply_bytes)
    except (OSError, ValueError) as exc:
        return b"", _error_text(exc)
    if not reply:
        return b"", "the server closed the connection without answering"
    return reply, None


def postgres_probe(host, port, timeout):
    return exchange(host, port, POSTGRES_SSL_REQUEST, timeout, reply_bytes=1)


def redis_probe(host, port, timeout):
    return exchange(host, port, REDIS_PING, timeout)


def docker_version(docker_host, timeout):
    """The engine's /version answer as a dict, or the reason there is none (a str)."""
    if DOCKER_IMPORT_ERROR:
        return "the Docker SDK for Python is not installed on the host (%s)" % DOCKER_IMPORT_ERROR
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=timeout)
        try:
            return client.version()
        finally:
            client.close()
    except Exception as exc:  # the SDK raises requests and docker errors alike
        return _error_text(exc)


def deployment_ports(docker_host, deployment, component_ports, timeout):
    """The ports one deployment's running containers hold (empty when no engine answers).

    An application container names its port in its slot label; a component listed in
    component_ports (PostgreSQL, Redis) holds that port. A container without a deployment label
    predates it and belongs to `gekko`.
    """
    if DOCKER_IMPORT_ERROR:
        return set()
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=timeout)
        try:
            running = client.api.containers(filters={"label": "gekko.platform/component"})
        finally:
            client.close()
    except Exception:  # no engine yet (a first deploy): nothing is the platform's own
        return set()
    ports = set()
    for container in running:
        labels = container.get("Labels") or {}
        if labels.get("gekko.platform/deployment", "gekko") != deployment:
            continue
        component = labels.get("gekko.platform/component")
        for port in (labels.get("gekko.platform/slot"), component_ports.get(component)):
            try:
                ports.add(int(port))
            except (TypeError, ValueError):  # none, or a label not written by the platform
                pass
    return ports


def http_get(module, url, timeout, max_bytes=0):
    """GET url, reading at most max_bytes of the body.

    Returns (status, byte_count, seconds, error); seconds times the body only, so latency and
    the handshake do not count against bandwidth. A status is returned for any HTTP answer.
    """
    response, info = fetch_url(module, url, timeout=timeout, use_proxy=False)
    status = info.get("status", -1)
    if response is None or status == -1:
        return None, 0, 0.0, info.get("msg", "no answer")
    byte_count, seconds = 0, 0.0
    if response is not None and max_bytes:
        started = time.monotonic()
        try:
            while byte_count < max_bytes:
                chunk = response.read(min(65536, max_bytes - byte_count))
                if not chunk:
                    break
                byte_count += len(chunk)
        except (OSError, socket.timeout) as exc:
            return status, byte_count, time.monotonic() - started, _error_text(exc)
        seconds = time.monotonic() - started
    return status, byte_count, seconds, None


def system_resolver(name):
    """Addresses from the host's own resolver (nsswitch: /etc/hosts, then DNS)."""
    return [info[4][0] for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)]


def dns_server_resolver(server, port, timeout):
    """A resolve(name) that asks one DNS server directly (A and AAAA records)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server]
    resolver.port = port
    resolver.lifetime = timeout
    resolver.timeout = timeout

    def resolve(name):
        addresses = []
        for record_type in ("A", "AAAA"):
            try:
                answer = resolver.resolve(name, record_type, search=False)
            except dns.resolver.NoAnswer:
                continue
            addresses.extend(record.to_text() for record in answer)
        return addresses

    return resolve
