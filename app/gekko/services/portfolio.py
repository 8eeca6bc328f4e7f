"""portfolio: cash, positions and P&L, projected from trading's order.executed events, and the
positions that orders sent to venues made, from its venue_order.filled events.

This service never reads trading's tables: its consumer group applies each fill to its own
portfolio.accounts / portfolio.positions (venue fills: portfolio.venue_positions) in the same
transaction that records the event id, so a redelivered event changes nothing. Reads value paper
positions at the market-data price, venue positions at the newer of the venue's last traded
price from its market feed (gekko.services.venue_feeds) and their last fill's price.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from gekko import events as ev
from gekko.domain.exchange import INITIAL_CASH, Fill, to_decimal
from gekko.domain.pnl import Holding, apply_fill, value
from gekko.domain.prices import quote
from gekko.domain.venue_fills import Position as VenuePositionState
from gekko.domain.venue_fills import apply, book, fees_from_json, fees_to_json, late_fees
from gekko.exchanges.streams import PRICE_PREFIX
from gekko.security.rbac import SIGNED_IN, AccessTable
from gekko.services.deps import Pool, UserId
from gekko.services.wiring import start_consumer, stop_all

PREFIX = "/api/v1/portfolio"
router = APIRouter(prefix=PREFIX, tags=["portfolio"])
# Who may call each route (gekko.security.rbac); a route missing here stops the service.
ACCESS: AccessTable = {
    ("GET", PREFIX): SIGNED_IN,
    ("GET", PREFIX + "/venues"): SIGNED_IN,
}

CONSUMER = "portfolio"
log = logging.getLogger("gekko.portfolio")


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


async def apply_venue_fill(conn: asyncpg.Connection, event: ev.Event) -> None:
    p = event.payload
    key = (int(p["user_id"]), p["venue"], p["mode"], p["symbol"])
    # The row first, then its lock: two instances booking a symbol's first fills at once wait
    # for each other instead of both starting from nothing.
    await conn.execute(
        "INSERT INTO portfolio.venue_positions (user_id, venue, mode, symbol, base_asset, "
        "quote_asset) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        *key,
        p["base_asset"],
        p["quote_asset"],
    )
    row = await conn.fetchrow(
        "SELECT quantity, cost_basis, realized_pnl, fees_paid, other_fees, fills, last_price, "
        "last_fill_at FROM portfolio.venue_positions "
        "WHERE user_id = $1 AND venue = $2 AND mode = $3 AND symbol = $4 FOR UPDATE",
        *key,
    )
    fees = {asset: Decimal(amount) for asset, amount in p["fees"].items()}
    position = VenuePositionState(row["quantity"], row["cost_basis"], row["realized_pnl"])
    quantity, price, fills = Decimal(p["quantity"]), row["last_price"], row["fills"]
    filled_at = row["last_fill_at"]
    if quantity > 0:
        booked = book(
            p["side"], quantity, Decimal(p["value"]), fees, p["base_asset"], p["quote_asset"],
            fees_in_kind=bool(p.get("fees_in_kind")),
        )  # fmt: skip
        position, _ = apply(position, booked)
        fee_value, other_fees, price, fills = (
            booked.fee_value, booked.other_fees, booked.price, fills + 1
        )  # fmt: skip
        filled_at = _recorded_at(event)
    else:  # fees the venue settled after their fill: a cost realized now
        fee_value, other_fees = late_fees(fees, p["base_asset"], p["quote_asset"], price)
        position = replace(position, realized_pnl=position.realized_pnl - fee_value)
    other = fees_from_json(row["other_fees"])
    for asset, amount in other_fees.items():
        other[asset] = other.get(asset, Decimal(0)) + amount
    await conn.execute(
        "UPDATE portfolio.venue_positions SET quantity = $5, cost_basis = $6, "
        "realized_pnl = $7, fees_paid = fees_paid + $8, other_fees = $9::jsonb, fills = $10, "
        "last_price = $11, last_fill_at = $12, updated_at = now() "
        "WHERE user_id = $1 AND venue = $2 AND mode = $3 AND symbol = $4",
        *key,
        position.quantity,
        position.cost_basis,
        position.realized_pnl,
        fee_value,
        fees_to_json(other),
        fills,
        price,
        filled_at,
    )


def _recorded_at(event: ev.Event) -> datetime:
    """When trading recorded the event (its outbox row's time); now for one that does not say."""
    try:
        recorded = datetime.fromisoformat(event.occurred_at)
    except ValueError:
        return datetime.now(UTC)
    return recorded if recorded.tzinfo is not None else recorded.replace(tzinfo=UTC)


async def start(app: FastAPI) -> None:
    pool = app.state.pool

    async def on_executed(event: ev.Event) -> None:
        await ev.handle_once(pool, "portfolio", CONSUMER, event, apply_execution)

    async def on_venue_fill(event: ev.Event) -> None:
        await ev.handle_once(pool, "portfolio", CONSUMER, event, apply_venue_fill)

    start_consumer(
        app,
        CONSUMER,
        ["trading"],
        {ev.ORDER_EXECUTED: on_executed, ev.VENUE_ORDER_FILLED: on_venue_fill},
    )


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


class VenuePosition(BaseModel):
    venue: str
    mode: str
    symbol: str = Field(description="the venue's name for it (BTCUSD, BTC-USD, EUR_USD)")
    base_asset: str | None
    quote_asset: str | None
    quantity: float = Field(description="negative: short")
    average_cost: float | None = Field(description="in the quote asset, fees included")
    cost_basis: float
    market_price: float
    priced_by: str = Field(
        description="feed: the venue's last trade (its market feed); last_fill: your last "
        "fill's price, when it is newer than the feed's or no feed runs"
    )
    market_value: float
    unrealized_pnl: float
    realized_pnl: float
    fees_paid: float = Field(description="in the quote asset")
    other_fees: dict[str, float] = Field(description="fees charged in another asset, by asset")
    fills: int


class VenuePortfolioOut(BaseModel):
    user_id: int
    positions: list[VenuePosition]


@router.get("/venues", response_model=VenuePortfolioOut)
async def get_venue_portfolio(user_id: UserId, pool: Pool, request: Request) -> VenuePortfolioOut:
    """What your orders sent to venues hold (negative: short), per venue, mode and symbol, with
    P&L and fees in the symbol's quote asset. Your balances at a venue:
    GET /api/v1/trading/venue-balances/{venue}."""
    rows = await pool.fetch(
        "SELECT venue, mode, symbol, base_asset, quote_asset, quantity, cost_basis, "
        "realized_pnl, fees_paid, other_fees, fills, last_price, "
        "coalesce(last_fill_at, updated_at) AS last_fill_at "
        "FROM portfolio.venue_positions WHERE user_id = $1 AND fills > 0 "
        "ORDER BY venue, mode, symbol",
        user_id,
    )
    fed_prices = await _feed_prices(
        request.app.state.redis, [(row["venue"], row["symbol"]) for row in rows]
    )
    positions = []
    for row in rows:
        held = VenuePositionState(row["quantity"], row["cost_basis"], row["realized_pnl"])
        fed = fed_prices.get((row["venue"], row["symbol"]))
        price, priced_by = row["last_price"], "last_fill"
        if fed is not None and fed[1] > row["last_fill_at"]:  # the newer of the two prices
            price, priced_by = fed[0], "feed"
        market_value = held.quantity * price
        average = held.average_price
        positions.append(
            VenuePosition(
                venue=row["venue"],
                mode=row["mode"],
                symbol=row["symbol"],
                base_asset=row["base_asset"],
                quote_asset=row["quote_asset"],
                quantity=float(held.quantity),
                average_cost=None if average is None else float(average),
                cost_basis=float(held.cost_basis),
                market_price=float(price),
                priced_by=priced_by,
                market_value=float(market_value),
                unrealized_pnl=float(market_value - held.cost_basis),
                realized_pnl=float(held.realized_pnl),
                fees_paid=float(row["fees_paid"]),
                other_fees={a: float(v) for a, v in fees_from_json(row["other_fees"]).items()},
                fills=row["fills"],
            )
        )
    return VenuePortfolioOut(user_id=user_id, positions=positions)


async def _feed_prices(
    redis: Any, wanted: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[Decimal, datetime]]:
    """The venue feeds' last price of each (venue, symbol) and when it came, in one round trip;
    none without a feed, an unreadable one, or Redis away (the last fill values it then)."""
    by_venue: dict[str, list[str]] = {}
    for venue, symbol in wanted:
        by_venue.setdefault(venue, []).append(symbol)
    if not by_venue:
        return {}
    pipe = redis.pipeline(transaction=False)
    for venue, symbols in by_venue.items():
        pipe.hmget(PRICE_PREFIX + venue, symbols)
    try:
        # A key that cannot be read (not a hash) values its own positions at their last fill.
        answers = await pipe.execute(raise_on_error=False)
    except RedisError as exc:
        log.warning("venue prices unavailable, positions valued at their last fill: %r", exc)
        return {}
    prices = {}
    for (venue, symbols), fed in zip(by_venue.items(), answers, strict=True):
        if isinstance(fed, Exception):
            log.warning("venue prices of %s unreadable, valued at the last fill: %r", venue, fed)
            continue
        for symbol, raw in zip(symbols, fed, strict=True):
            price = _feed_price(raw)
            if price is not None:
                prices[venue, symbol] = price
    return prices


def _feed_price(raw: bytes | str | None) -> tuple[Decimal, datetime] | None:
    """A venue feed's price entry ("<price> <epoch ms>"); None for none or one in no known form."""
    price, _, at_ms = ev.as_text(raw or "").partition(" ")
    try:
        return Decimal(price), datetime.fromtimestamp(int(at_ms) / 1000, UTC)
    except (ArithmeticError, ValueError):
        return None
