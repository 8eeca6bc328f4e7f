"""market_data: quotes from the shared deterministic price function."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from gekko.domain.prices import SUPPORTED_SYMBOLS, UnknownSymbolError, quote
from gekko.problems import ProblemError

router = APIRouter(prefix="/api/v1/market-data", tags=["market_data"])


class QuoteOut(BaseModel):
    symbol: str
    price: float
    ts: int


@router.get("/symbols")
async def symbols() -> dict[str, list[str]]:
    return {"symbols": list(SUPPORTED_SYMBOLS)}


@router.get("/quotes/{symbol}", response_model=QuoteOut)
async def get_quote(symbol: str) -> QuoteOut:
    try:
        q = quote(symbol)
    except UnknownSymbolError as exc:
        raise ProblemError(404, str(exc), title="Unknown symbol", slug="unknown-symbol") from None
    return QuoteOut(symbol=q.symbol, price=q.price, ts=q.ts)
