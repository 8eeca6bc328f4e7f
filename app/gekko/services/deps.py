"""FastAPI dependencies shared by the domain routers (pool access and bearer auth)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from gekko.problems import ProblemError
from gekko.security.tokens import TokenClaims, TokenError, bearer_token, decode_token


def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def unauthorized(detail: str) -> ProblemError:
    return ProblemError(
        401,
        detail,
        title="Unauthorized",
        slug="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="gekko"'},
    )


async def current_claims(request: Request) -> TokenClaims:
    """The caller's verified access token; 401 if it is missing, invalid, expired or its
    session has ended."""
    try:
        token = bearer_token(request.headers.get("authorization"))
        claims = decode_token(token, request.app.state.verify_keys)
    except TokenError as exc:
        raise unauthorized(str(exc)) from None
    if await request.app.state.revoked_sessions.contains(claims.session_id):
        raise unauthorized("the session of this token has ended; sign in again")
    return claims


async def current_user_id(claims: Annotated[TokenClaims, Depends(current_claims)]) -> int:
    return claims.user_id


Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
Claims = Annotated[TokenClaims, Depends(current_claims)]
UserId = Annotated[int, Depends(current_user_id)]
