"""Dynamic configuration: settings changed in Redis apply to running processes, no restart.

Where it lives: the Redis hash `gekko:config` (field = setting name, value = a string), and the
pub/sub channel `gekko:config:changed` (any message means "re-read the hash"):

    HSET gekko:config ratelimit_user_per_window 50
    PUBLISH gekko:config:changed ratelimit_user_per_window

Settings, each validated (an invalid value is logged and ignored; it never stops a process):

    log_level                      DEBUG | INFO | WARNING | ERROR | CRITICAL   every component
    ratelimit_user_per_window      positive integer                            gateway
    ratelimit_service_per_window   positive integer                            gateway
    ratelimit_anonymous_per_window positive integer                            gateway
    feature.<name>                 true | false (1/0, yes/no, on/off)          `flags.enabled(name)`

Precedence: the environment (GEKKO_LOG_LEVEL, GEKKO_RATELIMIT_*, GEKKO_FEATURE_<NAME>) gives the
defaults; a valid field in the hash overrides its default while it is there; deleting the field
reverts to the default. While Redis is unreachable the last values read stay in force.

Every process reads the hash before it serves, then a `ConfigWatcher` task re-reads it on each
message on the channel (applied within milliseconds) and every `poll_s` seconds anyway, so a
missed message or a restarted Redis delays a change by one poll at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from gekko.config import LOG_LEVELS, Settings, parse_bool

CONFIG_KEY = "gekko:config"
CHANGED_CHANNEL = "gekko:config:changed"
FEATURE_PREFIX = "feature."
# Flags the code reads, with their defaults when neither the environment nor Redis sets them.
FEATURE_DEFAULTS: dict[str, bool] = {"social_posts": True}
# Set by a service on a refusal because a feature is off: the gateway then counts the 503 as
# no fault of the instance (neither its circuit breaker nor outlier ejection sees a failure).
FEATURE_DISABLED_HEADER = "Gekko-Feature-Disabled"

log = logging.getLogger("gekko.dynconfig")

_FEATURE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
Listener = Callable[[dict[str, Any]], None]


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


def _positive_int(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError("must be a positive integer") from None
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _flag(raw: str) -> bool:
    try:
        return parse_bool(raw)
    except ValueError:
        raise ValueError("must be true or false") from None


PARSERS: dict[str, Callable[[str], Any]] = {
    "log_level": _log_level,
    "ratelimit_user_per_window": _positive_int,
    "ratelimit_service_per_window": _positive_int,
    "ratelimit_anonymous_per_window": _positive_int,
}


def parse_field(name: str, raw: str) -> Any:
    """The typed value of one hash field; ValueError (with the reason) when it is not valid."""
    parser = PARSERS.get(name)
    if parser is not None:
        return parser(raw)
    if name.startswith(FEATURE_PREFIX):
        if not _FEATURE_NAME.match(name[len(FEATURE_PREFIX) :]):
            raise ValueError("a feature name is lower-case letters, digits, '_', '-' or '.'")
        return _flag(raw)
    raise ValueError("unknown setting")


def defaults_from(settings: Settings) -> dict[str, Any]:
    """The environment's values of every dynamic setting: what an absent field means."""
    defaults: dict[str, Any] = {
        "log_level": settings.log_level,
        "ratelimit_user_per_window": settings.gateway.ratelimit_user_per_window,
        "ratelimit_service_per_window": settings.gateway.ratelimit_service_per_window,
        "ratelimit_anonymous_per_window": settings.gateway.ratelimit_anonymous_per_window,
    }
    for name, enabled in {**FEATURE_DEFAULTS, **settings.features}.items():
        defaults[FEATURE_PREFIX + name] = enabled
    return defaults


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class DynamicConfig:
    """Effective values: the defaults overlaid with the valid fields last read from Redis."""

    def __init__(self, defaults: Mapping[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.overrides: dict[str, Any] = {}
        self.rejected: dict[str, str] = {}  # field -> reason (values are never echoed)
        self.effective: dict[str, Any] = dict(self.defaults)
        self.listeners: list[Listener] = []
        self.loaded_at: float | None = None
        self._rejected_raw: dict[str, str] = {}

    def get(self, name: str, default: Any = None) -> Any:
        return self.effective.get(name, default)

    def feature(self, name: str, default: bool = False) -> bool:
        return bool(self.effective.get(FEATURE_PREFIX + name, default))

    def on_change(self, listener: Listener) -> None:
        """Call `listener(changes)` (name -> new effective value) after each change."""
        self.listeners.append(listener)

    def update(self, fields: Mapping[bytes | str, bytes | str]) -> dict[str, Any]:
        """Apply the whole hash as read; returns (and announces) the settings that changed."""
        overrides: dict[str, Any] = {}
        rejected: dict[str, str] = {}
        rejected_raw: dict[str, str] = {}
        for key, value in fields.items():
            name, raw = _text(key), _text(value)
            try:
                overrides[name] = parse_field(name, raw)
            except ValueError as exc:
                rejected[name] = str(exc)
                rejected_raw[name] = raw
                if self._rejected_raw.get(name) != raw:  # once per value, not once per poll
                    log.warning(
                        "ignoring dynamic setting %s=%r in %s: %s", name, raw[:64], CONFIG_KEY, exc
                    )
        effective = {**self.defaults, **overrides}
        changes = {
            k: v for k, v in effective.items() if k not in self.effective or self.effective[k] != v
        }
        changes.update({k: None for k in self.effective if k not in effective})
        self.overrides, self.rejected, self._rejected_raw = overrides, rejected, rejected_raw
        self.effective = effective
        self.loaded_at = time.time()
        if changes:
            log.info(
                "dynamic configuration changed: %s",
                ", ".join(f"{k}={v}" for k, v in sorted(changes.items())),
            )
            for listener in list(self.listeners):
                try:
                    listener(changes)
                except Exception:
                    log.exception("applying dynamic configuration %s failed", sorted(changes))
        return changes

    def snapshot(self) -> dict[str, Any]:
        """The read-only view served at the gateway's GET /config (no secrets in it)."""
        return {
            "key": CONFIG_KEY,
            "channel": CHANGED_CHANNEL,
            "settings": {
                name: {
                    "value": value,
                    "source": "redis" if name in self.overrides else "env",
                    "default": self.defaults.get(name),
                }
                for name, value in sorted(self.effective.items())
            },
            "rejected": dict(sorted(self.rejected.items())),
            "loaded_at": self.loaded_at,
        }


def apply_log_level(changes: Mapping[str, Any]) -> None:
    """Listener: set the level of every logger that decides what this process writes."""
    level = changes.get("log_level")
    if level is None:
        return
    for name in ("", "gekko", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(level)
    log.info("log level is now %s", level)


class FeatureFlags:
    """`flags.enabled("social_posts")`: reads the process's active DynamicConfig."""

    def __init__(self) -> None:
        self._config: DynamicConfig | None = None

    def activate(self, config: DynamicConfig) -> None:
        self._config = config

    def enabled(self, name: str) -> bool:
        config = self._config
        if config is None:
            return FEATURE_DEFAULTS.get(name, False)
        return config.feature(name, FEATURE_DEFAULTS.get(name, False))


flags = FeatureFlags()


class ConfigWatcher:
    """Keeps a DynamicConfig in step with Redis: pub/sub for speed, polling for certainty."""

    def __init__(
        self,
        redis: Redis,
        config: DynamicConfig,
        *,
        poll_s: float = 5.0,
        retry_s: float = 1.0,
    ) -> None:
        self.redis = redis
        self.config = config
        self.poll_s = poll_s
        self.retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def load(self) -> dict[str, Any]:
        """Read the hash once and apply it; raises on Redis errors (values kept as they were)."""
        fields = await self.redis.hgetall(CONFIG_KEY)
        return self.config.update(fields)

    async def load_initial(self, timeout_s: float = 2.0) -> bool:
        """The read before serving; False (the defaults stay) when Redis does not answer."""
        try:
            await asyncio.wait_for(self.load(), timeout_s)
        except Exception as exc:
            log.warning("dynamic configuration not read at start, using defaults: %s", exc)
            return False
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gekko-dynconfig")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANGED_CHANNEL)
                await self.load()  # catch up on whatever changed while unsubscribed
                if self._failing:
                    log.info("dynamic configuration watch restored")
                    self._failing = False
                next_poll = time.monotonic() + self.poll_s
                while True:
                    wait = max(0.0, next_poll - time.monotonic())
                    message = await pubsub.get_message(timeout=wait)
                    if message is not None or time.monotonic() >= next_poll:
                        await self.load()
                        next_poll = time.monotonic() + self.poll_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:
                    log.warning("dynamic configuration watch interrupted, retrying: %s", exc)
                self._failing = True
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(self.retry_s)


def build_dynamic_config(settings: Settings, *listeners: Listener) -> DynamicConfig:
    """The process's DynamicConfig (env defaults; log level applied live), active for `flags`."""
    config = DynamicConfig(defaults_from(settings))
    config.on_change(apply_log_level)
    for listener in listeners:
        config.on_change(listener)
    flags.activate(config)
    return config


async def start_watcher(redis: Redis, config: DynamicConfig, poll_s: float) -> ConfigWatcher:
    """Read Redis once before serving, then watch it (call from a lifespan; stop it there)."""
    watcher = ConfigWatcher(redis, config, poll_s=poll_s)
    await watcher.load_initial()
    watcher.start()
    return watcher
