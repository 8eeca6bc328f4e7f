"""`gekko` command line: serve a component, run migrations, health-check for Docker, search the
central logs, or train the signals model."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from gekko import healthprobe
from gekko.config import (
    COMPONENTS,
    UPSTREAM_KEEPALIVE_S,
    ConfigError,
    database_url_from_env,
    load_settings,
)

# Docker's health check is gekko/healthprobe.py run as a script, without this module. The
# logging, tracing and server stacks load only in the commands that use them.


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
    from gekko.security.header_guard import guarded_protocol

    try:
        app = build_app(settings)
    except ConfigError as exc:
        print(f"gekko: configuration error: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        # Slow or oversized request headers are cut off (408 / 431) before the app sees them.
        http=guarded_protocol(settings.header_timeout_s, settings.max_header_bytes),
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
        # Longer than the gateway keeps an idle upstream connection (UPSTREAM_KEEPALIVE_S, 30 s):
        # the client closes first. At uvicorn's 5 s a service closed connections the gateway was
        # about to reuse, and a login POST written into one failed with 502 ("Can not write
        # request body"), not retried, as a POST without an Idempotency-Key may not be.
        timeout_keep_alive=UPSTREAM_KEEPALIVE_S + 45,
    )
    if settings.serves_tls:
        from gekko.tls import edge_context, server_context

        # uvicorn builds its context from file names alone; these also pin TLS 1.3 and, on a
        # domain service, require the client certificate.
        config.load()
        if settings.edge_tls is not None:
            config.ssl = edge_context(settings.edge_tls)
        else:
            config.ssl = server_context(settings.tls)  # type: ignore[arg-type]
    server = _draining_server_class(uvicorn.Server, app.state)(config)
    server.socket_files = [healthprobe.socket_path()]
    server.run(
        sockets=[
            listening_socket(settings.bind_host, settings.port),
            health_socket(server.socket_files[0]),
        ]
    )
    return 0


def health_socket(path: str) -> socket.socket:
    """A listener only this container reaches. During a handover two instances share the TCP
    port, so a check over TCP may be answered by the old one while the new one does not even
    listen yet; over this socket only the container's own server answers."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)  # left by a previous run of this server
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def _freeze_startup_objects() -> None:
    """Everything built while starting (modules, the app, a loaded model) lives as long as the
    process: moved out of the garbage collector's sight, a full collection no longer walks it.
    In the signals service one such walk took about 110 ms (200,000 objects with torch), and
    stalled every request in flight: the inference p99 at 100/s (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()


def _draining_server_class(base: type, app_state: object) -> type:
    class DrainingServer(base):  # type: ignore[misc, valid-type]
        """On SIGUSR1 (sent by the deployment before it stops an instance) stop accepting new
        connections and run the app's drain hooks; open connections are served until SIGTERM."""

        socket_files: Sequence[str] = ()  # removed on shutdown

        async def startup(self, sockets=None):  # type: ignore[no-untyped-def]
            import asyncio

            loop = asyncio.get_running_loop()
            if self.config.ssl is None or not sockets:
                await super().startup(sockets=sockets)
            else:
                # uvicorn would speak TLS on every listener; the container's own health socket
                # stays plain HTTP, so `gekko healthcheck` needs no TLS client.
                local = [s for s in sockets if s.family == socket.AF_UNIX]
                await super().startup(sockets=[s for s in sockets if s not in local])
                for sock in local:
                    self.servers.append(await loop.create_server(self._plain_protocol, sock=sock))
            loop.add_signal_handler(signal.SIGUSR1, self.drain)
            _freeze_startup_objects()

        def _plain_protocol(self):  # type: ignore[no-untyped-def]
            # As uvicorn's own protocol factory in Server.startup (uvicorn is pinned).
            return self.config.http_protocol_class(
                config=self.config, server_state=self.server_state, app_state=self.lifespan.state
            )

        async def shutdown(self, sockets=None):  # type: ignore[no-untyped-def]
            await super().shutdown(sockets=sockets)
            # Here, not after run(): uvicorn re-raises SIGTERM once it has shut down.
            for path in self.socket_files:
                with contextlib.suppress(OSError):
                    os.remove(path)

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
    # The migrations run as the database's owner; the services' own role (GEKKO_DATABASE_URL) is
    # then made or mended to hold only the privileges they use (gekko.security.db_roles).
    owner_url = os.environ.get("GEKKO_MIGRATE_DATABASE_URL", "").strip() or database_url
    try:
        result = run_migrations(owner_url, wait_s)
    except DatabaseUnavailableError as exc:
        print(f"gekko-migrate: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        logging.getLogger("gekko.migrate").exception("migration failed")
        print(f"gekko-migrate: error: migration failed: {exc}", file=sys.stderr)
        return 1
    print(format_result(result), flush=True)
    status = _monthly_partitions(owner_url)
    if status:
        return status
    if owner_url != database_url:
        status = _application_role(owner_url, database_url)
        if status:
            return status
    return _bootstrap_accounts(owner_url)


def _monthly_partitions(owner_url: str) -> int:
    """The kept tables' monthly partitions a year ahead (gekko.archive), at each deploy."""
    import asyncio
    from datetime import UTC, datetime

    import asyncpg

    from gekko.archive.archiver import make_months

    async def make() -> list[str]:
        conn = await asyncpg.connect(owner_url, timeout=10)
        try:
            return await make_months(conn, datetime.now(UTC))
        finally:
            await conn.close()

    try:
        made = asyncio.run(make())
    except asyncpg.LockNotAvailableError:
        # Not urgent: the default partition takes the rows, the next run makes the months.
        print("gekko-migrate: warning: the months ahead were not made (orders table busy)")
        return 0
    except (asyncpg.PostgresError, OSError) as exc:
        print(f"gekko-migrate: error: the monthly partitions: {exc}", file=sys.stderr)
        return 1
    if made:
        print(f"gekko-migrate: partitions made: {', '.join(made)}", flush=True)
    return 0


def _application_role(owner_url: str, database_url: str) -> int:
    import asyncio

    import asyncpg

    from gekko.migrate import redact
    from gekko.security.db_roles import DatabaseRoleError, ensure_application_role

    try:
        lines = asyncio.run(ensure_application_role(owner_url, database_url))
    except (DatabaseRoleError, asyncpg.PostgresError, OSError) as exc:
        role = redact(database_url)
        print(f"gekko-migrate: error: the services' database role ({role}): {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(f"gekko-migrate: {line}", flush=True)
    return 0


def _bootstrap_accounts(database_url: str) -> int:
    """After the migrations: the deployment's own accounts, when the deploy passes their
    passwords (gekko.services.admin_bootstrap)."""
    env = os.environ
    admin_password = env.get("GEKKO_BOOTSTRAP_ADMIN_PASSWORD", "")
    monitor_password = env.get("GEKKO_BOOTSTRAP_MONITOR_PASSWORD", "")
    if not admin_password and not monitor_password:
        return 0
    import asyncio

    from gekko.security.crypto import DataKeys
    from gekko.security.keyfiles import KeyFileError
    from gekko.security.rbac import Role
    from gekko.services import admin_bootstrap as boot

    admin = monitor = keys = None
    if admin_password:
        admin = boot.BootstrapAccount(
            username=env.get("GEKKO_BOOTSTRAP_ADMIN_USERNAME", "") or boot.DEFAULT_ADMIN_USERNAME,
            email=env.get("GEKKO_BOOTSTRAP_ADMIN_EMAIL", "") or boot.DEFAULT_ADMIN_EMAIL,
            password=admin_password,
            totp_secret=env.get("GEKKO_BOOTSTRAP_ADMIN_TOTP_SECRET", "").strip().upper(),
        )
    if monitor_password:
        monitor = boot.BootstrapAccount(
            username=env.get("GEKKO_BOOTSTRAP_MONITOR_USERNAME", "")
            or boot.DEFAULT_MONITOR_USERNAME,
            email=env.get("GEKKO_BOOTSTRAP_MONITOR_EMAIL", "") or boot.DEFAULT_MONITOR_EMAIL,
            password=monitor_password,
            role=Role.VIEWER,
        )
    try:
        if env.get("GEKKO_DATA_KEYS", "").strip():
            keys = DataKeys(text=env["GEKKO_DATA_KEYS"])
        lines = asyncio.run(boot.ensure_accounts(database_url, admin, monitor, keys))
    except (boot.BootstrapError, KeyFileError) as exc:
        print(f"gekko-migrate: error: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(f"gekko-migrate: {line}", flush=True)
    return 0


def _reencrypt(check: bool) -> int:
    """`gekko reencrypt`: every value encrypted at rest moved to the newest data key
    (GEKKO_DATA_KEYS, or the file in GEKKO_DATA_KEYS_FILE); exit 1 if anything is left behind."""
    import asyncio

    from gekko.reencrypt import reencrypt
    from gekko.security.crypto import DataKeys
    from gekko.security.keyfiles import KeyFileError

    try:
        database_url = database_url_from_env()
        text, path = os.environ.get("GEKKO_DATA_KEYS", ""), os.environ.get("GEKKO_DATA_KEYS_FILE")
        keys = DataKeys(text=text) if text.strip() or not path else DataKeys(path=path)
    except (ConfigError, KeyFileError) as exc:
        print(f"gekko-reencrypt: configuration error: {exc}", file=sys.stderr)
        return 2
    moved = 0 if check else asyncio.run(reencrypt(database_url, keys)).moved
    left = asyncio.run(reencrypt(database_url, keys, check=True))
    print(
        f"gekko-reencrypt: moved {moved} value(s) to data key {keys.current_id}; "
        f"{left.left} left on older keys; {left.unreadable} unreadable",
        flush=True,
    )
    if left.unreadable:
        print(
            f"gekko-reencrypt: {left.unreadable} value(s) cannot be decrypted with these keys: "
            "put back the key they were encrypted with (or they were altered)",
            file=sys.stderr,
        )
    if left.left:
        print(f"gekko-reencrypt: {left.left} value(s) still on an older data key", flush=True)
    return 1 if left.left or left.unreadable else 0


def _anchor_lines(path: str | None) -> list[str]:
    """The first word of each line of an anchors file (the controller's: ROW:HASH time event)."""
    if not path:
        return []
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def _audit_anchors(texts: list[str]) -> list:
    from gekko.security.audit_anchors import Anchor

    return [Anchor.parse(text) for text in texts]


def _audit_record(
    event: str, operator: str, component: str, details: list[str], anchor_texts: list[str]
) -> int:
    """`gekko audit record`: one row for an operation outside the services (a deploy, a
    rollback, a rotation), with who ran it. Prints the chain's new head, for the caller to keep
    as an anchor; with --anchor, an earlier head that no longer matches is reported (exit 3)
    after the row is written: the operation happened either way."""
    import asyncio
    from datetime import UTC, datetime

    import asyncpg

    from gekko.correlation import correlation_id_var
    from gekko.security.audit import AuditEntry, append
    from gekko.security.audit_anchors import check_anchors

    try:
        database_url = database_url_from_env()
        anchors = _audit_anchors(anchor_texts)
    except (ConfigError, ValueError) as exc:
        print(f"gekko-audit: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        pairs = dict(item.split("=", 1) for item in details)
    except ValueError:
        print("gekko-audit: each --detail is name=value", file=sys.stderr)
        return 2
    entry = AuditEntry(
        event=event,
        component=component,
        at=datetime.now(UTC),
        correlation_id=correlation_id_var.get() or "",
        details={"operator": operator, **pairs},
    )

    async def write() -> tuple[list[str], tuple[int, bytes]]:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            problems = await check_anchors(conn, anchors) if anchors else []
            return problems, await append(conn, [entry])
        finally:
            await conn.close()

    problems, (seq, head) = asyncio.run(write())
    print(f"gekko-audit: recorded {event} by {operator} at row {seq}, anchor {seq}:{head.hex()}",
          flush=True)  # fmt: skip
    for problem in problems:
        print(f"gekko-audit: the audit log was altered: {problem}", file=sys.stderr)
    return 3 if problems else 0


def _audit_verify(anchor_texts: list[str]) -> int:
    """`gekko audit verify`: walks the audit log's hash chain; exit 1 at the first row that
    does not fit (changed, removed or reordered), or when an anchored row is gone or changed
    (the chain rewritten or cut back past it)."""
    import asyncio

    import asyncpg

    from gekko.security.audit import ChainReport, verify_stored_chain
    from gekko.security.audit_anchors import check_anchors

    try:
        database_url = database_url_from_env()
        anchors = _audit_anchors(anchor_texts)
    except (ConfigError, ValueError) as exc:
        print(f"gekko-audit: configuration error: {exc}", file=sys.stderr)
        return 2

    async def verify() -> tuple[ChainReport, list[str]]:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            report = await verify_stored_chain(conn)
            return report, await check_anchors(conn, anchors) if anchors else []
        finally:
            await conn.close()

    report, problems = asyncio.run(verify())
    if report.broken_at is not None:
        print(
            f"gekko-audit: the chain breaks at row {report.broken_at}: {report.reason} "
            f"({report.rows} row(s) before it are intact)",
            file=sys.stderr,
        )
        return 1
    for problem in problems:
        print(f"gekko-audit: the audit log was altered: {problem}", file=sys.stderr)
    if problems:
        return 1
    anchored = f", {len(anchors)} anchor(s) match" if anchors else ""
    archived = f" ({report.archived} in archived months)" if report.archived else ""
    print(f"gekko-audit: {report.rows} row(s){archived}, chain intact{anchored}, "
          f"head {report.head.hex()}", flush=True)  # fmt: skip
    return 0


def healthcheck(url: str, timeout_s: float = 2.0, tls_dir: str | None = None) -> int:
    if not url.startswith(("http://", "https://")):
        print(f"gekko healthcheck: not an http(s) URL: {url}", file=sys.stderr)
        return 1
    context = None
    if tls_dir:
        from gekko.config import TlsFiles
        from gekko.tls import client_context

        try:
            context = client_context(TlsFiles.in_directory(tls_dir))
        except (OSError, ValueError) as exc:
            print(f"gekko healthcheck: the TLS files in {tls_dir}: {exc}", file=sys.stderr)
            return 1
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:  # noqa: S310 - scheme checked
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"gekko healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gekko", description="Gekko trading platform")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one component (uvicorn, single worker)")
    serve.add_argument("component", choices=COMPONENTS)
    sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    audit = sub.add_parser("audit", help="the audit log")
    audit_actions = audit.add_subparsers(dest="action", required=True)
    verify = audit_actions.add_parser("verify", help="check the hash chain from the first row")
    record = audit_actions.add_parser("record", help="append a row (deploys, rollbacks)")
    record.add_argument("event", help="for example deploy-succeeded")
    record.add_argument("--operator", required=True, help="who ran it")
    record.add_argument("--component", default="deploy")
    record.add_argument("--detail", action="append", default=[], metavar="NAME=VALUE")
    verify.add_argument(
        "--anchors-file",
        metavar="PATH",
        help="anchors, one per line (ROW:HASH first on each; - for standard input)",
    )
    for action in (verify, record):
        action.add_argument(
            "--anchor",
            action="append",
            default=[],
            metavar="ROW:HASH",
            help="a row's hash written down when it was appended: it must still be there",
        )
    reencrypt = sub.add_parser(
        "reencrypt", help="move every value encrypted at rest to the newest data key"
    )
    reencrypt.add_argument(
        "--check", action="store_true", help="only count the values left on older keys"
    )
    alerts = sub.add_parser(
        "alerts", help="alerts Alertmanager sent: list, show a history, acknowledge"
    )
    alerts_actions = alerts.add_subparsers(dest="action", required=True)
    alerts_list = alerts_actions.add_parser("list", help="the latest alerts first")
    alerts_list.add_argument("--status", choices=("firing", "acknowledged", "resolved"))
    alerts_list.add_argument("--limit", type=int, default=50)
    alerts_show = alerts_actions.add_parser("show", help="one alert's history, step by step")
    alerts_show.add_argument("id", type=int)
    alerts_ack = alerts_actions.add_parser(
        "ack", help="acknowledge: an Alertmanager silence, which stops the escalation"
    )
    alerts_ack.add_argument("id", type=int)
    alerts_ack.add_argument("--by", required=True, help="who acknowledges (the silence's creator)")
    alerts_ack.add_argument("--comment", required=True, help="why, or what is being done")
    for action in (alerts_list, alerts_show, alerts_ack):
        action.add_argument("--json", action="store_true", help="as the API answers")
    check = sub.add_parser(
        "healthcheck",
        help="exit 0 if GET /health answers 200; without --url, only this container's "
        "own server counts",
    )
    check.add_argument("--url", help="any /health URL (default: the local server's own)")
    check.add_argument("--timeout", type=float, default=2.0)
    check.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="for an https URL served with mutual TLS: present DIR/tls.crt and DIR/tls.key, "
        "check the server against DIR/ca.crt",
    )
    sub.add_parser(
        "container-exporter",
        help="serve the deployment's per-container CPU, memory and restarts for Prometheus",
        add_help=False,
    )
    sub.add_parser(
        "logs",
        help="follow one request across services in the central log store (on a logs host)",
        add_help=False,
    )
    sub.add_parser(
        "exchange",
        help="check a venue (Binance.US, Coinbase, OANDA) with this environment's credentials",
        add_help=False,
    )
    sub.add_parser(
        "archive",
        help="retention: archive months past their hot window, verify, restore one, prune",
        add_help=False,
    )
    train = sub.add_parser(
        "train-signal-model", help="train the signals model on generated prices and write it"
    )
    train.add_argument("--out", required=True, help="model file to write")
    train.add_argument("--seed", type=int, help="data and initialisation seed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["container-exporter"]:
        from gekko.observability.containers import main as exporter_main

        return exporter_main(argv[1:])
    if argv[:1] == ["logs"]:
        from gekko.observability.logsearch import main as logs_main

        return logs_main(argv[1:])
    if argv[:1] == ["exchange"]:
        from gekko.exchanges.cli import main as exchange_main

        return exchange_main(argv[1:])
    if argv[:1] == ["archive"]:
        from gekko.archive.cli import main as archive_main

        return archive_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.component)
    if args.command == "audit" and args.action == "record":
        return _audit_record(args.event, args.operator, args.component, args.detail, args.anchor)
    if args.command == "audit":
        return _audit_verify(args.anchor + _anchor_lines(args.anchors_file))
    if args.command == "reencrypt":
        return _reencrypt(args.check)
    if args.command == "alerts":
        from gekko.services.alerts.cli import run as alerts_run

        return alerts_run(args)
    if args.command == "migrate":
        return _migrate()
    if args.command == "train-signal-model":
        from gekko.signals.train import main as train_main

        seed = [] if args.seed is None else ["--seed", str(args.seed)]
        return train_main(["--out", args.out, *seed])
    if args.url:
        return healthcheck(args.url, args.timeout, args.tls_dir)
    return healthprobe.check(args.timeout)


if __name__ == "__main__":
    sys.exit(main())
