"""Dynamic configuration: validation, precedence, live application and the Redis watcher."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gekko.config import ConfigError, load_settings
from gekko.dynconfig import (
    FEATURE_DISABLED_HEADER,
    ConfigWatcher,
    DynamicConfig,
    apply_log_level,
    build_dynamic_config,
    defaults_from,
    flags,
    parse_field,
)
from gekko.problems import ProblemError
from gekko.ratelimit import Quota, RateLimiter

from .keys import OPERATOR, TOKEN_ENV
from .test_gateway_proxy import gateway

ENV = {
    "GEKKO_DATABASE_URL": "postgresql://g:p@127.0.0.1:1/g",
    "GEKKO_REDIS_URL": "redis://127.0.0.1:1/0",
    **TOKEN_ENV,
}


@pytest.fixture(autouse=True)
def _restore_flags_and_log_levels() -> Iterator[None]:
    names = ("", "gekko", "uvicorn", "uvicorn.error")
    levels = {n: logging.getLogger(n).level for n in names}
    active = flags._config
    yield
    flags.activate(active)  # type: ignore[arg-type]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def config(**env: str) -> DynamicConfig:
    return DynamicConfig(defaults_from(load_settings("gateway", {**ENV, **env})))


def test_each_setting_is_validated():
    assert parse_field("log_level", " debug ") == "DEBUG"
    assert parse_field("ratelimit_user_per_window", "50") == 50
    assert parse_field("feature.social_posts", "FALSE") is False
    assert parse_field("feature.social_posts", "on") is True
    for name, raw in [
        ("log_level", "LOUD"),
        ("ratelimit_user_per_window", "0"),
        ("ratelimit_service_per_window", "-3"),
        ("ratelimit_user_per_window", "ten"),
        ("feature.social_posts", "maybe"),
        ("feature.Bad Name", "true"),
        ("jwt_verify_keys_file", "/tmp/x.pem"),
    ]:
        with pytest.raises(ValueError):
            parse_field(name, raw)


def test_env_gives_defaults_redis_overrides_and_deleting_a_field_reverts():
    cfg = config(GEKKO_RATELIMIT_USER_PER_WINDOW="120", GEKKO_FEATURE_SOCIAL_POSTS="false")
    assert cfg.get("ratelimit_user_per_window") == 120
    assert cfg.get("ratelimit_service_per_window") == 1000
    assert cfg.get("log_level") == "INFO"
    assert cfg.feature("social_posts") is False
    seen: list[dict[str, object]] = []
    cfg.on_change(seen.append)

    changes = cfg.update({b"ratelimit_user_per_window": b"7", b"feature.social_posts": b"true"})
    assert changes == {"ratelimit_user_per_window": 7, "feature.social_posts": True}
    assert seen == [changes]
    assert cfg.feature("social_posts") is True
    assert cfg.update({"ratelimit_user_per_window": "7", "feature.social_posts": "1"}) == {}
    assert len(seen) == 1  # nothing changed: listeners not called

    assert cfg.update({}) == {"ratelimit_user_per_window": 120, "feature.social_posts": False}
    assert cfg.get("ratelimit_user_per_window") == 120


def test_invalid_values_are_ignored_logged_once_and_never_raise(caplog):
    cfg = config()
    caplog.set_level(logging.WARNING, "gekko.dynconfig")
    fields = {"ratelimit_user_per_window": "lots", "log_level": "WARNING", "secret": "hunter2"}
    assert cfg.update(fields) == {"log_level": "WARNING"}
    assert cfg.get("ratelimit_user_per_window") == 200  # the default stays
    assert set(cfg.rejected) == {"ratelimit_user_per_window", "secret"}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    cfg.update(fields)  # the next poll: same bad values, no new warnings
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    view = json.dumps(cfg.snapshot())
    assert "hunter2" not in view  # rejected values are never echoed


def test_a_failing_listener_does_not_stop_the_others(caplog):
    cfg = config()
    got: list[dict[str, object]] = []

    def broken(_: dict[str, object]) -> None:
        raise RuntimeError("boom")

    cfg.on_change(broken)
    cfg.on_change(got.append)
    cfg.update({"ratelimit_service_per_window": "10"})
    assert got == [{"ratelimit_service_per_window": 10}]
    assert "applying dynamic configuration" in caplog.text


def test_log_level_changes_live_and_reverts():
    cfg = build_dynamic_config(load_settings("users", ENV))
    logging.getLogger().setLevel("INFO")
    cfg.update({"log_level": "debug"})
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("gekko.trading").isEnabledFor(logging.DEBUG)
    cfg.update({})
    assert logging.getLogger().level == logging.INFO
    apply_log_level({"ratelimit_user_per_window": 3})  # other settings: no effect
    assert logging.getLogger().level == logging.INFO


def test_flags_read_the_active_config_and_know_their_defaults():
    flags.activate(None)  # type: ignore[arg-type]
    assert flags.enabled("social_posts") is True
    assert flags.enabled("never_heard_of") is False
    cfg = build_dynamic_config(load_settings("social", ENV))
    cfg.update({"feature.social_posts": "false", "feature.beta_feed": "true"})
    assert flags.enabled("social_posts") is False
    assert flags.enabled("beta_feed") is True


def test_feature_env_values_are_checked_at_start():
    with pytest.raises(ConfigError, match="GEKKO_FEATURE_SOCIAL_POSTS must be true or false"):
        load_settings("social", {**ENV, "GEKKO_FEATURE_SOCIAL_POSTS": "sometimes"})
    with pytest.raises(ConfigError, match="GEKKO_DYNCONFIG_POLL_S"):
        load_settings("social", {**ENV, "GEKKO_DYNCONFIG_POLL_S": "0"})


def test_social_posting_refused_with_a_marked_503_when_the_flag_is_off():
    from gekko.services.social import posting_enabled

    cfg = build_dynamic_config(load_settings("social", ENV))
    posting_enabled()  # default: on
    cfg.update({"feature.social_posts": "false"})
    with pytest.raises(ProblemError) as err:
        posting_enabled()
    assert err.value.status == 503
    assert err.value.detail == "posting is temporarily disabled"
    assert err.value.headers == {FEATURE_DISABLED_HEADER: "social_posts"}


# --- the watcher, against an in-memory stand-in for redis.asyncio ---

# What roles/dynamic_config writes (HSET) and announces (PUBLISH): the watcher must read these.
ROLE_CONFIG_KEY = "gekko:config"
ROLE_CHANGED_CHANNEL = "gekko:config:changed"


class FakePubSub:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis

    async def subscribe(self, channel: str) -> None:
        assert channel == ROLE_CHANGED_CHANNEL
        self.redis.check()

    async def get_message(self, timeout: float) -> dict[str, object] | None:  # noqa: ASYNC109
        try:
            return await asyncio.wait_for(self.redis.messages.get(), timeout)
        except TimeoutError:
            self.redis.check()
            return None

    async def aclose(self) -> None:
        pass


class FakeRedis:
    def __init__(self) -> None:
        self.hash: dict[bytes, bytes] = {}
        self.messages: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self.down = False
        self.reads = 0

    def check(self) -> None:
        if self.down:
            raise RedisConnectionError("connection refused")

    def pubsub(self, **_: object) -> FakePubSub:
        return FakePubSub(self)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        assert key == ROLE_CONFIG_KEY
        self.check()
        self.reads += 1
        return dict(self.hash)

    def publish(self) -> None:
        self.messages.put_nowait({"type": "message", "data": b"x"})


async def _until(predicate, within: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_watcher_applies_a_published_change_at_once_without_waiting_for_the_poll():
    async def run() -> None:
        redis, cfg = FakeRedis(), config()
        watcher = ConfigWatcher(redis, cfg, poll_s=60, retry_s=0.01)  # type: ignore[arg-type]
        assert await watcher.load_initial()
        watcher.start()
        redis.hash[b"ratelimit_user_per_window"] = b"9"
        redis.publish()
        await _until(lambda: cfg.get("ratelimit_user_per_window") == 9, 1.0)
        del redis.hash[b"ratelimit_user_per_window"]
        redis.publish()
        await _until(lambda: cfg.get("ratelimit_user_per_window") == 200, 1.0)
        await watcher.stop()

    asyncio.run(run())


def test_watcher_polls_when_a_message_is_missed_and_survives_a_redis_outage():
    async def run() -> None:
        redis, cfg = FakeRedis(), config()
        redis.down = True
        watcher = ConfigWatcher(redis, cfg, poll_s=0.05, retry_s=0.01)  # type: ignore[arg-type]
        assert not await watcher.load_initial(timeout_s=0.5)  # defaults, no crash
        watcher.start()
        await asyncio.sleep(0.1)
        assert cfg.get("log_level") == "INFO"
        redis.down = False
        redis.hash[b"feature.social_posts"] = b"false"  # no message published: the poll finds it
        await _until(lambda: cfg.feature("social_posts", True) is False)
        redis.down = True  # an outage keeps the last values read
        await asyncio.sleep(0.1)
        assert cfg.feature("social_posts", True) is False
        redis.down = False
        redis.hash.clear()
        await _until(lambda: cfg.feature("social_posts", False) is True)
        await watcher.stop()

    asyncio.run(run())


# --- the gateway: quotas swapped live, header in step, GET /config ---


def test_rate_limiter_quotas_swap_and_keep_their_window():
    user = Quota(200, 60).item("gekko-user").key_for("user:1")
    assert user == Quota(5, 60).item("gekko-user").key_for("user:1")  # same window, new size
    assert user != Quota(5, 30).item("gekko-user").key_for("user:1")

    async def run() -> str:
        limiter = RateLimiter("redis://127.0.0.1:1/0", Quota(200, 60), Quota(1000, 60))
        limiter.set_quotas(Quota(5, 60), Quota(50, 60))
        await limiter.close()
        return limiter.policy

    assert asyncio.run(run()) == "5;w=60, 50;w=60"


class _Upstream:
    """Answers every request with `status`, plus the feature-disabled marker when asked."""

    def __init__(self, status: int, marked: bool) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(status)
                if marked:
                    self.send_header(FEATURE_DISABLED_HEADER, "social_posts")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize(("marked", "state"), [(True, "closed"), (False, "open")])
def test_a_feature_disabled_503_does_not_open_the_breaker(marked, state):
    upstream = _Upstream(503, marked)
    try:
        with gateway({"social": [upstream.url]}) as client:
            for _ in range(8):
                client.post("/api/v1/social/posts", json={"body": "hi"})
            breakers = client.get("/services", headers=OPERATOR).json()["circuit_breakers"]
            assert breakers["social"]["state"] == state
    finally:
        upstream.server.shutdown()


def test_gateway_applies_rate_limits_live_and_serves_get_config():
    with gateway({}) as client:
        app = client.app
        # A signed-in caller has the user quota; one without a token the anonymous quota.
        before = client.get("/api/v1/trading/orders", headers=OPERATOR)
        assert before.headers["ratelimit-policy"] == "200;w=60, 1000;w=60"
        anonymous = client.get("/api/v1/trading/orders")
        assert anonymous.headers["ratelimit-policy"] == "120;w=60, 1000;w=60"
        app.state.dynconfig.update(
            {
                "ratelimit_user_per_window": "5",
                "ratelimit_anonymous_per_window": "7",
                "log_level": "WARNING",
            }
        )
        after = client.get("/api/v1/trading/orders", headers=OPERATOR)
        assert after.headers["ratelimit-policy"] == "5;w=60, 1000;w=60"
        anonymous = client.get("/api/v1/trading/orders")
        assert anonymous.headers["ratelimit-policy"] == "7;w=60, 1000;w=60"

        view = client.get("/config", headers=OPERATOR).json()
        assert view["key"] == "gekko:config"
        assert view["channel"] == "gekko:config:changed"
        settings = view["settings"]
        assert settings["ratelimit_user_per_window"] == {
            "value": 5,
            "source": "redis",
            "default": 200,
        }
        assert settings["feature.social_posts"]["value"] is True
        assert settings["feature.social_posts"]["source"] == "env"
        assert "k" * 32 not in client.get("/config", headers=OPERATOR).text

        app.state.dynconfig.update({})  # fields deleted: env defaults again
        reverted = client.get("/api/v1/trading/orders", headers=OPERATOR)
        assert reverted.headers["ratelimit-policy"] == "200;w=60, 1000;w=60"
        reverted = client.get("/api/v1/trading/orders")
        assert reverted.headers["ratelimit-policy"] == "120;w=60, 1000;w=60"
        assert "/config" in client.get("/openapi.json").json()["paths"]
