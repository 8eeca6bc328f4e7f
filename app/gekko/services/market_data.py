"""market_data: quotes and OHLCV candles from the shared deterministic price feed, and the
venues' real-time market data streamed into Redis (gekko.services.venue_feeds).

The feed is generated, not replayed: gekko.domain.prices is a pure function of (symbol,
second), the same one trading fills at, so a quote and a fill in the same second agree.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from gekko.domain.candles import INTERVALS, MAX_CANDLES, UnknownIntervalError, candles
from gekko.domain.prices import SUPPORTED_SYMBOLS, UnknownSymbolError, quote
from gekko.problems import ProblemError
from gekko.security.rbac import PUBLIC, AccessTable
from gekko.services import venue_feeds

PREFIX = "/api/v1/market-data"
router = APIRouter(prefix=PREFIX, tags=["market_data"])
ROUTERS = (router, venue_feeds.router)
# Who may call each route (gekko.security.rbac); a route missing here stops the service.
ACCESS: AccessTable = {
    ("GET", PREFIX + "/symbols"): PUBLIC,
    ("GET", PREFIX + "/quotes/{symbol}"): PUBLIC,
    ("GET", PREFIX + "/candles/{symbol}"): PUBLIC,
    **venue_feeds.ACCESS,
}
configure = venue_feeds.configure
start = venue_feeds.start
stop = venue_feeds.stop


class QuoteOut(BaseModel):
    symbol: str
    price: float
    ts: int


class CandleOut(BaseModel):
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class CandlesOut(BaseModel):
    symbol: str
    interval: str
    candles: list[CandleOut]


def _unknown_symbol(exc: UnknownSymbolError) -> ProblemError:
    return ProblemError(404, str(exc), title="Unknown symbol", slug="unknown-symbol")


@router.get("/symbols")
async def symbols() -> dict[str, list[str]]:
    return {"symbols": list(SUPPORTED_SYMBOLS)}


@router.get("/quotes/{symbol}", response_model=QuoteOut)
async def get_quote(symbol: str) -> QuoteOut:
    try:
        q = quote(symbol)
    except UnknownSymbolError as exc:
        raise _unknown_symbol(exc) from None
    return QuoteOut(symbol=q.symbol, price=q.price, ts=q.ts)


@router.get("/candles/{symbol}", response_model=CandlesOut)
async def get_candles(
    symbol: str,
    interval: Annotated[str, Query(description=f"one of {', '.join(INTERVALS)}")] = "1m",
    limit: Annotated[int, Query(ge=1, le=MAX_CANDLES)] = 60,
) -> CandlesOut:
    try:
        # Off the event loop: a cold 500-candle request samples the feed ~30k times.
        series = await asyncio.to_thread(candles, symbol, interval, limit)
    except UnknownSymbolError as exc:
        raise _unknown_symbol(exc) from None
    except UnknownIntervalError as exc:
        raise ProblemError(
            422, str(exc), title="Unknown interval", slug="unknown-interval"
        ) from None
    return CandlesOut(
        symbol=symbol.strip().upper(),
        interval=interval,
        candles=[CandleOut(**c.__dict__) for c in series],
    )
