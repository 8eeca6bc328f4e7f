"""Sign-in guards shared by the password and second-factor steps of the users service: the
caller's address, lockout answers, and the rule that a Redis outage never stops sign-ins."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import RedisError

from gekko.problems import ProblemError
from gekko.security.lockout import Lock

log = logging.getLogger("gekko.users")
T = TypeVar("T")


# Lock scope -> (status, title, problem slug, who is locked).
_LOCK_ANSWERS = {
    "account": (423, "Locked", "account-locked", "this account"),
    "source": (429, "Too Many Requests", "source-locked", "this address"),
}


def refused(lock: Lock) -> ProblemError:
    status, title, slug, whom = _LOCK_ANSWERS[lock.scope]
    return ProblemError(
        status,
        f"too many failed logins for {whom}; try again later",
        title=title,
        slug=slug,
        headers={"Retry-After": str(lock.retry_after_s)},
    )


async def unless_redis_is_down(step: Awaitable[T], fallback: T) -> T:
    """Logins keep working through a Redis outage, without lockouts meanwhile (logged)."""
    try:
        return await step
    except RedisError as exc:
        log.warning("login lockouts are not enforced: Redis is unavailable (%s)", exc)
        return fallback
