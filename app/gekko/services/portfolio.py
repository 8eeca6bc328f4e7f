"""portfolio: cash, positions and P&L, projected from trading's order.executed events.

This service never reads trading's tables: its consumer group applies each fill to its own
portfolio.accounts / portfolio.positions in the same transaction that records the event id, so
a redelivered event changes nothing. Reads value positions at the market-data price.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from gekko import events as ev
from gekko.domain.exchange import INITIAL_CASH, Fill, to_decimal
from gekko.domain.pnl import Holding, apply_fill, value
from gekko.domain.prices import quote
from gekko.security.rbac import SIGNED_IN, AccessTable
from gekko.services.deps import Pool, UserId
from gekko.services.wiring import start_consumer, stop_all

PREFIX = "/api/v1/portfolio"
router = APIRouter(prefix=PREFIX, tags=["portfolio"])
# Who may call each route (gekko.security.rbac); a route missing here stops the service.
ACCESS: AccessTable = {
    ("GET", PREFIX): SIGNED_IN,
}

CONSUMER = "portfolio"


async def apply_execution(conn: asyncpg.Connection, event: ev.Event) -> None:
    p = event.payload
    user_id = int(p["user_id"])
    fill = Fill(
        side=p["side"],
        quantity=Decimal(str(p["quantity"])),
        price=Decimal(str(p["price"])),
        notional=Decimal(str(p["notional"])),
        fee=Decimal(str(p["fee"])),
    )
    await conn.execute(
        "INSERT INTO portfolio.accounts (user_id, cash) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        user_id,
        INITIAL_CASH,
    )
    await conn.execute("SELECT 1 FROM portfolio.accounts WHERE user_id = $1 FOR UPDATE", user_id)
    row = await conn.fetchrow(
        "SELECT quantity, cost_basis, realized_pnl FROM portfolio.positions "
        "WHERE user_id = $1 AND symbol = $2 FOR UPDATE",
        user_id,
        p["symbol"],
    )
    before = Holding(*row.values()) if row is not None else Holding()
    after, realized = apply_fill(before, fill)
    await conn.execute(
        "INSERT INTO portfolio.positions (user_id, symbol, quantity, cost_basis, realized_pnl) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, symbol) DO UPDATE SET "
        "quantity = EXCLUDED.quantity, cost_basis = EXCLUDED.cost_basis, "
        "realized_pnl = EXCLUDED.realized_pnl, updated_at = now()",
        user_id,
        p["symbol"],
        after.quantity,
        after.cost_basis,
        after.realized_pnl,
    )
    await conn.execute(
        "UPDATE portfolio.accounts SET cash = cash + $2, realized_pnl = realized_pnl + $3, "
        "fees_paid = fees_paid + $4, trades = trades + 1, updated_at = now() WHERE user_id = $1",
        user_id,
        fill.cash_delta,
        realized,
        fill.fee,
    )


async def start(app: FastAPI) -> None:
    pool = app.state.pool

    async def on_executed(event: ev.Event) -> None:
        await ev.handle_once(pool, "portfolio", CONSUMER, event, apply_execution)

    start_consumer(app, CONSUMER, ["trading"], {ev.ORDER_EXECUTED: on_executed})


async def stop(app: FastAPI) -> None:
    await stop_all(app)


class Position(BaseModel):
    symbol: str
    quantity: float
    average_cost: float | None
    cost_basis: float
    market_price: float
    market_value: float
    unrealized_pnl: float
    realized_pnl: float


class PortfolioOut(BaseModel):
    user_id: int
    cash: float
    positions: list[Position]
    positions_value: float
    unrealized_pnl: float
    realized_pnl: float
    fees_paid: float
    total_equity: float
    trades: int


@router.get("", response_model=PortfolioOut)
async def get_portfolio(user_id: UserId, pool: Pool) -> PortfolioOut:
    account = await pool.fetchrow(
        "SELECT cash, realized_pnl, fees_paid, trades FROM portfolio.accounts WHERE user_id = $1",
        user_id,
    )
    rows = await pool.fetch(
        "SELECT symbol, quantity, cost_basis, realized_pnl FROM portfolio.positions "
        "WHERE user_id = $1 ORDER BY symbol",
        user_id,
    )
    cash = account["cash"] if account else INITIAL_CASH
    positions: list[Position] = []
    positions_value = unrealized = Decimal(0)
    for row in rows:
        if row["quantity"] == 0:
            continue  # closed positions keep their realized P&L in the account total
        holding = Holding(row["quantity"], row["cost_basis"], row["realized_pnl"])
        price = to_decimal(quote(row["symbol"]).price)
        valuation = value(holding, price)
        positions_value += valuation.market_value
        unrealized += valuation.unrealized_pnl
        avg = holding.average_cost
        positions.append(
            Position(
                symbol=row["symbol"],
                quantity=float(holding.quantity),
                average_cost=None if avg is None else float(avg),
                cost_basis=float(holding.cost_basis),
                market_price=float(price),
                market_value=float(valuation.market_value),
                unrealized_pnl=float(valuation.unrealized_pnl),
                realized_pnl=float(holding.realized_pnl),
            )
        )
    extra: dict[str, Any] = {
        "realized_pnl": float(account["realized_pnl"]) if account else 0.0,
        "fees_paid": float(account["fees_paid"]) if account else 0.0,
        "trades": int(account["trades"]) if account else 0,
    }
    return PortfolioOut(
        user_id=user_id,
        cash=float(cash),
        positions=positions,
        positions_value=float(positions_value),
        unrealized_pnl=float(unrealized),
        total_equity=float(cash + positions_value),
        **extra,
    )
