"""portfolio: positions derived from the caller's filled orders.

For now this reads trading.orders directly (read-only); a projection fed by the event bus
replaces it once events exist.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from gekko.domain.prices import quote
from gekko.services.deps import Pool, UserId

router = APIRouter(prefix="/api/v1/portfolio", tags=["portfolio"])


class Position(BaseModel):
    symbol: str
    quantity: float
    avg_buy_price: float | None
    market_price: float
    market_value: float


class PortfolioOut(BaseModel):
    user_id: int
    positions: list[Position]
    total_market_value: float
    orders_count: int


@router.get("", response_model=PortfolioOut)
async def get_portfolio(user_id: UserId, pool: Pool) -> PortfolioOut:
    rows = await pool.fetch(
        """
        SELECT symbol,
               sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) AS quantity,
               sum(CASE side WHEN 'buy' THEN quantity * price END)
                 / nullif(sum(CASE side WHEN 'buy' THEN quantity END), 0) AS avg_buy_price,
               count(*) AS orders
        FROM trading.orders
        WHERE user_id = $1 AND status = 'filled'
        GROUP BY symbol
        ORDER BY symbol
        """,
        user_id,
    )
    positions = []
    orders_count = 0
    for row in rows:
        orders_count += row["orders"]
        if row["quantity"] == 0:
            continue
        market_price = quote(row["symbol"]).price
        quantity = float(row["quantity"])
        avg = row["avg_buy_price"]
        positions.append(
            Position(
                symbol=row["symbol"],
                quantity=quantity,
                avg_buy_price=round(float(avg), 6) if avg is not None else None,
                market_price=market_price,
                market_value=round(quantity * market_price, 2),
            )
        )
    return PortfolioOut(
        user_id=user_id,
        positions=positions,
        total_market_value=round(sum(p.market_value for p in positions), 2),
        orders_count=orders_count,
    )
