"""Dynamic configuration and chaos fault injection against the real processes of the stack.

A setting written to the Redis hash `gekko:config` and announced on `gekko:config:changed`
reaches the running gateway and services within seconds, with the same PIDs (no restart).
"""

from __future__ import annotations

import json
import time

import httpx
import redis

from .conftest import LOOPBACK, OPS, eventually, new_user

CONFIG_KEY = "gekko:config"
CHANNEL = "gekko:config:changed"
FIELDS = ("ratelimit_user_per_window", "feature.social_posts", "log_level")
QUOTE = "/api/v1/market-data/quotes/BTC-USD"


def _set(r: redis.Redis, field: str, value: str | None) -> None:
    if value is None:
        r.hdel(CONFIG_KEY, field)
    else:
        r.hset(CONFIG_KEY, field, value)
    r.publish(CHANNEL, field)


def _new_log_lines(path, offset: int) -> list[dict]:
    with path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def test_rate_limits_flags_and_log_level_change_live_without_restart(stack, redis_server):
    r = redis.Redis.from_url(redis_server.url)
    gw = stack.gateway
    pids = {name: proc.pid for name, proc in stack.procs.items()}
    auth, _ = new_user(gw)  # before the limit drops: registering is keyed by IP, not by user
    watcher, _ = new_user(gw)  # polls the header: signed in, so it is shown the user quota
    try:
        # 1. A lower per-user quota: in the header within 3 s, and enforced on the n+1th call.
        limit = 4
        _set(r, "ratelimit_user_per_window", str(limit))
        started = time.monotonic()
        eventually(
            lambda: (
                httpx.get(gw + QUOTE, headers=watcher, timeout=5).headers.get(
                    "ratelimit-policy", ""
                )
                == f"{limit};w=60, 1000;w=60"
            ),
            3,
            "RateLimit-Policy to show the new user quota",
            interval=0.05,
        )
        assert time.monotonic() - started < 3
        for i in range(limit):
            resp = httpx.get(gw + QUOTE, headers=auth, timeout=5)
            assert resp.status_code == 200, resp.text
            assert resp.headers["ratelimit"].startswith(f"limit={limit}, remaining={limit - 1 - i}")
        refused = httpx.get(gw + QUOTE, headers=auth, timeout=5)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert f"{limit} requests per 60 s per user" in refused.json()["detail"]
        view = httpx.get(f"{gw}/config", headers=OPS, timeout=5).json()["settings"]
        assert view["ratelimit_user_per_window"] == {
            "value": limit,
            "source": "redis",
            "default": 200,
        }

        _set(r, "ratelimit_user_per_window", None)  # deleting the field restores the env default
        eventually(
            lambda: httpx.get(gw + QUOTE, headers=auth, timeout=5).status_code == 200,
            3,
            "the default quota to admit the user again",
        )

        # 2. feature.social_posts: off -> 503 problem, on -> 201, the breaker untouched.
        def post() -> httpx.Response:
            return httpx.post(f"{gw}/api/v1/social/posts", json={"body": "hi"}, headers=auth)

        _set(r, "feature.social_posts", "false")
        off = eventually(lambda: (p := post()).status_code == 503 and p, 3, "posting disabled")
        assert off.headers["content-type"] == "application/problem+json"
        assert off.json()["detail"] == "posting is temporarily disabled"
        for _ in range(6):  # more than the breaker's 5 consecutive failures
            assert post().status_code == 503
        breakers = httpx.get(f"{gw}/services", timeout=5, headers=OPS).json()["circuit_breakers"]
        assert breakers["social"]["state"] == "closed"
        _set(r, "feature.social_posts", "true")
        eventually(lambda: post().status_code == 201, 3, "posting enabled again")

        # 3. log_level DEBUG: a service starts writing DEBUG lines, and stops once reverted.
        social_log = stack.root / "social.log"
        offset = social_log.stat().st_size
        _set(r, "log_level", "DEBUG")

        def debug_logged() -> bool:
            httpx.get(f"{gw}/api/v1/social/feed?limit=1", headers=OPS, timeout=5)
            return any(e.get("level") == "DEBUG" for e in _new_log_lines(social_log, offset))

        eventually(debug_logged, 3, "a DEBUG line in social.log", interval=0.1)
        _set(r, "log_level", None)
        eventually(
            lambda: any(
                "log level is now INFO" in e.get("msg", "")
                for e in _new_log_lines(social_log, offset)
            ),
            3,
            "the log level to revert to INFO",
        )
        offset = social_log.stat().st_size
        httpx.get(f"{gw}/api/v1/social/feed?limit=1", headers=OPS, timeout=5)
        time.sleep(0.2)
        assert not [e for e in _new_log_lines(social_log, offset) if e.get("level") == "DEBUG"]

        # The same processes throughout: nothing was restarted.
        assert {name: proc.pid for name, proc in stack.procs.items()} == pids
        assert all(proc.poll() is None for proc in stack.procs.values())
    finally:
        r.hdel(CONFIG_KEY, *FIELDS)
        r.publish(CHANNEL, "reset")
        eventually(
            lambda: all(
                s["source"] == "env"
                for s in httpx.get(f"{gw}/config", headers=OPS, timeout=5)
                .json()["settings"]
                .values()
            ),
            10,
            "the gateway back on its env defaults",
        )
        r.close()


def _five_xx(metrics: str, route: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if (
            line.startswith("gekko_http_requests_total{")
            and f'route="{route}"' in line
            and 'status_class="5xx"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_chaos_rate_one_fails_api_requests_keeps_health_and_counts_5xx(stack):
    name = "market-data-chaos"
    port = stack.start(
        name, "market_data", GEKKO_INSTANCE_ID="md-chaos", GEKKO_CHAOS_ERROR_RATE="1.0"
    )
    base = f"http://{LOOPBACK}:{port}"
    try:
        eventually(lambda: httpx.get(f"{base}/health").status_code == 200, 30, "chaos instance up")
        # While it starts, /health may answer 503 (not ready yet): those count, and are not chaos.
        starting = _five_xx(httpx.get(f"{base}/metrics").text, "health")
        for _ in range(5):
            resp = httpx.get(base + QUOTE)
            assert resp.status_code == 500
            assert resp.headers["content-type"] == "application/problem+json"
            assert "injected fault" in resp.json()["detail"]
        assert httpx.get(f"{base}/health").status_code == 200
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.status_code == 200
        assert _five_xx(metrics.text, "market-data") == 5.0
        assert _five_xx(metrics.text, "health") == starting, "chaos spares the health check"
    finally:
        stack.stop(name)


def test_chaos_is_refused_in_prod(stack):
    name = "market-data-chaos-prod"
    port = stack.start(
        name,
        "market_data",
        GEKKO_INSTANCE_ID="md-chaos-prod",
        GEKKO_CHAOS_ERROR_RATE="1.0",
        GEKKO_ENVIRONMENT="prod",
    )
    base = f"http://{LOOPBACK}:{port}"
    try:
        eventually(lambda: httpx.get(f"{base}/health").status_code == 200, 30, "instance up")
        assert all(httpx.get(base + QUOTE).status_code == 200 for _ in range(5))
        assert _five_xx(httpx.get(f"{base}/metrics").text, "market-data") == 0.0
        assert "refused in environment 'prod'" in stack.log_tail(name, 200)
    finally:
        stack.stop(name)
