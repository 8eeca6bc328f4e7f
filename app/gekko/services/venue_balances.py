"""trading: what a user holds at a venue, asked of the venue with their newest linked key for the
environment's mode (sandbox or live). The venue's own account is the truth of what is there;
the platform's portfolio (GET /api/v1/portfolio/venues) is what the platform's orders did.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from gekko.config import VENUE_NAMES
from gekko.exchanges.base import ExchangeError
from gekko.exchanges.venues import VENUES, VenueSettingsError
from gekko.security.rbac import SIGNED_IN, AccessTable
from gekko.services.deps import UserId, venue_mode
from gekko.services.venue_access import (
    ANSWER_WITHIN_S,
    desk_of,
    exchange_of_key,
    too_slow,
    usable_key,
    venue_problem,
)

PREFIX = "/api/v1/trading/venue-balances"
router = APIRouter(prefix=PREFIX, tags=["trading"])
ACCESS: AccessTable = {("GET", PREFIX + "/{venue}"): SIGNED_IN}


class BalanceOut(BaseModel):
    asset: str
    free: float
    locked: float


class VenueBalancesOut(BaseModel):
    venue: str
    mode: str
    balances: list[BalanceOut]
    as_of: datetime


@router.get("/{venue}", response_model=VenueBalancesOut)
async def venue_balances(
    venue: Annotated[Literal[VENUE_NAMES], Path(description="binanceus, coinbase or oanda")],  # type: ignore[valid-type]
    user_id: UserId,
    request: Request,
) -> VenueBalancesOut:
    """Your balances at the venue, as it reports them now (assets with nothing held left out)."""
    app = request.app
    mode = venue_mode(request, "your paper balances are at GET /api/v1/portfolio")
    where = VENUES[venue]
    key_id = await usable_key(app, user_id, where, mode, "it is not asked")
    what = f"your {where.title} balances"
    try:
        exchange = await exchange_of_key(app, key_id)
        async with asyncio.timeout(ANSWER_WITHIN_S):
            found = await desk_of(app).call(exchange, exchange.balances)
    except TimeoutError:
        raise too_slow(where, what, "ask again") from None
    except (ExchangeError, VenueSettingsError) as exc:
        raise venue_problem(exc, what) from None
    return VenueBalancesOut(
        venue=where.name,
        mode=mode.value,
        balances=[
            BalanceOut(asset=b.asset, free=float(b.free), locked=float(b.locked))
            for b in sorted(found, key=lambda b: b.asset)
            if b.free or b.locked
        ],
        as_of=datetime.now(UTC),
    )
