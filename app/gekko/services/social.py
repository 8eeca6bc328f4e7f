"""social: a public feed of short posts; posting needs a bearer token."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, field_validator

from gekko.services.deps import Pool, UserId

router = APIRouter(prefix="/api/v1/social", tags=["social"])


class PostIn(BaseModel):
    body: str = Field(min_length=1, max_length=280)

    @field_validator("body")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("post body must not be blank")
        return value.strip()


class PostOut(BaseModel):
    id: int
    user_id: int
    body: str
    created_at: datetime


@router.get("/feed")
async def feed(
    pool: Pool, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> dict[str, list[PostOut]]:
    rows = await pool.fetch(
        "SELECT id, user_id, body, created_at FROM social.posts ORDER BY id DESC LIMIT $1", limit
    )
    return {"posts": [PostOut(**dict(r)) for r in rows]}


@router.post("/posts", status_code=201, response_model=PostOut)
async def create_post(body: PostIn, user_id: UserId, pool: Pool) -> PostOut:
    row = await pool.fetchrow(
        "INSERT INTO social.posts (user_id, body) VALUES ($1, $2) "
        "RETURNING id, user_id, body, created_at",
        user_id,
        body.body,
    )
    return PostOut(**dict(row))
