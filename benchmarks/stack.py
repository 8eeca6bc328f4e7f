"""Start and stop the processes the bench measures: gekko components and nginx.

Every process is started here, on a random free loopback port, in its own session, and is
stopped by its own pid (SIGTERM, then SIGKILL) when the Stack closes or the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.settings import RESERVED_PORTS


class StackError(RuntimeError):
    pass


def free_port() -> int:
    """A free loopback port chosen by the kernel, never one of the deployed stack's."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port
    raise StackError("no free port found")


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http://127.0.0.1
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class Proc:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash: no deregistration, no graceful close."""
        if self.alive():
            self.popen.kill()
        self.popen.wait(timeout=10)

    def stop(self, grace_s: float = 8.0) -> None:
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    base_env: dict[str, str]
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)  # also on an uncaught exception or Ctrl-C

    def _spawn(self, name: str, port: int, argv: list[str], env: dict[str, str]) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(  # noqa: S603 - fixed argv
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to make reaches us, not the servers
            )
        proc = Proc(name, port, popen, log_path)
        self.procs.append(proc)
        return proc

    def start_component(
        self, component: str, name: str | None = None, extra_env: dict[str, str] | None = None
    ) -> Proc:
        """`gekko serve <component>` from this interpreter's environment."""
        name = name or component
        port = free_port()
        env = {
            **os.environ,
            **self.base_env,
            "GEKKO_PORT": str(port),
            "GEKKO_INSTANCE_ID": f"bench-{name}",
            **(extra_env or {}),
        }
        return self._spawn(name, port, [sys.executable, "-m", "gekko.cli", "serve", component], env)

    def start_nginx(self, upstream_port: int, connections: int) -> Proc:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise StackError("nginx is not installed (apt-get install nginx)")
        port = free_port()
        prefix = self.log_dir / "nginx"
        prefix.mkdir(exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(port, upstream_port, prefix, connections))
        argv = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        check = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)  # noqa: S603
        if check.returncode != 0:
            raise StackError(f"nginx rejected the generated config:\n{check.stderr}")
        return self._spawn("nginx", port, argv, dict(os.environ))

    def wait_http(self, proc: Proc, path: str, ok: set[int], timeout_s: float = 45.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not proc.alive():
                raise StackError(
                    f"{proc.name} exited with {proc.popen.returncode}; log tail:\n{proc.log_tail()}"
                )
            if http_status(proc.url + path) in ok:
                return
            time.sleep(0.2)
        raise StackError(
            f"{proc.name} not ready after {timeout_s:.0f} s; log tail:\n{proc.log_tail()}"
        )

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self.procs.clear()


def nginx_config(port: int, upstream_port: int, prefix: Path, connections: int) -> str:
    """One worker (like the single-process gateway), keep-alive to the upstream, and a line
    per request in an access log, as the gateway writes one (GEKKO_ACCESS_LOG, on by default)."""
    return f"""\
worker_processes 1;
pid {prefix}/nginx.pid;
daemon off;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream market_data {{
        server 127.0.0.1:{upstream_port};
        keepalive {max(connections, 16)};
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://market_data;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""
