"""gamification: points, levels and achievements, awarded from events.

The service's consumer group turns user.registered and order.executed into points and
achievements (rules in gekko.domain.gamification), idempotently, and publishes points.awarded
through its outbox. The same process runs the KPI consumer group (gekko.kpis), which keeps the
eight business KPIs in Redis for every gateway to read.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import asyncpg
from fastapi import APIRouter, FastAPI, Path
from pydantic import BaseModel

from gekko import events as ev
from gekko import kpis
from gekko.domain.gamification import Award, award_for_registration, award_for_trade, level_for
from gekko.outbox import add_event
from gekko.security.rbac import SIGNED_IN, AccessTable
from gekko.services.deps import Pool
from gekko.services.wiring import start_consumer, start_relay, stop_all

PREFIX = "/api/v1/gamification"
router = APIRouter(prefix=PREFIX, tags=["gamification"])
# Who may call each route (gekko.security.rbac); a route missing here stops the service.
ACCESS: AccessTable = {
    ("GET", PREFIX + "/user/{user_id}/profile"): SIGNED_IN,
}

CONSUMER = "gamification"
KPI_GROUP = "kpis"
ALL_PRODUCERS = ("users", "trading", "social", "gamification")


class Achievement(BaseModel):
    code: str
    awarded_at: datetime


class ProfileOut(BaseModel):
    user_id: int
    points: int
    level: int
    trades: int
    volume_usd: float
    achievements: list[Achievement]


async def _grant(conn: asyncpg.Connection, user_id: int, award: Award, reason: str) -> None:
    await conn.execute(
        "UPDATE gamification.profiles SET points = points + $2, updated_at = now() "
        "WHERE user_id = $1",
        user_id,
        award.points,
    )
    for code in award.achievements:
        await conn.execute(
            "INSERT INTO gamification.achievements (user_id, code) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            user_id,
            code,
        )
    await add_event(
        conn,
        "gamification",
        ev.POINTS_AWARDED,
        {
            "user_id": user_id,
            "points": award.points,
            "reason": reason,
            "achievements": award.achievements,
        },
    )


async def _profile_for_update(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record:
    await conn.execute(
        "INSERT INTO gamification.profiles (user_id) VALUES ($1) ON CONFLICT DO NOTHING", user_id
    )
    return await conn.fetchrow(
        "SELECT points, trades, volume FROM gamification.profiles WHERE user_id = $1 FOR UPDATE",
        user_id,
    )


async def on_registered(conn: asyncpg.Connection, event: ev.Event) -> None:
    user_id = int(event.payload["user_id"])
    await _profile_for_update(conn, user_id)
    await _grant(conn, user_id, award_for_registration(), "registration")


async def on_executed(conn: asyncpg.Connection, event: ev.Event) -> None:
    user_id = int(event.payload["user_id"])
    notional = Decimal(str(event.payload["notional"]))
    profile = await _profile_for_update(conn, user_id)
    award = award_for_trade(profile["trades"], profile["volume"], notional)
    await conn.execute(
        "UPDATE gamification.profiles SET trades = trades + 1, volume = volume + $2 "
        "WHERE user_id = $1",
        user_id,
        notional,
    )
    await _grant(conn, user_id, award, "trade")


async def start(app: FastAPI) -> None:
    pool = app.state.pool
    relay = start_relay(app, "gamification")

    def once(effect: ev.Handler | object) -> ev.Handler:
        async def handle(event: ev.Event) -> None:
            if await ev.handle_once(pool, "gamification", CONSUMER, event, effect):  # type: ignore[arg-type]
                relay.wake()

        return handle

    start_consumer(
        app,
        CONSUMER,
        ["users", "trading"],
        {ev.USER_REGISTERED: once(on_registered), ev.ORDER_EXECUTED: once(on_executed)},
    )
    redis = app.state.redis

    async def count(event: ev.Event) -> None:
        await kpis.apply_event(redis, event)

    start_consumer(app, KPI_GROUP, ALL_PRODUCERS, count)


async def stop(app: FastAPI) -> None:
    await stop_all(app)


@router.get("/user/{user_id}/profile", response_model=ProfileOut)
async def profile(user_id: Annotated[int, Path(ge=1, le=2**63 - 1)], pool: Pool) -> ProfileOut:
    row = await pool.fetchrow(
        "SELECT points, trades, volume FROM gamification.profiles WHERE user_id = $1", user_id
    )
    rows = await pool.fetch(
        "SELECT code, awarded_at FROM gamification.achievements "
        "WHERE user_id = $1 ORDER BY awarded_at, code",
        user_id,
    )
    points = int(row["points"]) if row else 0  # no activity yet: the zero profile, not a 404
    return ProfileOut(
        user_id=user_id,
        points=points,
        level=level_for(points),
        trades=int(row["trades"]) if row else 0,
        volume_usd=float(row["volume"]) if row else 0.0,
        achievements=[Achievement(code=r["code"], awarded_at=r["awarded_at"]) for r in rows],
    )
