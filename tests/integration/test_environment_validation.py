"""gekko.platform.validate_host on this host, run as the deploy runs it: through Ansible.

Real things only, all on loopback: the Docker engine (asked for its version, nothing else),
PostgreSQL and Redis from the fixtures, a closed port, a DNS server of our own (the fallback
behind a dead primary), and an HTTP server for the endpoint and bandwidth probes.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import docker
import pytest

from .conftest import LOOPBACK, Postgres, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = Path(sys.executable).parent / "ansible"
# Served only by our DNS server: the system resolver has never heard of it.
DNS_NAME = "exchange-api.gekko-it.test"
DNS_ADDRESS = "127.0.0.77"
BLOB = os.urandom(2 * 1024 * 1024)


@contextlib.contextmanager
def dns_server(records: dict[str, str]) -> Iterator[int]:
    """A UDP DNS server on 127.0.0.1 answering A queries from records, NXDOMAIN otherwise."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".")
            if name in records and dns.rdatatype.to_text(question.rdtype) == "A":
                response.answer.append(
                    dns.rrset.from_text(question.name, 60, "IN", "A", records[name])
                )
            elif name not in records:
                response.set_rcode(dns.rcode.NXDOMAIN)
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        sock.close()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        status, body = {"/health": (200, b"ok"), "/blob": (200, BLOB)}.get(self.path, (500, b"x"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def dns_port() -> Iterator[int]:
    with dns_server({DNS_NAME: DNS_ADDRESS}) as port:
        yield port


def dead_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def validate(args: dict, check_mode: bool = False) -> tuple[bool, dict]:
    """Run the module on localhost through ansible; (succeeded, its result)."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        # Keep this run's facts out of the deploy's fact cache.
        ANSIBLE_CACHE_PLUGIN="memory",
    )
    command = [
        str(ANSIBLE), "localhost", "-i", "localhost,", "-c", "local", "-o",
        "-e", f"ansible_python_interpreter={sys.executable}",
        "-m", "gekko.platform.validate_host", "-a", json.dumps(args),
    ] + (["--check"] if check_mode else [])  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("localhost |")), None)
    assert line is not None, f"no result from ansible:\n{proc.stdout}\n{proc.stderr}"
    return " | SUCCESS => " in line, json.loads(line.split(" => ", 1)[1])


def by_name(result: dict) -> dict[str, dict]:
    return {check["name"]: check for check in result["checks"]}


LIGHT_MINIMUMS = {"min_cpu_cores": 1, "min_memory_mb": 256, "min_disk_free_gb": 1}


def test_a_healthy_environment_passes_with_facts_from_the_real_services(
    postgres: Postgres, redis_server: RedisServer, dns_port: int, http_base: str
) -> None:
    dead_primary = f"{LOOPBACK}:{dead_udp_port()}"
    succeeded, result = validate(
        {
            **LIGHT_MINIMUMS,
            "docker_required": "required",
            "postgres_endpoint": f"{LOOPBACK}:{postgres.port}",
            "redis_endpoint": f"{LOOPBACK}:{redis_server.port}",
            "dns_names": [DNS_NAME],
            "dns_servers": [dead_primary],
            "dns_fallback_servers": [f"{LOOPBACK}:{dns_port}"],
            "endpoints": [f"{http_base}/health", f"{LOOPBACK}:{postgres.port}"],
            "bandwidth_url": f"{http_base}/blob",
            "min_bandwidth_mbit": 1,
            "service_memory": [{"name": "trading", "memory": "64m", "instances": 2}],
            "required_packages": ["tar"],
            "timeout": 2,
        }
    )
    checks = by_name(result)
    assert succeeded, result.get("msg")
    assert result["summary"]["ok"] and result["summary"]["failed"] == 0
    for name in ("docker", f"postgres:{LOOPBACK}:{postgres.port}", "package:tar", "bandwidth"):
        assert checks[name]["status"] == "ok", checks[name]
    # Redis runs with a password: it answers -NOAUTH, which still proves it is Redis.
    assert checks[f"redis:{LOOPBACK}:{redis_server.port}"]["status"] == "ok"
    assert checks[f"endpoint:{http_base}/health"]["message"].endswith("HTTP 200")

    # The dead primary is reported, the fallback's answer is used and kept as a fact.
    dns_check = checks[f"dns:{DNS_NAME}"]
    assert (dns_check["status"], dns_check["severity"]) == ("warn", "warning")
    assert dead_primary in dns_check["message"] and dns_check["remediation"]
    facts = result["ansible_facts"]["gekko_host"]
    assert facts["dns"][DNS_NAME] == {
        "addresses": [DNS_ADDRESS],
        "answered_by": f"{LOOPBACK}:{dns_port}",
    }

    engine = docker.from_env().version()
    assert facts["docker"] == {
        "reachable": True,
        "version": engine["Version"],
        "api_version": engine["ApiVersion"],
    }
    assert facts["os"]["system"] == "Linux" and facts["cpu_cores"] >= 1
    assert facts["memory_demand_mb"] == 128
    assert facts["bandwidth_mbit"] >= 1


def test_unreachable_services_fail_with_one_remediation_line_each(
    dns_port: int, http_base: str
) -> None:
    closed = free_port()
    succeeded, result = validate(
        {
            **LIGHT_MINIMUMS,
            "docker_required": "skip",
            "postgres_endpoint": f"{LOOPBACK}:{closed}",
            "redis_endpoint": f"{LOOPBACK}:{closed}",
            "dns_names": ["unknown.gekko-it.test"],
            "dns_servers": [f"{LOOPBACK}:{dns_port}"],
            "endpoints": [f"{LOOPBACK}:{closed}", f"{http_base}/broken"],
            "bandwidth_url": f"{http_base}/blob",
            "min_bandwidth_mbit": 10**9,
            "service_memory": [{"name": "trading", "memory": "1024g", "instances": 1}],
            "timeout": 2,
        }
    )
    assert not succeeded
    failed = {c["name"]: c for c in result["checks"] if c["status"] == "fail"}
    assert set(failed) == {
        f"postgres:{LOOPBACK}:{closed}",
        f"redis:{LOOPBACK}:{closed}",
        "dns:unknown.gekko-it.test",
        f"endpoint:{LOOPBACK}:{closed}",
        f"endpoint:{http_base}/broken",
        "bandwidth",
        "resource_fit",
    }
    assert all(c["severity"] == "critical" and c["remediation"] for c in failed.values())
    assert "Connection refused" in failed[f"postgres:{LOOPBACK}:{closed}"]["message"]
    assert "trading 1048576 MiB" in failed["resource_fit"]["remediation"]
    assert result["msg"].startswith("Host validation failed with 7 problem(s):")
    assert len([ln for ln in result["msg"].splitlines() if ". Fix: " in ln]) == 7


def test_check_mode_runs_the_same_checks_and_changes_nothing(redis_server: RedisServer) -> None:
    args = {**LIGHT_MINIMUMS, "redis_endpoint": f"{LOOPBACK}:{redis_server.port}"}
    succeeded, result = validate(args, check_mode=True)
    assert succeeded and result["changed"] is False
    assert by_name(result)[f"redis:{LOOPBACK}:{redis_server.port}"]["status"] == "ok"
