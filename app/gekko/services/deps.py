"""FastAPI dependencies shared by the domain routers (pool access and bearer auth)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from gekko.problems import ProblemError
from gekko.security.tokens import TokenError, bearer_token, decode_token


def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def current_user_id(request: Request) -> int:
    try:
        token = bearer_token(request.headers.get("authorization"))
        claims = decode_token(token, request.app.state.settings.jwt_secret)
    except TokenError as exc:
        raise ProblemError(
            401,
            str(exc),
            title="Unauthorized",
            slug="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="gekko"'},
        ) from None
    return claims.user_id


Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
UserId = Annotated[int, Depends(current_user_id)]
