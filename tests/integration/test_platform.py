"""End-to-end behaviour of the real processes: gateway -> services -> PostgreSQL/Redis."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid

import httpx
import pytest

from gekko.security.rbac import Role

from .conftest import (
    LOOPBACK,
    OPS,
    SERVICES,
    Stack,
    as_role,
    eventually,
    free_port,
    gekko_cmd,
)

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def _user(stack: Stack) -> tuple[str, int]:
    """Register and log in a fresh user; returns (token, user_id)."""
    name = f"u{uuid.uuid4().hex[:12]}"
    reg = httpx.post(
        f"{stack.gateway}/api/v1/users/register",
        json={"username": name, "email": f"{name}@example.com", "password": "correct-horse"},
    )
    assert reg.status_code == 201, reg.text
    login = httpx.post(
        f"{stack.gateway}/api/v1/users/login",
        json={"username": name, "password": "correct-horse"},
    )
    assert login.status_code == 200, login.text
    return login.json()["access_token"], reg.json()["id"]


def test_migrate_applies_then_reports_up_to_date(migrate_runs):
    first, second = migrate_runs
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines() == [
        "gekko-migrate: applied 13 revision(s), now at 0013_venue_fill_time",
        "gekko-migrate: database role 'gekko_app' created",
        "gekko-migrate: database role 'gekko_app' granted the tables of alerts, archive, audit, "
        "gamification, portfolio, social, trading, users",
    ]
    assert second.returncode == 0, second.stderr
    # Nothing changed, so nothing is said beyond the revision (the deploy reports no change).
    up_to_date = "gekko-migrate: up to date at 0013_venue_fill_time"
    assert second.stdout.strip().splitlines() == [up_to_date]


def test_migrate_fails_clearly_when_database_unreachable(stack):
    env = dict(
        stack.env,
        GEKKO_MIGRATE_DATABASE_URL=f"postgresql://gekko:pw@127.0.0.1:{free_port()}/gekko",
        GEKKO_MIGRATE_WAIT_S="2",  # the default 30 s wait for a starting PostgreSQL
    )
    proc = subprocess.run(
        [*gekko_cmd("migrate")], env=env, capture_output=True, text=True, timeout=90
    )
    assert proc.returncode != 0
    assert "cannot connect to PostgreSQL" in proc.stderr
    assert "pw@" not in proc.stderr  # the password is redacted


def test_gateway_health_reports_all_dependencies(stack):
    resp = httpx.get(f"{stack.gateway}/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "ok"
    assert body["checks"]["postgres"]["status"] == "ok"
    assert isinstance(body["checks"]["postgres"]["latency_ms"], float | int)
    for service in SERVICES:
        assert body["checks"]["services"][service]["status"] == "ok"
        assert body["checks"]["services"][service]["healthy_instances"] >= 1


def test_service_health_shape(stack):
    resp = httpx.get(f"http://127.0.0.1:{stack.ports['users']}/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["service"] == "users"
    assert body["instance"] == f"users-{stack.ports['users']}"
    assert body["checks"]["postgres"]["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "ok"


def test_services_lists_every_service_healthy(stack):
    body = httpx.get(f"{stack.gateway}/services", headers=OPS).json()
    assert set(body["services"]) == set(SERVICES)
    for service in SERVICES:
        instances = body["services"][service]
        assert instances, f"{service} has no registered instance"
        assert all(i["health"] == "ok" for i in instances)
        assert {"instance_id", "url", "health", "last_heartbeat"} <= set(instances[0])


def test_register_login_trade_and_portfolio(stack):
    token, user_id = _user(stack)
    auth = {"Authorization": f"Bearer {token}"}
    me = httpx.get(f"{stack.gateway}/api/v1/users/me", headers=auth)
    assert me.status_code == 200 and me.json()["id"] == user_id

    order = httpx.post(
        f"{stack.gateway}/api/v1/trading/execute",
        json={"symbol": "BTC-USD", "side": "buy", "quantity": 0.5, "type": "market"},
        headers=auth,
    )
    assert order.status_code == 201, order.text
    body = order.json()
    assert body["status"] == "filled" and body["user_id"] == user_id and body["price"] > 0

    rows = stack.postgres.fetch(
        "SELECT user_id, symbol, side, quantity FROM trading.orders WHERE id = $1", body["id"]
    )
    assert len(rows) == 1
    assert (rows[0]["user_id"], rows[0]["symbol"], rows[0]["side"]) == (user_id, "BTC-USD", "buy")
    assert float(rows[0]["quantity"]) == 0.5

    orders = httpx.get(f"{stack.gateway}/api/v1/trading/orders", headers=auth).json()["orders"]
    assert [o["id"] for o in orders] == [body["id"]]

    # The portfolio is a projection fed by order.executed events: it converges, not instantly.
    def positions() -> list[tuple[str, float]]:
        portfolio = httpx.get(f"{stack.gateway}/api/v1/portfolio", headers=auth)
        assert portfolio.status_code == 200, portfolio.text
        return [(p["symbol"], p["quantity"]) for p in portfolio.json()["positions"]]

    eventually(lambda: positions() == [("BTC-USD", 0.5)], what="portfolio to show the fill")


def test_idempotent_retry_creates_one_order(stack):
    token, user_id = _user(stack)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
    payload = {"symbol": "ETH-USD", "side": "buy", "quantity": 2}
    first = httpx.post(f"{stack.gateway}/api/v1/trading/execute", json=payload, headers=headers)
    second = httpx.post(f"{stack.gateway}/api/v1/trading/execute", json=payload, headers=headers)
    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    count = stack.postgres.fetch(
        "SELECT count(*) AS n FROM trading.orders WHERE user_id = $1", user_id
    )[0]["n"]
    assert count == 1

    different = httpx.post(
        f"{stack.gateway}/api/v1/trading/execute",
        json={**payload, "quantity": 3},
        headers=headers,
    )
    assert different.status_code == 422
    assert different.headers["content-type"].startswith(PROBLEM)


def test_trading_requires_token(stack):
    resp = httpx.post(
        f"{stack.gateway}/api/v1/trading/execute",
        json={"symbol": "BTC-USD", "side": "buy", "quantity": 1},
    )
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert resp.json()["status"] == 401
    bad = httpx.get(
        f"{stack.gateway}/api/v1/portfolio", headers={"Authorization": "Bearer not-a-jwt"}
    )
    assert bad.status_code == 401


@pytest.mark.parametrize(
    ("path", "payload", "needle"),
    [
        ("users/register", {"username": "abc", "email": "nope", "password": "12345678"}, "email"),
        ("users/register", {"username": "abcd", "email": "a@b.io", "password": "short"}, "8"),
        ("users/register", "not json at all", "JSON"),
        ("trading/execute", {"symbol": "DOGE-USD", "side": "buy", "quantity": 1}, "symbol"),
        ("trading/execute", {"symbol": "BTC-USD", "side": "hold", "quantity": 1}, "side"),
        ("trading/execute", {"symbol": "BTC-USD", "side": "buy", "quantity": -1}, "quantity"),
    ],
)
def test_bad_input_is_a_4xx_problem(stack, path, payload, needle):
    token, _ = _user(stack) if path.startswith("trading") else ("", 0)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if isinstance(payload, str):
        resp = httpx.post(
            f"{stack.gateway}/api/v1/{path}",
            content=payload,
            headers={**headers, "Content-Type": "application/json"},
        )
    else:
        resp = httpx.post(f"{stack.gateway}/api/v1/{path}", json=payload, headers=headers)
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == resp.status_code
    assert needle.lower() in (body["detail"] + str(body.get("errors", ""))).lower()


def test_duplicate_registration_conflicts(stack):
    name = f"dup{uuid.uuid4().hex[:8]}"
    payload = {"username": name, "email": f"{name}@example.com", "password": "long-enough"}
    assert httpx.post(f"{stack.gateway}/api/v1/users/register", json=payload).status_code == 201
    again = httpx.post(f"{stack.gateway}/api/v1/users/register", json=payload)
    assert again.status_code == 409
    assert again.headers["content-type"].startswith(PROBLEM)
    wrong = httpx.post(
        f"{stack.gateway}/api/v1/users/login", json={"username": name, "password": "wrong-pass"}
    )
    assert wrong.status_code == 401


def test_market_data_social_and_gamification(stack):
    quote = httpx.get(f"{stack.gateway}/api/v1/market-data/quotes/SOL-USD")
    assert quote.status_code == 200 and quote.json()["symbol"] == "SOL-USD"
    missing = httpx.get(f"{stack.gateway}/api/v1/market-data/quotes/NOPE")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(PROBLEM)

    token, user_id = _user(stack)
    auth = {"Authorization": f"Bearer {token}"}
    post = httpx.post(
        f"{stack.gateway}/api/v1/social/posts", json={"body": "hello gekko"}, headers=auth
    )
    assert post.status_code == 201, post.text
    # The feed is for signed-in users.
    assert httpx.get(f"{stack.gateway}/api/v1/social/feed").status_code == 401
    feed = httpx.get(f"{stack.gateway}/api/v1/social/feed", headers=auth).json()["items"]
    assert post.json()["id"] in [i["id"] for i in feed if i["kind"] == "post"]

    # Registration points arrive through the user.registered event.
    def profile() -> dict:
        resp = httpx.get(
            f"{stack.gateway}/api/v1/gamification/user/{user_id}/profile", headers=auth
        )
        assert resp.status_code == 200
        return resp.json()

    body = eventually(lambda: profile()["points"] and profile(), what="registration points")
    assert (body["user_id"], body["points"], body["level"]) == (user_id, 10, 1)
    assert [a["code"] for a in body["achievements"]] == ["welcome"]


def test_correlation_id_echoed_generated_and_forwarded(stack):
    headers = {
        "X-Correlation-ID": "test-corr-123",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    given = httpx.get(f"{stack.gateway}/api/v1/market-data/symbols", headers=headers)
    assert given.headers["x-correlation-id"] == "test-corr-123"
    generated = httpx.get(f"{stack.gateway}/health").headers["x-correlation-id"]
    assert uuid.UUID(generated).version == 4
    # The problem body is written by the market_data service itself, so the id in it proves
    # the gateway forwarded the caller's id upstream.
    missing = httpx.get(f"{stack.gateway}/api/v1/market-data/quotes/NOPE", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["correlation_id"] == "test-corr-123"


def test_unknown_prefix_is_404_problem(stack):
    resp = httpx.get(f"{stack.gateway}/api/v1/nothing-here/x")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith(PROBLEM)


def test_metrics_count_requests(stack):
    httpx.get(f"{stack.gateway}/api/v1/market-data/quotes/AAPL")
    text = httpx.get(f"{stack.gateway}/metrics").text
    assert (
        'gekko_http_requests_total{component="gateway",method="GET",route="market-data",'
        'status_class="2xx"}' in text
    )
    assert 'gekko_service_instances{health="ok",service="trading"}' in text


def test_healthcheck_command(stack):
    """Docker's check in a container: `gekko healthcheck` asks the container's own server (over
    its Unix socket), so another process answering on the same TCP port (the instance being
    replaced, SO_REUSEPORT) cannot make a server that does not listen yet look healthy."""
    env = dict(stack.env, GEKKO_PORT=str(stack.ports["gateway"]))
    ok = subprocess.run(gekko_cmd("healthcheck"), env=env, capture_output=True, timeout=10)
    assert ok.returncode == 0, ok.stderr

    # The gateway answers 200 on this port, but the server being checked has not started.
    not_started = subprocess.run(
        gekko_cmd("healthcheck"),
        env=dict(env, GEKKO_HEALTH_SOCKET=str(stack.root / "not-started.sock")),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert not_started.returncode == 1
    assert "has not started" in not_started.stderr

    closed = subprocess.run(
        gekko_cmd("healthcheck", "--url", f"http://127.0.0.1:{free_port()}/health"),
        capture_output=True,
        timeout=10,
    )
    assert closed.returncode == 1


def test_serve_refuses_to_start_without_its_token_keys(stack):
    env = {k: v for k, v in stack.env.items() if k != "GEKKO_JWT_SIGNING_KEY_FILE"}
    proc = subprocess.run(
        gekko_cmd("serve", "users"),
        env=dict(env, GEKKO_PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "GEKKO_JWT_SIGNING_KEY_FILE is required for the users service" in proc.stderr


def test_failover_when_a_trading_instance_dies(stack):
    """Two trading instances; SIGKILL one (no deregistration); trading keeps working."""
    stack.start("trading-2", "trading")
    extra = f"trading-{stack.ports['trading-2']}"

    def trading_instances() -> list[str]:
        services = httpx.get(f"{stack.gateway}/services", headers=OPS).json()["services"]
        return [i["instance_id"] for i in services["trading"]]

    # Wait for this very instance: a count would also be met by one another test left listed.
    deadline = time.monotonic() + 30
    while extra not in trading_instances():
        assert stack.procs["trading-2"].poll() is None, stack.log_tail("trading-2")
        assert time.monotonic() < deadline, "second trading instance never registered"
        time.sleep(0.3)

    stack.stop("trading-2", signal.SIGKILL)
    token, user_id = _user(stack)
    auth = {"Authorization": f"Bearer {token}"}
    for _ in range(6):  # round-robin would hit the dead one at least every other request
        order = httpx.post(
            f"{stack.gateway}/api/v1/trading/execute",
            json={"symbol": "MSFT", "side": "buy", "quantity": 1},
            headers=auth,
        )
        assert order.status_code == 201, order.text
        listing = httpx.get(f"{stack.gateway}/api/v1/trading/orders", headers=auth)
        assert listing.status_code == 200
    count = stack.postgres.fetch(
        "SELECT count(*) AS n FROM trading.orders WHERE user_id = $1", user_id
    )[0]["n"]
    assert count == 6


def test_graceful_shutdown_deregisters(stack):
    stack.start("users-2", "users")

    def user_instances() -> list[str]:
        services = httpx.get(f"{stack.gateway}/services", headers=OPS).json()["services"]
        return [i["instance_id"] for i in services["users"]]

    extra = f"users-{stack.ports['users-2']}"
    deadline = time.monotonic() + 30
    while extra not in user_instances():
        assert stack.procs["users-2"].poll() is None, stack.log_tail("users-2")
        assert time.monotonic() < deadline, "second users instance never registered"
        time.sleep(0.3)

    stack.stop("users-2", signal.SIGTERM)
    # Deregistration is immediate (DEL), well before the 15 s TTL would expire the key.
    deadline = time.monotonic() + 5
    while extra in user_instances():
        assert time.monotonic() < deadline, "instance still listed after graceful shutdown"
        time.sleep(0.2)
    assert user_instances() == [f"users-{stack.ports['users']}"]


def test_a_service_whose_database_is_away_is_not_ready_but_alive(stack):
    """PostgreSQL away (here: a port nothing listens on): the service keeps running, says so on
    /health/live, fails /health (readiness: the gateway routes elsewhere) and answers its API
    with a 503 to retry, not a 500."""
    closed = f"postgresql://gekko_app:x@{LOOPBACK}:{free_port()}/gekko"
    port = stack.start("portfolio-no-db", "portfolio", GEKKO_DATABASE_URL=closed)
    url = f"http://{LOOPBACK}:{port}"
    try:

        def live() -> bool:
            assert stack.procs["portfolio-no-db"].poll() is None, stack.log_tail("portfolio-no-db")
            return httpx.get(f"{url}/health/live", timeout=2).status_code == 200

        eventually(live, 30, "the service to answer /health/live")
        ready = httpx.get(f"{url}/health", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgres"]["status"] == "down"
        answer = httpx.get(f"{url}/api/v1/portfolio", headers=as_role(Role.TRADER), timeout=10)
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["type"] == "https://gekko.dev/problems/datastore-unavailable"
        assert stack.procs["portfolio-no-db"].poll() is None  # still alive
    finally:
        stack.stop("portfolio-no-db")
