"""Password guessing is stopped per account and per source address, with back-off.

Wrong passwords are counted in Redis (shared by every users instance) over `window_s`: at
`max_failures` for one account, or `source_max_failures` from one source address, that account
or source is locked for `lockout_s`; each further lockout within a day doubles the time, up to
`max_lockout_s`. While locked, every login is refused before its password is checked, the
right password included, so guessing on gains nothing. A successful login clears the account's
count (not its lockout history, so back-off survives a lucky guess between attempts).

The account is whatever the client typed (lower-cased), whether or not it exists, so a lockout
tells nothing about which accounts exist.

The counter and its expiry are written in one Redis transaction (MULTI/EXEC); at the
threshold, the back-off history and the counter's reset are another, then the lock is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

_PREFIX = "gekko:login"
_HISTORY_S = 86_400  # lockouts counted for back-off over a day


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int = 5
    source_max_failures: int = 20
    window_s: int = 900
    lockout_s: int = 900
    max_lockout_s: int = 86_400


@dataclass(frozen=True)
class Lock:
    """Why logins are refused: `scope` is "account" or "source"; retry after `retry_after_s`."""

    scope: str
    retry_after_s: int


class LoginGuard:
    def __init__(self, redis: Redis, policy: LockoutPolicy) -> None:
        self.redis = redis
        self.policy = policy

    @staticmethod
    def _subjects(account: str, source: str) -> tuple[tuple[str, str], ...]:
        return (("account", account.strip().lower()), ("source", source))

    async def lock(self, account: str, source: str) -> Lock | None:
        """The lock in force for this account or source, if any (the longer one)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope, subject in self._subjects(account, source):
                pipe.ttl(f"{_PREFIX}:lock:{scope}:{subject}")
            ttls = await pipe.execute()
        locks = [
            Lock(scope, int(ttl))
            for (scope, _), ttl in zip(self._subjects(account, source), ttls, strict=True)
            if ttl and int(ttl) > 0
        ]
        return max(locks, key=lambda lock: lock.retry_after_s, default=None)

    async def failed(self, account: str, source: str) -> Lock | None:
        """Count a wrong password; the lock it starts, if it reached a threshold."""
        limits = {"account": self.policy.max_failures, "source": self.policy.source_max_failures}
        started = [
            await self._count(scope, subject, limits[scope])
            for scope, subject in self._subjects(account, source)
        ]
        return max(filter(None, started), key=lambda lock: lock.retry_after_s, default=None)

    async def succeeded(self, account: str) -> None:
        (scope, subject), _ = self._subjects(account, "")
        await self.redis.delete(f"{_PREFIX}:fail:{scope}:{subject}")

    async def _count(self, scope: str, subject: str, limit: int) -> Lock | None:
        failures = f"{_PREFIX}:fail:{scope}:{subject}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(failures)
            pipe.expire(failures, self.policy.window_s, nx=True)
            count, _ = await pipe.execute()
        if int(count) < limit:
            return None
        history = f"{_PREFIX}:lockouts:{scope}:{subject}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(history)
            pipe.expire(history, _HISTORY_S)
            pipe.delete(failures)
            lockouts, _, _ = await pipe.execute()
        seconds = min(self.policy.lockout_s * 2 ** (int(lockouts) - 1), self.policy.max_lockout_s)
        await self.redis.set(f"{_PREFIX}:lock:{scope}:{subject}", "1", ex=seconds)
        return Lock(scope, seconds)
