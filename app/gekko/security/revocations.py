"""Ended sessions, shared through Redis so every verifier refuses their access tokens.

An access token is a signed JWT valid for an hour; ending its session (logout, "end this
session", a reused refresh token) must stop it before then. The users service adds the session
id to one Redis sorted set, scored with the time its last access token expires; verifiers (the
gateway and every service) keep a copy of the set's live members in memory and refresh it at
most once a second, so a check costs a set lookup and an ended session is refused everywhere
within about a second.

If Redis cannot be read, verifiers keep the copy they have (logged once per outage): sessions
ended during the outage are refused once Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

REVOKED_SESSIONS_KEY = "gekko:revoked-sessions"
REFRESH_S = 1.0

log = logging.getLogger("gekko.security")


async def revoke_sessions(redis: Redis, session_ids: list[str], until: float) -> None:
    """Refuse these sessions' access tokens until `until` (when the last one expires)."""
    if not session_ids:
        return
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(REVOKED_SESSIONS_KEY, dict.fromkeys(session_ids, until), gt=True)
        pipe.zremrangebyscore(REVOKED_SESSIONS_KEY, "-inf", time.time())  # forget expired ones
        await pipe.execute()


class RevokedSessions:
    """A verifier's copy of the ended sessions."""

    def __init__(self, redis: Redis, *, refresh_s: float = REFRESH_S) -> None:
        self._redis = redis
        self._refresh_s = refresh_s
        self._ids: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._failing = False

    async def contains(self, session_id: str) -> bool:
        if time.monotonic() - self._fetched_at >= self._refresh_s:
            await self._refresh()
        return session_id in self._ids

    async def _refresh(self) -> None:
        if self._lock.locked() and self._fetched_at != float("-inf"):
            return  # a fetch is under way: answer from the copy rather than queue behind it
        async with self._lock:
            if time.monotonic() - self._fetched_at < self._refresh_s:
                return  # another request refreshed it meanwhile
            try:
                members = await self._redis.zrangebyscore(REVOKED_SESSIONS_KEY, time.time(), "+inf")
            except RedisError as exc:
                if not self._failing:
                    log.warning(
                        "ended sessions cannot be read from Redis (%s); using the last copy", exc
                    )
                self._failing = True
                return
            else:
                self._failing = False
                self._ids = frozenset(m.decode() if isinstance(m, bytes) else m for m in members)
            finally:
                # Stamped when the attempt ends: requests queued behind a slow Redis use the
                # copy instead of each waiting for a fetch of its own.
                self._fetched_at = time.monotonic()
