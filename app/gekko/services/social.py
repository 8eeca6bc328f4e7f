"""social: posts, follows and trade shares, merged into one feed.

Trade shares are created by this service's consumer of order.executed (each order shared once,
keyed by order id); a directory of users is kept from user.registered so a follow can refuse an
unknown user without reading another service's tables. Posts, follows and shares publish
their own events through this schema's outbox (they feed the social-engagement KPI).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from gekko import events as ev
from gekko.dynconfig import FEATURE_DISABLED_HEADER, flags
from gekko.outbox import add_event
from gekko.problems import ProblemError
from gekko.security.rbac import SIGNED_IN, TRADE, AccessTable
from gekko.services.deps import Claims, Pool, UserId
from gekko.services.inputs import StoredText
from gekko.services.wiring import start_consumer, start_relay, stop_all, wake_relay

PREFIX = "/api/v1/social"
router = APIRouter(prefix=PREFIX, tags=["social"])
# Who may call each route (gekko.security.rbac); a route missing here stops the service.
ACCESS: AccessTable = {
    ("GET", PREFIX + "/feed"): SIGNED_IN,
    ("POST", PREFIX + "/posts"): TRADE,
    ("POST", PREFIX + "/follow/{target_id}"): TRADE,
    ("DELETE", PREFIX + "/follow/{target_id}"): TRADE,
    ("GET", PREFIX + "/users/{target_id}/follows"): SIGNED_IN,
    ("GET", PREFIX + "/sharing"): SIGNED_IN,
    ("PUT", PREFIX + "/sharing"): SIGNED_IN,
}

CONSUMER = "social"
TargetUserId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class PostIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: StoredText = Field(min_length=1, max_length=280)

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


class FeedItem(BaseModel):
    kind: Literal["post", "trade", "follow"]
    id: int | None = Field(description="post id (posts and trade shares)")
    user_id: int
    username: str | None
    body: str | None
    trade: dict[str, Any] | None = None
    followee_id: int | None = None
    created_at: datetime


class FollowOut(BaseModel):
    follower_id: int
    followee_id: int
    created_at: datetime


def trade_share_text(trade: dict[str, Any]) -> str:
    verb = "bought" if trade["side"] == "buy" else "sold"
    quantity = Decimal(str(trade["quantity"])).normalize()
    price = Decimal(str(trade["price"])).quantize(Decimal("0.01"))
    return f"{verb} {quantity:f} {trade['symbol']} @ {price:f}"


async def share_trade(conn: asyncpg.Connection, event: ev.Event) -> None:
    """A fill becomes a post only for a user who chose to share trades (PUT /sharing)."""
    p = event.payload
    shares = await conn.fetchval(
        "SELECT share_trades FROM social.preferences WHERE user_id = $1", int(p["user_id"])
    )
    if not shares:
        return
    trade = {k: p[k] for k in ("order_id", "symbol", "side", "quantity", "price", "notional")}
    post_id = await conn.fetchval(
        "INSERT INTO social.posts (user_id, body, kind, order_id, trade) "
        "VALUES ($1, $2, 'trade', $3, $4::jsonb) ON CONFLICT (order_id) DO NOTHING RETURNING id",
        int(p["user_id"]),
        trade_share_text(trade),
        int(p["order_id"]),
        orjson.dumps(trade, default=str).decode(),
    )
    if post_id is not None:
        await add_event(
            conn,
            "social",
            ev.SOCIAL_TRADE_SHARED,
            {"post_id": post_id, "user_id": int(p["user_id"]), "order_id": int(p["order_id"])},
        )


async def remember_user(conn: asyncpg.Connection, event: ev.Event) -> None:
    await conn.execute(
        "INSERT INTO social.users (user_id, username) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        int(event.payload["user_id"]),
        str(event.payload.get("username", "")),
    )


async def start(app: FastAPI) -> None:
    pool = app.state.pool
    relay = start_relay(app, "social")

    def once(effect: Any) -> ev.Handler:
        async def handle(event: ev.Event) -> None:
            if await ev.handle_once(pool, "social", CONSUMER, event, effect):
                relay.wake()

        return handle

    start_consumer(
        app,
        CONSUMER,
        ["users", "trading"],
        {ev.USER_REGISTERED: once(remember_user), ev.ORDER_EXECUTED: once(share_trade)},
    )


async def stop(app: FastAPI) -> None:
    await stop_all(app)


_FEED = """
SELECT * FROM (
    SELECT p.kind, p.id, p.user_id, u.username, p.body, p.trade, NULL::bigint AS followee_id,
           p.created_at
    FROM social.posts p LEFT JOIN social.users u USING (user_id)
    WHERE $2::bigint IS NULL OR p.user_id = $2 OR p.user_id IN
        (SELECT followee_id FROM social.follows WHERE follower_id = $2)
    UNION ALL
    SELECT 'follow', NULL, f.follower_id, u.username, NULL, NULL, f.followee_id, f.created_at
    FROM social.follows f LEFT JOIN social.users u ON u.user_id = f.follower_id
    WHERE $2::bigint IS NULL OR f.follower_id = $2 OR f.follower_id IN
        (SELECT followee_id FROM social.follows WHERE follower_id = $2)
) feed
ORDER BY created_at DESC, id DESC NULLS LAST
LIMIT $1
"""


@router.get("/feed")
async def feed(
    pool: Pool,
    claims: Claims,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    scope: Annotated[
        Literal["all", "following"],
        Query(description="'following': you and the users you follow"),
    ] = "all",
) -> dict[str, list[FeedItem]]:
    viewer = claims.user_id if scope == "following" else None
    rows = await pool.fetch(_FEED, limit, viewer)
    items = [
        FeedItem(
            kind=r["kind"],
            id=r["id"],
            user_id=r["user_id"],
            username=r["username"],
            body=r["body"],
            trade=orjson.loads(r["trade"]) if r["trade"] else None,
            followee_id=r["followee_id"],
            created_at=r["created_at"],
        )
        for r in rows
    ]
    return {"items": items}


class SharingIn(BaseModel):
    # Strict: 0, "no" or "off" are not booleans (the schema says true or false).
    share_trades: StrictBool = Field(description="post each of your fills to the social feed")


class SharingOut(SharingIn):
    updated_at: datetime | None = None


@router.get("/sharing", response_model=SharingOut)
async def get_sharing(user_id: UserId, pool: Pool) -> SharingOut:
    row = await pool.fetchrow(
        "SELECT share_trades, updated_at FROM social.preferences WHERE user_id = $1", user_id
    )
    return SharingOut(**dict(row)) if row else SharingOut(share_trades=False)


@router.put("/sharing", response_model=SharingOut)
async def set_sharing(body: SharingIn, user_id: UserId, pool: Pool) -> SharingOut:
    """Whether your fills appear in the feed from now on (off until you turn it on)."""
    row = await pool.fetchrow(
        """
        INSERT INTO social.preferences (user_id, share_trades) VALUES ($1, $2)
        ON CONFLICT (user_id) DO UPDATE
            SET share_trades = EXCLUDED.share_trades, updated_at = now()
        RETURNING share_trades, updated_at
        """,
        user_id,
        body.share_trades,
    )
    return SharingOut(**dict(row))


def posting_enabled() -> None:
    """Operators switch posting off live with `feature.social_posts=false` (gekko.dynconfig)."""
    if not flags.enabled("social_posts"):
        raise ProblemError(
            503,
            "posting is temporarily disabled",
            title="Feature disabled",
            slug="feature-disabled",
            headers={FEATURE_DISABLED_HEADER: "social_posts"},
        )


@router.post(
    "/posts", status_code=201, response_model=PostOut, dependencies=[Depends(posting_enabled)]
)
async def create_post(body: PostIn, user_id: UserId, pool: Pool, request: Request) -> PostOut:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO social.posts (user_id, body) VALUES ($1, $2) "
            "RETURNING id, user_id, body, created_at",
            user_id,
            body.body,
        )
        await add_event(
            conn, "social", ev.SOCIAL_POSTED, {"post_id": row["id"], "user_id": user_id}
        )
    wake_relay(request.app)
    return PostOut(**dict(row))


@router.post("/follow/{target_id}", response_model=FollowOut, status_code=201)
async def follow(
    target_id: TargetUserId, user_id: UserId, pool: Pool, request: Request
) -> JSONResponse:
    if target_id == user_id:
        raise ProblemError(422, "you cannot follow yourself", slug="follow-self")
    async with pool.acquire() as conn, conn.transaction():
        known = await conn.fetchval("SELECT true FROM social.users WHERE user_id = $1", target_id)
        if not known:
            raise ProblemError(404, f"user {target_id} not found", slug="user-not-found")
        row = await conn.fetchrow(
            "INSERT INTO social.follows (follower_id, followee_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING follower_id, followee_id, created_at",
            user_id,
            target_id,
        )
        if row is None:  # already following: same answer, no second event
            row = await conn.fetchrow(
                "SELECT follower_id, followee_id, created_at FROM social.follows "
                "WHERE follower_id = $1 AND followee_id = $2",
                user_id,
                target_id,
            )
            return JSONResponse(FollowOut(**dict(row)).model_dump(mode="json"), status_code=200)
        await add_event(
            conn, "social", ev.SOCIAL_FOLLOWED, {"follower_id": user_id, "followee_id": target_id}
        )
    wake_relay(request.app)
    return JSONResponse(FollowOut(**dict(row)).model_dump(mode="json"), status_code=201)


@router.delete("/follow/{target_id}", status_code=204)
async def unfollow(target_id: TargetUserId, user_id: UserId, pool: Pool) -> None:
    await pool.execute(
        "DELETE FROM social.follows WHERE follower_id = $1 AND followee_id = $2",
        user_id,
        target_id,
    )


@router.get("/users/{target_id}/follows")
async def follows_of(target_id: TargetUserId, pool: Pool) -> dict[str, Any]:
    following = await pool.fetch(
        "SELECT followee_id FROM social.follows WHERE follower_id = $1 ORDER BY followee_id",
        target_id,
    )
    followers = await pool.fetch(
        "SELECT follower_id FROM social.follows WHERE followee_id = $1 ORDER BY follower_id",
        target_id,
    )
    return {
        "user_id": target_id,
        "following": [r["followee_id"] for r in following],
        "followers": [r["follower_id"] for r in followers],
    }
