"""gamification: points, levels and achievements per user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from gekko.services.deps import Pool

router = APIRouter(prefix="/api/v1/gamification", tags=["gamification"])

POINTS_PER_LEVEL = 100


def level_for(points: int) -> int:
    return 1 + max(points, 0) // POINTS_PER_LEVEL


class Achievement(BaseModel):
    code: str
    awarded_at: str


class ProfileOut(BaseModel):
    user_id: int
    points: int
    level: int
    achievements: list[Achievement]


@router.get("/user/{user_id}/profile", response_model=ProfileOut)
async def profile(user_id: Annotated[int, Path(ge=1, le=2**63 - 1)], pool: Pool) -> ProfileOut:
    points = await pool.fetchval(
        "SELECT points FROM gamification.profiles WHERE user_id = $1", user_id
    )
    rows = await pool.fetch(
        "SELECT code, awarded_at FROM gamification.achievements "
        "WHERE user_id = $1 ORDER BY awarded_at",
        user_id,
    )
    points = int(points or 0)  # a user with no activity has the zero profile, not a 404
    return ProfileOut(
        user_id=user_id,
        points=points,
        level=level_for(points),
        achievements=[
            Achievement(code=r["code"], awarded_at=r["awarded_at"].isoformat()) for r in rows
        ],
    )
