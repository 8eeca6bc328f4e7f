"""FastAPI dependencies shared by the domain routers: pool access and the signed-in caller."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from gekko.security.access import current_claims
from gekko.security.tokens import TokenClaims


def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


async def current_user_id(claims: Annotated[TokenClaims, Depends(current_claims)]) -> int:
    return claims.user_id


Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
Claims = Annotated[TokenClaims, Depends(current_claims)]
UserId = Annotated[int, Depends(current_user_id)]
