"""`gekko` command line: serve a component, run migrations, health-check for Docker, or train
the signals model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence

from gekko.config import COMPONENTS, ConfigError, database_url_from_env, load_settings

# Docker runs `gekko healthcheck` every few seconds in every container: it imports nothing but
# the standard library and the settings, so the logging, tracing and server stacks load only
# in the commands that use them.


def _serve(component: str) -> int:
    try:
        settings = load_settings(component)
    except ConfigError as exc:
        print(f"gekko: configuration error: {exc}", file=sys.stderr)
        return 2
    from gekko.logs import configure_logging

    configure_logging(component, settings.instance_id, settings.log_level)

    import uvicorn

    from gekko.apps import build_app

    try:
        app = build_app(settings)
    except ConfigError as exc:
        print(f"gekko: configuration error: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.port,
        workers=1,
        lifespan="on",
        access_log=False,
        log_config=None,  # keep our JSON handler
        log_level=settings.log_level.lower(),
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    server = _draining_server_class(uvicorn.Server, app.state)(config)
    sock = listening_socket(settings.bind_host, settings.port)
    app.state.process_id = uuid.uuid4().hex
    record_process(app.state.process_id)
    try:
        server.run(sockets=[sock])
    finally:
        forget_process(app.state.process_id)
    return 0


def process_file(env: dict[str, str] | None = None) -> str:
    """Where a serving process records its id for `gekko healthcheck` in the same container."""
    env = dict(os.environ) if env is None else env
    return env.get("GEKKO_PROCESS_FILE") or f"/tmp/gekko-{env.get('GEKKO_PORT') or '8000'}.process"  # noqa: S108 - /tmp is the container's own tmpfs


def record_process(process_id: str) -> None:
    path = process_file()
    with open(path + ".new", "w", encoding="utf-8") as out:
        out.write(process_id)
    os.replace(path + ".new", path)  # the health check never reads half a file


def forget_process(process_id: str) -> None:
    path = process_file()
    try:
        with open(path, encoding="utf-8") as recorded:
            if recorded.read() == process_id:  # not a newer process's record on a shared /tmp
                os.remove(path)
    except OSError:
        pass


def _draining_server_class(base: type, app_state: object) -> type:
    class DrainingServer(base):  # type: ignore[misc, valid-type]
        """On SIGUSR1 (sent by the deployment before it stops an instance) stop accepting new
        connections and run the app's drain hooks; open connections are served until SIGTERM."""

        async def startup(self, sockets=None):  # type: ignore[no-untyped-def]
            import asyncio

            await super().startup(sockets=sockets)
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.drain)

        def drain(self) -> None:
            logging.getLogger("gekko.cli").info("draining: no new connections")
            for listener in self.servers:
                listener.close()
            for hook in getattr(app_state, "drain_hooks", []):
                hook()

    return DrainingServer


def listening_socket(host: str, port: int) -> socket.socket:
    """A listener that a second instance can share during a zero-downtime handover.

    With SO_REUSEPORT the new instance binds the same port while the old one still serves;
    the kernel spreads new connections over both until the old one closes its listener.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _migrate() -> int:
    try:
        database_url = database_url_from_env()
    except ConfigError as exc:
        print(f"gekko-migrate: configuration error: {exc}", file=sys.stderr)
        return 2
    from gekko.logs import configure_logging

    configure_logging("migrate", "migrate", os.environ.get("GEKKO_LOG_LEVEL", "WARNING").upper())

    from gekko.migrate import (
        CONNECT_WAIT_S,
        DatabaseUnavailableError,
        format_result,
        run_migrations,
    )

    try:
        wait_s = float(os.environ.get("GEKKO_MIGRATE_WAIT_S", "") or CONNECT_WAIT_S)
    except ValueError:
        print(
            "gekko-migrate: configuration error: GEKKO_MIGRATE_WAIT_S must be a number",
            file=sys.stderr,
        )
        return 2
    try:
        result = run_migrations(database_url, wait_s)
    except DatabaseUnavailableError as exc:
        print(f"gekko-migrate: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        logging.getLogger("gekko.migrate").exception("migration failed")
        print(f"gekko-migrate: error: migration failed: {exc}", file=sys.stderr)
        return 1
    print(format_result(result), flush=True)
    return 0


def default_health_url(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    host = env.get("GEKKO_BIND_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # noqa: S104 - a wildcard bind is reached via loopback
        host = "127.0.0.1"
    port = env.get("GEKKO_PORT") or "8000"
    return f"http://{host}:{port}/health"


def healthcheck(url: str, timeout_s: float = 2.0, process_id: str | None = None) -> int:
    """0 if `url` answers 200 and, given `process_id`, the answer comes from that process."""
    if not url.startswith(("http://", "https://")):
        print(f"gekko healthcheck: not an http(s) URL: {url}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - scheme checked
            if response.status != 200:
                return 1
            answered_by = json.loads(response.read()).get("process") if process_id else None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"gekko healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if process_id and answered_by != process_id:
        # During a handover the old instance still holds the shared port: its "ok" says nothing
        # about this one, which may not even listen yet.
        print(f"gekko healthcheck: {url} was answered by another process", file=sys.stderr)
        return 1
    return 0


def self_check(timeout_s: float) -> int:
    """The container's health check: this instance's own server answers /health with 200."""
    try:
        with open(process_file(), encoding="utf-8") as recorded:
            process_id = recorded.read().strip()
    except OSError:
        print("gekko healthcheck: the server has not started yet", file=sys.stderr)
        return 1
    return healthcheck(default_health_url(), timeout_s, process_id)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gekko", description="Gekko trading platform")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one component (uvicorn, single worker)")
    serve.add_argument("component", choices=COMPONENTS)
    sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    check = sub.add_parser(
        "healthcheck",
        help="exit 0 if GET /health answers 200; without --url, only this container's "
        "own server counts",
    )
    check.add_argument("--url", help="any /health URL (default: the local server's own)")
    check.add_argument("--timeout", type=float, default=2.0)
    train = sub.add_parser(
        "train-signal-model", help="train the signals model on generated prices and write it"
    )
    train.add_argument("--out", required=True, help="model file to write")
    train.add_argument("--seed", type=int, help="data and initialisation seed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.component)
    if args.command == "migrate":
        return _migrate()
    if args.command == "train-signal-model":
        from gekko.signals.train import main as train_main

        seed = [] if args.seed is None else ["--seed", str(args.seed)]
        return train_main(["--out", args.out, *seed])
    if args.url:
        return healthcheck(args.url, args.timeout)
    return self_check(args.timeout)


if __name__ == "__main__":
    sys.exit(main())
