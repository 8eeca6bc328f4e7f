"""Docker's health check in a platform container: GET /health from the container's own server.

Docker runs it every few seconds in every container, so it imports the standard library's
`os`, `socket` and `sys` and nothing else (not even the gekko package): the images run it as a
script, `python3 -I -S /opt/gekko/healthprobe.py`, in about 15 ms instead of the 60 ms that
loading `gekko.cli` and its settings costs. `gekko healthcheck` runs the same check.

It asks over a Unix socket that only this container's server listens on: during a handover two
instances share the TCP port (SO_REUSEPORT), and a check over TCP could be answered by the old
instance while the new one does not listen yet.
"""

import os
import socket
import sys


def socket_path() -> str:
    """The server's own Unix socket in this container."""
    port = os.environ.get("GEKKO_PORT") or "8000"
    return os.environ.get("GEKKO_HEALTH_SOCKET") or f"/tmp/gekko-{port}.sock"  # noqa: S108 - the container's own tmpfs


def _status(path: str, timeout_s: float) -> int:
    """The HTTP status of GET /health on the socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(path)
        sock.sendall(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        head = b""
        while b"\r\n" not in head and len(head) < 1024:
            chunk = sock.recv(1024)
            if not chunk:
                break
            head += chunk
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise OSError(f"not an HTTP answer: {head[:80]!r}")
    return int(parts[1])


def check(timeout_s: float = 2.0) -> int:
    """0 when the container's own server answers GET /health with 200, else 1 (and why, on
    stderr, which Docker keeps in the container's health log)."""
    path = socket_path()
    if not os.path.exists(path):
        print(f"gekko healthcheck: the server has not started yet (no {path})", file=sys.stderr)
        return 1
    try:
        status = _status(path, timeout_s)
    except OSError as exc:
        print(f"gekko healthcheck: {path}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"gekko healthcheck: /health answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(check())
