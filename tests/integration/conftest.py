"""Real PostgreSQL, Redis and gekko processes on random free loopback ports.

Nothing here touches the ports a deployed stack uses (8000, 5432, 6379, 8101-8108). Missing
server binaries fail the run with the apt package to install: a silent skip would hide it.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from doubles.coinbase import CoinbaseDouble
from doubles.market_streams import MarketStreamsDouble
from doubles.oanda import OandaDouble
from doubles.serve import serve_in_thread
from gekko.config import DOMAIN_SERVICES
from gekko.exchanges import platform_keys
from gekko.security.crypto import DataKeys, generate_data_keys_file
from gekko.security.rbac import Role
from gekko.security.tokens import SigningKey, generate_key_files

from .alertmanager_double import AlertmanagerDouble

RESERVED_PORTS = {8000, 5432, 6379, 9093, *range(8101, 8109)}
SERVICES = DOMAIN_SERVICES
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def _wait_for(predicate, timeout: float, what: str, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.2)
    tail = ""
    if log_file is not None and log_file.exists():
        tail = "\n--- log tail ---\n" + "\n".join(log_file.read_text().splitlines()[-30:])
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last}){tail}")


def _pg_bindir() -> Path:
    override = os.environ.get("GEKKO_PG_BINDIR")
    candidates = [override] if override else sorted(glob.glob("/usr/lib/postgresql/*/bin"))[::-1]
    for cand in candidates:
        if cand and (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    pytest.fail(
        "PostgreSQL server binaries not found (looked for /usr/lib/postgresql/*/bin/initdb). "
        "Install them with: apt-get install -y postgresql-15   (or set GEKKO_PG_BINDIR)"
    )


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; drop to the postgres OS user when we are root.
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.fail("running as root needs `runuser` (apt-get install -y util-linux)")
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class Postgres:
    """The server, its owner (the migrations' role) and the services' least-privileged role,
    which `gekko migrate` creates, as a deploy does."""

    port: int
    password: str
    user: str = "gekko"
    database: str = "gekko"
    app_user: str = "gekko_app"
    app_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def url(self) -> str:
        return self.owner_url(self.database)

    @property
    def app_url(self) -> str:
        return self.services_url(self.database)

    def owner_url(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{LOOPBACK}:{self.port}/{database}"

    def services_url(self, database: str) -> str:
        return f"postgresql://{self.app_user}:{self.app_password}@{LOOPBACK}:{self.port}/{database}"

    def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.url)
            try:
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        return asyncio.run(run())


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    bindir = _pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="gekko-it-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, log_file = root / "data", root / "postgres.log"
    password = secrets.token_urlsafe(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    pg = Postgres(port=free_port(), password=password)
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "initdb"),
                "-D", str(data),
                "-U", pg.user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ]
        ),
        check=True,
        capture_output=True,
    )  # fmt: skip
    options = f"-p {pg.port} -k {root} -c listen_addresses={LOOPBACK} -c fsync=off"
    subprocess.run(
        _as_postgres(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log_file), "-o", options, "-w",
             "start"]
        ),
        check=True,
        capture_output=True,
    )  # fmt: skip
    try:

        async def create_db() -> None:
            conn = await asyncpg.connect(
                user=pg.user, password=password, host=LOOPBACK, port=pg.port, database="postgres"
            )
            try:
                await conn.execute(f"CREATE DATABASE {pg.database} OWNER {pg.user}")
            finally:
                await conn.close()

        asyncio.run(create_db())
        yield pg
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class RedisServer:
    port: int
    password: str

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{LOOPBACK}:{self.port}/0"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found. Install it with: apt-get install -y redis-server")
    server = RedisServer(port=free_port(), password=secrets.token_urlsafe(16))
    root = Path(tempfile.mkdtemp(prefix="gekko-it-redis-"))
    log_file = root / "redis.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [binary, "--port", str(server.port), "--bind", LOOPBACK, "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(root),
             "--requirepass", server.password],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def ready() -> bool:
            with socket.create_connection((LOOPBACK, server.port), timeout=1) as sock:
                sock.sendall(f"AUTH {server.password}\r\nPING\r\n".encode())
                time.sleep(0.05)
                return b"PONG" in sock.recv(100)

        _wait_for(ready, 15, "redis-server", log_file)
        yield server
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


# One access-token key pair for the run: every component verifies with the public key, the users
# service (and tests that need a token for a made-up user) sign with the private one.
_KEYS_DIR = tempfile.mkdtemp(prefix="gekko-keys-")
SIGNING_KEY_FILE, VERIFY_KEYS_FILE = generate_key_files(_KEYS_DIR)
signing_key = SigningKey(SIGNING_KEY_FILE)
# The data keys the users service encrypts TOTP seeds with.
DATA_KEYS_FILE = generate_data_keys_file(_KEYS_DIR)


def as_role(role: Role, user_id: int = 1, *, mfa: bool = True) -> dict[str, str]:
    """Bearer headers of a signed-in user with this role (a made-up user and session, with a
    second factor proved just now unless `mfa` is False)."""
    mfa_at = int(time.time()) if mfa else None
    token = signing_key.issue(user_id, str(uuid.uuid4()), role=role, mfa_at=mfa_at)
    return {"Authorization": f"Bearer {token}"}


# An operator, for the gateway's ops routes (/services, /config, /dashboard/kpis).
OPS = as_role(Role.OPERATOR)


def base_env(pg: Postgres, redis: RedisServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEKKO_")}
    env.update(
        GEKKO_DATABASE_URL=pg.app_url,
        GEKKO_MIGRATE_DATABASE_URL=pg.url,
        GEKKO_REDIS_URL=redis.url,
        GEKKO_JWT_VERIFY_KEYS_FILE=VERIFY_KEYS_FILE,
        GEKKO_JWT_SIGNING_KEY_FILE=SIGNING_KEY_FILE,
        GEKKO_DATA_KEYS_FILE=DATA_KEYS_FILE,
        GEKKO_BIND_HOST=LOOPBACK,
        GEKKO_ENVIRONMENT="test",
        GEKKO_LOG_LEVEL="INFO",
        # The access log off: each request then leaves a DEBUG line only, which
        # test_dynconfig_live switches on and off (the INFO access log has its own tests).
        GEKKO_ACCESS_LOG="false",
    )
    return env


def gekko_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gekko.cli", *args]


@pytest.fixture(scope="session")
def migrate_runs(
    postgres: Postgres, redis_server: RedisServer
) -> list[subprocess.CompletedProcess]:
    env = base_env(postgres, redis_server)
    return [
        subprocess.run(gekko_cmd("migrate"), env=env, capture_output=True, text=True, timeout=120)
        for _ in range(2)
    ]


def train_signal_model(path: Path) -> Path:
    """The signals service's model, trained small (seconds) for the stack's lifetime."""
    from gekko.signals.train import TrainConfig, write

    write(path, TrainConfig(samples=8_000, validation_samples=2_000, epochs=6))
    return path


@pytest.fixture(scope="session")
def alertmanager() -> Iterator[AlertmanagerDouble]:
    """The Alertmanager every alerts service of the run talks to: a double on loopback, so
    no test reaches a real one (a deployed stack's answers on 9093)."""
    double = AlertmanagerDouble(port=free_port())
    double.start()
    try:
        yield double
    finally:
        double.stop()


@dataclass
class Stack:
    env: dict[str, str]
    root: Path
    postgres: Postgres
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['gateway']}"

    def start(self, name: str, component: str, **extra_env: str) -> int:
        port = free_port()
        env = dict(self.env, GEKKO_PORT=str(port), **extra_env)
        log = (self.root / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            gekko_cmd("serve", component), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.ports[name] = port
        return port

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# The OANDA practice account the stack's trading service checks linked keys against: a double on
# loopback (tests/doubles). Coinbase is a double too (below), Binance.US a closed loopback port,
# so nothing a test sends (the fuzz test's keys included) ever leaves the machine.
OANDA_TOKEN = "oanda-practice-token-of-the-run"
OANDA_ACCOUNT = "101-004-1234567-001"
CLOSED_PORT_URL = f"http://{LOOPBACK}:9"


@pytest.fixture(scope="session")
def oanda() -> OandaDouble:
    """The double itself: tests read what reached it and set its faults."""
    return OandaDouble(OANDA_TOKEN, OANDA_ACCOUNT)


@pytest.fixture(scope="session")
def oanda_double(oanda: OandaDouble) -> Iterator[str]:
    url, stop = serve_in_thread(oanda.app())
    try:
        yield url
    finally:
        stop()


# Coinbase, in the same stack: its API and its OAuth2 login host, for accounts users link by
# signing in (gekko.services.venue_links). The redirect URI is only a name here: the test follows
# the consent's redirect itself, as the platform's page would.
COINBASE_CLIENT_ID = "gekko-it-client"
COINBASE_CLIENT_SECRET = "gekko-it-client-secret-" + secrets.token_hex(8)
COINBASE_REDIRECT_URI = "https://gekko.test/venue-links/coinbase"


@pytest.fixture(scope="session")
def coinbase() -> CoinbaseDouble:
    """The double itself: tests read what reached it and set its faults."""
    key = ec.generate_private_key(ec.SECP256R1())
    return CoinbaseDouble(
        "organizations/it/apiKeys/it",
        key.public_key(),
        client_id=COINBASE_CLIENT_ID,
        client_secret=COINBASE_CLIENT_SECRET,
        redirect_uri=COINBASE_REDIRECT_URI,
    )


@pytest.fixture(scope="session")
def coinbase_double(coinbase: CoinbaseDouble) -> Iterator[str]:
    url, stop = serve_in_thread(coinbase.app())
    try:
        yield url
    finally:
        stop()


# The venues' market-data streams (one producer behind the three), for market_data's feeds; its
# OANDA key is the platform's own, sealed under the data keys.
FEED_OANDA_TOKEN = "oanda-platform-stream-token"
FEED_OANDA_ACCOUNT = "101-004-7654321-001"


@pytest.fixture(scope="session")
def market_streams() -> MarketStreamsDouble:
    """The double itself: tests ask it for trades and drop its connections."""
    return MarketStreamsDouble(oanda_token=FEED_OANDA_TOKEN, oanda_account=FEED_OANDA_ACCOUNT)


@pytest.fixture(scope="session")
def market_streams_url(market_streams: MarketStreamsDouble) -> Iterator[str]:
    url, stop = serve_in_thread(market_streams.app())
    try:
        yield url
    finally:
        stop()


def market_feeds_env(root: Path, streams_url: str) -> dict[str, str]:
    """market_data's feeds, the platform's OANDA key sealed as the deploy seals it: under the
    key derived from the newest data key, which is all market_data gets."""
    key_file, keys_file = root / "platform-venue-key", root / "platform-venue-keys"
    data_keys = Path(DATA_KEYS_FILE).read_text().split()
    key_file.write_text(platform_keys.derived_key(data_keys) + "\n")
    sealed = platform_keys.seal(
        DataKeys(path=str(key_file)),
        {"oanda": {"api_token": FEED_OANDA_TOKEN, "account_id": FEED_OANDA_ACCOUNT}},
    )
    keys_file.write_text(sealed + "\n")
    ws = streams_url.replace("http://", "ws://")
    return {
        "GEKKO_MARKET_FEEDS": '{"binanceus": ["BTCUSD"], "coinbase": ["BTC-USD"], '
        '"oanda": ["EUR_USD"]}',
        "GEKKO_BINANCEUS_STREAM_URL": ws,
        # Binance.US's REST host, for the trades a feed missed (trading's points elsewhere).
        "GEKKO_BINANCEUS_BASE_URL": streams_url,
        "GEKKO_COINBASE_STREAM_URL": f"{ws}/ws",
        "GEKKO_OANDA_STREAM_URL": streams_url,
        "GEKKO_PLATFORM_VENUE_KEYS_FILE": str(keys_file),
        "GEKKO_PLATFORM_VENUE_KEY_FILE": str(key_file),
        # market_data holds no data key: the derived one opens the platform's keys only.
        "GEKKO_DATA_KEYS_FILE": "",
    }


@pytest.fixture(scope="session")
def stack(
    postgres: Postgres,
    redis_server: RedisServer,
    migrate_runs: list,
    alertmanager: AlertmanagerDouble,
    oanda_double: str,
    coinbase_double: str,
) -> Iterator[Stack]:
    if migrate_runs[0].returncode != 0:
        pytest.fail(f"gekko migrate failed:\n{migrate_runs[0].stderr}")
    root = Path(tempfile.mkdtemp(prefix="gekko-it-stack-"))
    st = Stack(env=base_env(postgres, redis_server), root=root, postgres=postgres)
    st.env["GEKKO_SIGNAL_MODEL_PATH"] = str(train_signal_model(root / "signal-model.pt"))
    st.env["GEKKO_ALERTMANAGER_URL"] = alertmanager.url
    client_secret_file = root / "coinbase-oauth-client-secret"
    client_secret_file.write_text(COINBASE_CLIENT_SECRET + "\n")
    st.env.update(
        GEKKO_EXCHANGE_MODE="sandbox",
        GEKKO_OANDA_BASE_URL=oanda_double,
        GEKKO_BINANCEUS_BASE_URL=CLOSED_PORT_URL,
        GEKKO_COINBASE_BASE_URL=coinbase_double,
        GEKKO_COINBASE_OAUTH_URL=coinbase_double,
        GEKKO_COINBASE_OAUTH_CLIENT_ID=COINBASE_CLIENT_ID,
        GEKKO_COINBASE_OAUTH_CLIENT_SECRET_FILE=str(client_secret_file),
        GEKKO_COINBASE_OAUTH_REDIRECT_URI=COINBASE_REDIRECT_URI,
        # Venue orders whose answer was lost are looked up every second, not every 10.
        GEKKO_VENUE_RECONCILE_INTERVAL_S="1",
    )
    try:
        for service in SERVICES:
            st.start(service, service)
        st.start("gateway", "gateway")

        def all_healthy() -> bool:
            for name, proc in st.procs.items():
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode}:\n{st.log_tail(name)}")
            return httpx.get(f"{st.gateway}/health", timeout=2).status_code == 200

        _wait_for(all_healthy, 60, "gateway /health to report every service", root / "gateway.log")
        yield st
    finally:
        for name in list(st.procs):
            st.stop(name)
        shutil.rmtree(root, ignore_errors=True)


# --- domain / event-bus helpers (shared by the domain, events, trace and dashboard tests) ---


@pytest.fixture
def step(stack) -> int:
    """The current TOTP time step, with at least 15 s of it left, so the codes a test derives
    from it (one step back, this one, one ahead) stay valid while it runs."""
    while time.time() % 30 > 15:
        time.sleep(0.5)
    return int(time.time() // 30)


def eventually(check, timeout: float = 15.0, what: str = "condition", interval: float = 0.2):
    """Poll `check` until it returns a truthy value (returned) or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except (AssertionError, httpx.HTTPError, KeyError, IndexError) as exc:
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def new_user(
    base_url: str,
    name: str | None = None,
    password: str = "correct-horse",  # noqa: S107
) -> tuple[dict[str, str], int]:
    """Register and log in a fresh user; returns (auth headers, user id)."""
    name = name or f"d{secrets.token_hex(6)}"
    reg = httpx.post(
        f"{base_url}/api/v1/users/register",
        json={"username": name, "email": f"{name}@example.com", "password": password},
        timeout=10,
    )
    assert reg.status_code == 201, reg.text
    login = httpx.post(
        f"{base_url}/api/v1/users/login",
        json={"username": name, "password": password},
        timeout=10,
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}, reg.json()["id"]
