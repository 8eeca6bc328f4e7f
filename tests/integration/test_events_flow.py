"""Event bus end to end: one executed order reaches portfolio, gamification, social and the
KPIs; redelivery changes nothing; a Redis outage delays events but loses none (outbox)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis as redis_sync
from redis.asyncio import Redis

from gekko import kpis

from .conftest import (
    LOOPBACK,
    Stack,
    _wait_for,
    base_env,
    eventually,
    free_port,
    gekko_cmd,
    new_user,
    signing_key,
)

pytestmark = pytest.mark.integration

GROUPS = {
    "gekko:events:trading": ("portfolio", "gamification", "social", "kpis"),
    "gekko:events:users": ("gamification", "social", "kpis"),
}


def read_kpis(url: str) -> dict:
    async def run() -> dict:
        client = Redis.from_url(url)
        try:
            return await kpis.read_kpis(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


def _state(stack: Stack, auth: dict[str, str], user_id: int) -> dict:
    portfolio = httpx.get(f"{stack.gateway}/api/v1/portfolio", headers=auth).json()
    profile = httpx.get(
        f"{stack.gateway}/api/v1/gamification/user/{user_id}/profile", headers=auth
    ).json()
    feed = httpx.get(
        f"{stack.gateway}/api/v1/social/feed", params={"limit": 200}, headers=auth
    ).json()
    return {
        "portfolio": portfolio,
        "points": profile["points"],
        "achievements": sorted(a["code"] for a in profile["achievements"]),
        "shares": [i for i in feed["items"] if i["kind"] == "trade" and i["user_id"] == user_id],
    }


def share_trades(stack: Stack, auth: dict[str, str]) -> None:
    """Fills reach the social feed only for a user who chose that."""
    chosen = httpx.put(
        f"{stack.gateway}/api/v1/social/sharing", json={"share_trades": True}, headers=auth
    )
    assert chosen.status_code == 200 and chosen.json()["share_trades"] is True, chosen.text


def test_executed_order_reaches_every_consumer_and_the_kpis(stack, redis_server):
    before = read_kpis(redis_server.url)
    auth, user_id = new_user(stack.gateway)
    share_trades(stack, auth)
    order = httpx.post(
        f"{stack.gateway}/api/v1/trading/execute",
        json={"symbol": "BTC-USD", "side": "buy", "quantity": "0.2"},
        headers=auth,
    ).json()
    assert order["status"] == "filled"

    def converged() -> dict | None:
        s = _state(stack, auth, user_id)
        done = s["portfolio"]["trades"] == 1 and "first_trade" in s["achievements"] and s["shares"]
        return s if done else None

    state = eventually(converged, timeout=15, what="portfolio, points and trade share")
    # Portfolio: its own projection, same numbers as the trading fill.
    p = state["portfolio"]
    spent = Decimal(str(order["notional"])) + Decimal(str(order["fee"]))
    assert Decimal(str(p["cash"])) == Decimal(100_000) - spent
    [position] = p["positions"]
    assert (position["symbol"], position["quantity"]) == ("BTC-USD", 0.2)
    assert Decimal(str(position["cost_basis"])) == spent
    assert p["total_equity"] == pytest.approx(p["cash"] + position["market_value"])
    # Gamification: registration (10) + trade (10) + first trade (25) + 1/1000 USD volume.
    assert state["points"] == 45 + int(Decimal(str(order["notional"])) // 1000)
    assert state["achievements"] == ["first_trade", "volume_10k", "welcome"]
    # Social: the fill appears as a trade share.
    [share] = state["shares"]
    assert share["trade"]["order_id"] == order["id"] and share["body"].startswith("bought 0.2")

    def kpis_moved() -> dict | None:
        after = read_kpis(redis_server.url)
        ok = (
            after["orders_executed"] >= before["orders_executed"] + 1
            and after["registrations"] >= before["registrations"] + 1
            and after["points_awarded"] >= before["points_awarded"] + state["points"]
            and after["social_engagement"] >= before["social_engagement"] + 1
            and after["notional_volume_usd"]
            >= before["notional_volume_usd"] + order["notional"] - 0.01
        )
        return after if ok else None

    after = eventually(kpis_moved, timeout=10, what="KPIs to count the trade")
    assert after["active_users"] >= 1
    assert 0 < after["fill_rate"] <= 1
    assert after["execution_latency_p95_ms"] > 0


def _drained(client: redis_sync.Redis, stream: str, groups: tuple[str, ...], last_id: bytes):
    """True once every group has delivered past last_id and has nothing pending."""
    info = {g["name"].decode(): g for g in client.xinfo_groups(stream)}
    for group in groups:
        g = info[group]
        delivered = tuple(map(int, g["last-delivered-id"].split(b"-")))
        if delivered < tuple(map(int, last_id.split(b"-"))) or g["pending"]:
            return False
    return True


def test_duplicate_delivery_changes_nothing(stack, redis_server):
    auth, user_id = new_user(stack.gateway)
    share_trades(stack, auth)
    order = httpx.post(
        f"{stack.gateway}/api/v1/trading/execute",
        json={"symbol": "ETH-USD", "side": "buy", "quantity": 1},
        headers=auth,
    ).json()
    before = eventually(
        lambda: (
            (s := _state(stack, auth, user_id))["portfolio"]["trades"] == 1
            and s["shares"]
            and s["points"] > 10
            and s
        ),
        what="first delivery",
    )
    client = redis_sync.Redis.from_url(redis_server.url)
    try:
        # Redeliver this user's registration and execution events, as a relay retry would.
        last = None
        for stream in GROUPS:
            for _entry_id, fields in client.xrange(stream):
                if f'"user_id":{user_id},'.encode() in fields[b"payload"]:
                    last = client.xadd(stream, fields)
        assert last is not None
        kpis_before = read_kpis(redis_server.url)
        for stream, groups in GROUPS.items():
            tail = client.xinfo_stream(stream)["last-generated-id"]
            eventually(
                lambda s=stream, g=groups, t=tail: _drained(client, s, g, t),
                what=f"{stream} drained",
            )
    finally:
        client.close()
    after = _state(stack, auth, user_id)

    def stored(state: dict) -> dict:  # the projection, without market-price valuations
        p = state["portfolio"]
        positions = [(x["symbol"], x["quantity"], x["cost_basis"]) for x in p["positions"]]
        book = {k: p[k] for k in ("cash", "realized_pnl", "fees_paid", "trades")}
        return {**state, "portfolio": {**book, "positions": positions}}

    assert stored(after) == stored(before)
    kpis_after = read_kpis(redis_server.url)
    for name in ("orders_executed", "registrations", "points_awarded", "notional_volume_usd"):
        assert kpis_after[name] == kpis_before[name], name
    rows = stack.postgres.fetch(
        "SELECT count(*) AS n FROM portfolio.processed_events pe "
        "JOIN trading.outbox o USING (event_id) WHERE o.payload->>'order_id' = $1",
        str(order["id"]),
    )
    assert rows[0]["n"] == 1


# --- Redis outage: a separate database, Redis and services, so the shared stack is untouched --


class Outage:
    def __init__(self, root: Path, port: int, password: str) -> None:
        self.root, self.port, self.password = root, port, password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{LOOPBACK}:{self.port}/0"

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server not installed (apt-get install -y redis-server)"
        log = (self.root / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
             "--appendonly", "no", "--dir", str(self.root), "--requirepass", self.password],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = redis_sync.Redis(host=LOOPBACK, port=self.port, password=self.password)
        _wait_for(client.ping, 15, "isolated redis-server")

    def kill_redis(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def outage_stack(postgres, redis_server, migrate_runs) -> Iterator[tuple[Stack, Outage]]:
    database = f"outage_{secrets.token_hex(4)}"

    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(postgres.url)
        try:
            await conn.execute(f"CREATE DATABASE {database} OWNER {postgres.user}")
        finally:
            await conn.close()

    asyncio.run(create())
    root = Path(tempfile.mkdtemp(prefix="gekko-it-outage-"))
    outage = Outage(root, free_port(), secrets.token_urlsafe(12))
    outage.start_redis()
    env = base_env(postgres, redis_server)
    env["GEKKO_DATABASE_URL"] = postgres.services_url(database)
    env["GEKKO_MIGRATE_DATABASE_URL"] = postgres.owner_url(database)
    env["GEKKO_REDIS_URL"] = outage.url
    migrated = subprocess.run(gekko_cmd("migrate"), env=env, capture_output=True, text=True)
    assert migrated.returncode == 0, migrated.stderr
    st = Stack(env=env, root=root, postgres=postgres)
    try:
        for service in ("trading", "portfolio"):
            st.start(service, service)
        for service in ("trading", "portfolio"):
            url = f"http://{LOOPBACK}:{st.ports[service]}/health"
            _wait_for(lambda u=url: httpx.get(u).status_code == 200, 30, f"{service} health",
                      root / f"{service}.log")  # fmt: skip
        yield st, outage
    finally:
        for name in list(st.procs):
            st.stop(name)
        if outage.proc and outage.proc.poll() is None:
            outage.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                outage.proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def test_orders_survive_a_redis_outage_via_the_outbox(outage_stack):
    st, outage = outage_stack
    auth = {"Authorization": "Bearer " + signing_key.issue(4242, "outage-session")}
    trading = f"http://{LOOPBACK}:{st.ports['trading']}"
    portfolio = f"http://{LOOPBACK}:{st.ports['portfolio']}"
    db_url = st.env["GEKKO_DATABASE_URL"]

    def fetch(query: str, *args):
        import asyncpg

        async def run():
            conn = await asyncpg.connect(db_url)
            try:
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        return asyncio.run(run())

    def quantity() -> float:
        positions = httpx.get(f"{portfolio}/api/v1/portfolio", headers=auth).json()["positions"]
        return sum(p["quantity"] for p in positions if p["symbol"] == "AAPL")

    first = httpx.post(f"{trading}/api/v1/trading/execute", headers=auth,
                       json={"symbol": "AAPL", "side": "buy", "quantity": 1})  # fmt: skip
    assert first.status_code == 201, first.text
    eventually(lambda: quantity() == 1, what="portfolio before the outage")

    outage.kill_redis()
    during = httpx.post(f"{trading}/api/v1/trading/execute", timeout=15, headers=auth,
                        json={"symbol": "AAPL", "side": "buy", "quantity": 2})  # fmt: skip
    assert during.status_code == 201, during.text  # acknowledged with Redis down
    order_id = during.json()["id"]
    rows = fetch("SELECT status FROM trading.orders WHERE id = $1", order_id)
    assert rows[0]["status"] == "filled"
    pending = fetch(
        "SELECT type, sent_at FROM trading.outbox WHERE payload->>'order_id' = $1", str(order_id)
    )
    assert {r["type"] for r in pending} == {"order.placed", "order.executed"}
    assert all(r["sent_at"] is None for r in pending)  # waiting in the outbox
    assert quantity() == 1

    outage.start_redis()  # comes back empty: streams and groups are recreated
    eventually(lambda: quantity() == 3, timeout=30, what="relay after Redis returned")
    sent = fetch("SELECT count(*) AS n FROM trading.outbox WHERE sent_at IS NULL")
    assert sent[0]["n"] == 0
