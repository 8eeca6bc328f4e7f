"""Tries each way in to a TLS endpoint of the platform, run on a lab host (standard library only:
the hosts' own Python). Prints one JSON object: for each target, what TLS 1.3 with this host's
certificate, TLS 1.2, TLS 1.3 without a client certificate, and plain text each got.

    python3 tls_probe.py CERT_DIR postgres=10.77.0.10:5432 redis=10.77.0.10:6379 \
        http=10.77.0.12:8104 http-gateway=10.77.0.13:8000

Each target is LABEL=HOST:PORT; the label's first word (postgres, redis, http) says what to
speak once the connection is up.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import sys

# PostgreSQL asks for TLS in-band: SSLRequest, then the server answers S (go ahead) or N.
SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PROTOCOL_3 = 196608


def startup_message(user: str, database: str) -> bytes:
    body = (
        struct.pack("!i", PROTOCOL_3)
        + b"".join(
            k.encode() + b"\0" + v.encode() + b"\0"
            for k, v in (("user", user), ("database", database))
        )
        + b"\0"
    )
    return struct.pack("!i", len(body) + 4) + body


def first_bytes(kind: str) -> bytes:
    if kind == "postgres":
        return startup_message("gekko", "gekko")
    if kind == "redis":
        return b"PING\r\n"
    return b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"


def printable(answer: bytes) -> str:
    """The answer as one line of printable ASCII (it travels back in Ansible's one-line output)."""
    return "".join(chr(b) if 32 <= b < 127 else "." for b in answer)


def context(cert_dir: str, *, tls12: bool = False, client_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=f"{cert_dir}/ca.crt")
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if client_cert and os.path.exists(f"{cert_dir}/tls.crt"):  # the controller has none
        ctx.load_cert_chain(f"{cert_dir}/tls.crt", f"{cert_dir}/tls.key")
    return ctx


def attempt(kind: str, host: str, port: int, ctx: ssl.SSLContext | None) -> str:
    """What the server answered, or why there was no answer."""
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            sock: socket.socket = raw
            if kind == "postgres" and ctx is not None:
                raw.sendall(SSL_REQUEST)
                if raw.recv(1) != b"S":
                    return "refused: no TLS offered"
            if ctx is not None:
                sock = ctx.wrap_socket(raw, server_hostname=host)
                prefix = f"{sock.version()}: "
            else:
                prefix = "plain: "
            sock.sendall(first_bytes(kind))
            answer = sock.recv(1000)
            return prefix + (printable(answer) if answer else "closed")
    except ssl.SSLError as exc:
        return f"refused: {exc.reason or exc}"
    except OSError as exc:
        return f"refused: {exc.__class__.__name__}"


def main() -> None:
    cert_dir, targets = sys.argv[1], sys.argv[2:]
    found = {}
    for target in targets:
        label, address = target.split("=", 1)
        kind = label.split("-")[0]
        host, port = address.rsplit(":", 1)
        found[label] = {
            "tls13": attempt(kind, host, int(port), context(cert_dir)),
            "tls12": attempt(kind, host, int(port), context(cert_dir, tls12=True)),
            "no_client_cert": attempt(kind, host, int(port), context(cert_dir, client_cert=False)),
            "plain": attempt(kind, host, int(port), None),
        }
    print(json.dumps(found))


if __name__ == "__main__":
    main()
