"""Fault injection for canary testing: a domain service fails a fraction of its API requests.

GEKKO_CHAOS_ERROR_RATE (0..1, default 0) makes the service answer that fraction of its
`/api/v1/...` requests with a 500 problem+json ("injected fault") without running them; /health,
/metrics and everything else are never touched, so the instance stays routable and a canary
analysis sees it fail the way a bad release would. It sits inside the metrics middleware:
injected 500s are counted in gekko_http_requests_total{status_class="5xx"} like real ones.

It is an environment setting only (not dynamic), and it is refused in production: with
GEKKO_ENVIRONMENT=prod (or production) a non-zero rate is logged and treated as 0.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from gekko.config import Settings
from gekko.problems import PROBLEM_TYPE_BASE, problem_response

log = logging.getLogger("gekko.chaos")

API_PREFIX = "/api/v1/"
PRODUCTION_ENVIRONMENTS = frozenset({"prod", "production"})


def effective_error_rate(settings: Settings) -> float:
    """The rate to inject: the configured one, or 0 in production (with a warning)."""
    rate = settings.chaos_error_rate
    if rate <= 0:
        return 0.0
    if settings.environment.lower() in PRODUCTION_ENVIRONMENTS:
        log.warning(
            "GEKKO_CHAOS_ERROR_RATE=%s refused in environment %r: no faults are injected",
            rate,
            settings.environment,
        )
        return 0.0
    log.warning("chaos: injecting 500s into %.1f%% of API requests", rate * 100)
    return rate


class ChaosMiddleware:
    """Plain ASGI: answer a `rate` fraction of /api/v1 requests with an injected 500."""

    def __init__(self, app: ASGIApp, rate: float, rng: Callable[[], float] = random.random) -> None:
        self.app = app
        self.rate = rate
        self.rng = rng

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("path", "").startswith(API_PREFIX)
            and self.rng() < self.rate
        ):
            response = problem_response(
                500,
                "injected fault (GEKKO_CHAOS_ERROR_RATE)",
                title="Injected fault",
                type_=f"{PROBLEM_TYPE_BASE}injected-fault",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
