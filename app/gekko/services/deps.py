"""FastAPI dependencies shared by the domain routers: pool access, the signed-in caller and the
Idempotency-Key of a retried POST."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Request

from gekko.exchanges.base import Mode
from gekko.problems import ProblemError
from gekko.security.access import current_claims
from gekko.security.tokens import TokenClaims


def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


async def current_user_id(claims: Annotated[TokenClaims, Depends(current_claims)]) -> int:
    return claims.user_id


Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
Claims = Annotated[TokenClaims, Depends(current_claims)]
UserId = Annotated[int, Depends(current_user_id)]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
]


def idempotency_key_reused() -> ProblemError:
    """A replayed Idempotency-Key whose request differs from the first one's."""
    return ProblemError(
        422,
        "Idempotency-Key was already used for a different order",
        title="Idempotency key reused",
        slug="idempotency-key-reused",
    )


def venue_mode(request: Request, paper_means: str) -> Mode:
    """The environment's trading mode where a venue is needed: 409 in paper mode, saying what
    that means for this call (`paper_means`)."""
    mode = Mode(request.app.state.settings.exchange_mode)
    if mode is Mode.PAPER:
        raise ProblemError(
            409,
            "this environment trades on the paper exchange (GEKKO_EXCHANGE_MODE=paper): "
            + paper_means,
            slug="paper-mode",
        )
    return mode
