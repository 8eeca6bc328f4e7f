"""trading: a paper exchange. Market and limit orders fill at the shared market-data price.

Every order runs in one transaction that locks the user's trading account row first (so a
user's orders serialize and the balance check cannot race), checks cash or position, writes the
order, moves cash/position and appends its events to the outbox. Resting limit orders reserve
cash (buys, at the limit price plus fee) or quantity (sells); a matcher task fills them when the
market crosses, and cancelling releases the reservation.

An Idempotency-Key makes a retried POST safe: the key is checked under the account lock and a
replay returns the original order with 200 instead of 201.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gekko import events as ev
from gekko.domain.exchange import (
    INITIAL_CASH,
    MAX_QUANTITY,
    Fill,
    OrderRejectedError,
    buy_reservation,
    check_cash,
    check_order,
    check_position,
    is_marketable,
    make_fill,
    to_decimal,
)
from gekko.domain.prices import UnknownSymbolError, normalize_symbol, quote
from gekko.outbox import add_event
from gekko.problems import ProblemError
from gekko.security.crypto import DataKeys
from gekko.security.rbac import SIGNED_IN, TRADE, AccessTable
from gekko.services import venue_balances, venue_keys, venue_links, venue_orders
from gekko.services.deps import IdempotencyKey, Pool, UserId, idempotency_key_reused
from gekko.services.wiring import start_relay, stop_all, wake_relay

PREFIX = "/api/v1/trading"
router = APIRouter(prefix=PREFIX, tags=["trading"])
# The routers make up the service: paper orders here, the linked venue keys in venue_keys (and
# the accounts linked by signing in, venue_links), the orders sent to venues with them in
# venue_orders, and what the user holds at a venue in venue_balances.
ROUTERS = (
    router,
    venue_keys.router,
    venue_links.router,
    venue_orders.router,
    venue_balances.router,
)
# Who may call each route (gekko.security.rbac); a route missing here stops the service.
ACCESS: AccessTable = {
    ("POST", PREFIX + "/execute"): TRADE,
    ("GET", PREFIX + "/orders/{order_id}"): SIGNED_IN,
    ("DELETE", PREFIX + "/orders/{order_id}"): TRADE,
    ("GET", PREFIX + "/orders"): SIGNED_IN,
    ("GET", PREFIX + "/account"): SIGNED_IN,
    **venue_keys.ACCESS,
    **venue_links.ACCESS,
    **venue_orders.ACCESS,
    **venue_balances.ACCESS,
}
log = logging.getLogger("gekko.trading")

MATCH_INTERVAL_S = 1.0
_ORDER_COLUMNS = (
    "id, user_id, symbol, side, type, quantity, limit_price, price, notional, fee, reserved, "
    "status, created_at, filled_at"
)
OrderId = Annotated[int, Path(ge=1, le=2**63 - 1, description="order id")]


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo like "limitPrice" must not be ignored

    symbol: str = Field(min_length=1, max_length=16)
    side: Literal["buy", "sell"]
    quantity: Decimal = Field(gt=0, le=MAX_QUANTITY, max_digits=28, decimal_places=10)
    type: Literal["market", "limit"] = "market"
    limit_price: Decimal | None = Field(default=None, gt=0, max_digits=28, decimal_places=8)

    @field_validator("symbol")
    @classmethod
    def _known_symbol(cls, value: str) -> str:
        try:
            return normalize_symbol(value)
        except UnknownSymbolError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _limit_price_iff_limit(self) -> ExecuteRequest:
        if self.type == "limit" and self.limit_price is None:
            raise ValueError("limit_price is required for limit orders")
        if self.type == "market" and self.limit_price is not None:
            raise ValueError("limit_price is only allowed on limit orders")
        return self


class OrderOut(BaseModel):
    id: int
    user_id: int
    symbol: str
    side: str
    type: str
    quantity: float
    limit_price: float | None
    price: float | None = Field(description="fill price; null while the order is open")
    notional: float | None
    fee: float
    status: str
    created_at: datetime
    filled_at: datetime | None


def _num(value: Decimal | None) -> float | None:
    # Decimal -> JSON number at the boundary only; every computation stays in Decimal.
    return None if value is None else float(value)


def _order(row: asyncpg.Record) -> OrderOut:
    return OrderOut(
        id=row["id"],
        user_id=row["user_id"],
        symbol=row["symbol"],
        side=row["side"],
        type=row["type"],
        quantity=float(row["quantity"]),
        limit_price=_num(row["limit_price"]),
        price=_num(row["price"]),
        notional=_num(row["notional"]),
        fee=float(row["fee"]),
        status=row["status"],
        created_at=row["created_at"],
        filled_at=row["filled_at"],
    )


def _json(row: asyncpg.Record, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(_order(row).model_dump(mode="json"), status_code=status, headers=headers)


async def _lock_account(conn: asyncpg.Connection, user_id: int) -> Decimal:
    """Create the paper account on first use and lock it; returns available cash."""
    await conn.execute(
        "INSERT INTO trading.accounts (user_id, cash) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        user_id,
        INITIAL_CASH,
    )
    return await conn.fetchval(
        "SELECT cash FROM trading.accounts WHERE user_id = $1 FOR UPDATE", user_id
    )


async def _held(conn: asyncpg.Connection, user_id: int, symbol: str) -> Decimal:
    held = await conn.fetchval(
        "SELECT quantity FROM trading.positions WHERE user_id = $1 AND symbol = $2 FOR UPDATE",
        user_id,
        symbol,
    )
    return held if held is not None else Decimal(0)


async def _move(
    conn: asyncpg.Connection, user_id: int, symbol: str, cash: Decimal, quantity: Decimal
) -> None:
    """Add signed deltas to the user's cash and position (CHECKs keep both >= 0)."""
    if cash:
        await conn.execute(
            "UPDATE trading.accounts SET cash = cash + $2, updated_at = now() WHERE user_id = $1",
            user_id,
            cash,
        )
    if quantity < 0:
        # UPDATE, not an upsert: the CHECK would reject the negative proposed insert row.
        await conn.execute(
            "UPDATE trading.positions SET quantity = quantity + $3 "
            "WHERE user_id = $1 AND symbol = $2",
            user_id,
            symbol,
            quantity,
        )
    elif quantity:
        await conn.execute(
            "INSERT INTO trading.positions (user_id, symbol, quantity) VALUES ($1, $2, $3) "
            "ON CONFLICT (user_id, symbol) "
            "DO UPDATE SET quantity = trading.positions.quantity + EXCLUDED.quantity",
            user_id,
            symbol,
            quantity,
        )


def _placed_payload(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "order_id": row["id"],
        "user_id": row["user_id"],
        "symbol": row["symbol"],
        "side": row["side"],
        "type": row["type"],
        "quantity": row["quantity"],
        "limit_price": row["limit_price"],
        "status": row["status"],
    }


async def _executed(
    conn: asyncpg.Connection, row: asyncpg.Record, fill: Fill, latency_ms: float | None
) -> None:
    await add_event(
        conn,
        "trading",
        ev.ORDER_EXECUTED,
        {
            "order_id": row["id"],
            "user_id": row["user_id"],
            "symbol": row["symbol"],
            "side": fill.side,
            "type": row["type"],
            "quantity": fill.quantity,
            "price": fill.price,
            "notional": fill.notional,
            "fee": fill.fee,
            "executed_at": row["filled_at"].isoformat(),
            "latency_ms": latency_ms,
        },
    )


def _same_request(original: asyncpg.Record, body: ExecuteRequest) -> bool:
    return (
        original["symbol"] == body.symbol
        and original["side"] == body.side
        and original["type"] == body.type
        and original["quantity"] == body.quantity
        and original["limit_price"] == body.limit_price
    )


async def _place(
    conn: asyncpg.Connection, user_id: int, body: ExecuteRequest, key: str | None, started: float
) -> tuple[asyncpg.Record, bool]:
    """Inside a transaction: (order row, created?). Raises OrderRejectedError on checks."""
    cash = await _lock_account(conn, user_id)
    if key is not None:
        original = await conn.fetchrow(
            f"SELECT {_ORDER_COLUMNS} FROM trading.orders "  # noqa: S608 - constant columns
            "WHERE user_id = $1 AND idempotency_key = $2",
            user_id,
            key,
        )
        if original is not None:
            if not _same_request(original, body):
                raise idempotency_key_reused()
            return original, False
    held = await _held(conn, user_id, body.symbol)
    market = to_decimal(quote(body.symbol).price)
    immediate = body.type == "market" or is_marketable(body.side, body.limit_price, market)
    insert = (
        "INSERT INTO trading.orders (user_id, symbol, side, type, quantity, limit_price, price, "  # noqa: S608 - constant SQL
        "notional, fee, reserved, status, filled_at, idempotency_key) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
        f"RETURNING {_ORDER_COLUMNS}"
    )
    args = (user_id, body.symbol, body.side, body.type, body.quantity, body.limit_price)
    if immediate:
        fill = make_fill(body.side, body.quantity, market)
        check_order(body.side, body.symbol, fill, cash, held)
        row = await conn.fetchrow(
            insert, *args, market, fill.notional, fill.fee, 0, "filled", _now(), key
        )
        await _move(conn, user_id, body.symbol, fill.cash_delta, fill.position_delta)
        await add_event(conn, "trading", ev.ORDER_PLACED, _placed_payload(row))
        await _executed(conn, row, fill, round((time.perf_counter() - started) * 1000, 3))
        return row, True
    # Resting limit order: reserve what a fill at the limit price could need.
    assert body.limit_price is not None  # noqa: S101 - guaranteed by the request model
    reserved = Decimal(0)
    if body.side == "buy":
        reserved = buy_reservation(body.quantity, body.limit_price)
        check_cash(cash, reserved)
        await _move(conn, user_id, body.symbol, -reserved, Decimal(0))
    else:
        check_position(body.symbol, held, body.quantity)
        await _move(conn, user_id, body.symbol, Decimal(0), -body.quantity)
    row = await conn.fetchrow(insert, *args, None, None, 0, reserved, "open", None, key)
    await add_event(conn, "trading", ev.ORDER_PLACED, _placed_payload(row))
    return row, True


def _now() -> datetime:
    return datetime.now(UTC)


@router.post("/execute", status_code=201, response_model=OrderOut)
async def execute(
    body: ExecuteRequest,
    user_id: UserId,
    pool: Pool,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    started = time.perf_counter()
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                row, created = await _place(conn, user_id, body, idempotency_key, started)
        except OrderRejectedError as exc:
            # Rejections are business events too (they lower the fill rate KPI).
            async with conn.transaction():
                await add_event(
                    conn,
                    "trading",
                    ev.ORDER_REJECTED,
                    {
                        "user_id": user_id,
                        "symbol": body.symbol,
                        "side": body.side,
                        "type": body.type,
                        "quantity": body.quantity,
                        "reason": exc.code,
                    },
                )
            wake_relay(request.app)
            raise ProblemError(422, exc.detail, title="Order rejected", slug=exc.code) from None
    if not created:
        return _json(row, 200, {"Idempotent-Replayed": "true"})
    wake_relay(request.app)
    return _json(row, 201)


@router.get("/orders/{order_id}", response_model=OrderOut)
async def get_order(order_id: OrderId, user_id: UserId, pool: Pool) -> JSONResponse:
    row = await pool.fetchrow(
        f"SELECT {_ORDER_COLUMNS} FROM trading.orders "  # noqa: S608 - constant columns
        "WHERE id = $1 AND user_id = $2",
        order_id,
        user_id,
    )
    if row is None:  # someone else's order is as invisible as a missing one
        raise ProblemError(404, f"order {order_id} not found", slug="order-not-found")
    return _json(row, 200)


@router.delete("/orders/{order_id}", response_model=OrderOut)
async def cancel_order(
    order_id: OrderId, user_id: UserId, pool: Pool, request: Request
) -> JSONResponse:
    """Cancel an open limit order and release its reservation (idempotent for cancelled)."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_account(conn, user_id)
        row = await conn.fetchrow(
            f"SELECT {_ORDER_COLUMNS} FROM trading.orders "  # noqa: S608 - constant columns
            "WHERE id = $1 AND user_id = $2 FOR UPDATE",
            order_id,
            user_id,
        )
        if row is None:
            raise ProblemError(404, f"order {order_id} not found", slug="order-not-found")
        if row["status"] == "cancelled":
            return _json(row, 200)
        if row["status"] != "open":
            raise ProblemError(
                409,
                f"order {order_id} is {row['status']}; only open orders can be cancelled",
                title="Order not cancellable",
                slug="order-not-cancellable",
            )
        if row["side"] == "buy":
            await _move(conn, user_id, row["symbol"], row["reserved"], Decimal(0))
        else:
            await _move(conn, user_id, row["symbol"], Decimal(0), row["quantity"])
        row = await conn.fetchrow(
            "UPDATE trading.orders SET status = 'cancelled', reserved = 0, updated_at = now() "  # noqa: S608 - constant SQL
            f"WHERE id = $1 RETURNING {_ORDER_COLUMNS}",  # noqa: S608 - constant columns
            order_id,
        )
        await add_event(conn, "trading", ev.ORDER_CANCELLED, _placed_payload(row))
    wake_relay(request.app)
    return _json(row, 200)


@router.get("/orders")
async def list_orders(
    user_id: UserId,
    pool: Pool,
    status: Literal["open", "filled", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> dict[str, list[OrderOut]]:
    """Newest first. The next page: `before` = the smallest id of this one (a keyset page, so
    orders placed meanwhile never shift or repeat what the next page holds)."""
    rows = await pool.fetch(
        f"SELECT {_ORDER_COLUMNS} FROM trading.orders "  # noqa: S608 - constant columns
        "WHERE user_id = $1 AND ($2::text IS NULL OR status = $2) "
        "AND ($4::bigint IS NULL OR id < $4) ORDER BY id DESC LIMIT $3",
        user_id,
        status,
        limit,
        before,
    )
    return {"orders": [_order(r) for r in rows]}


@router.get("/account")
async def account(user_id: UserId, pool: Pool) -> dict[str, Any]:
    """Available cash and quantities (reservations of open orders already deducted)."""
    cash = await pool.fetchval("SELECT cash FROM trading.accounts WHERE user_id = $1", user_id)
    reserved = await pool.fetchval(
        "SELECT coalesce(sum(reserved), 0) FROM trading.orders "
        "WHERE user_id = $1 AND status = 'open'",
        user_id,
    )
    rows = await pool.fetch(
        "SELECT symbol, quantity FROM trading.positions "
        "WHERE user_id = $1 AND quantity > 0 ORDER BY symbol",
        user_id,
    )
    return {
        "user_id": user_id,
        "cash_available": float(INITIAL_CASH if cash is None else cash),
        "cash_reserved": float(reserved),
        "positions": [{"symbol": r["symbol"], "quantity": float(r["quantity"])} for r in rows],
    }


# --- resting limit orders --------------------------------------------------------------------


async def _fill_resting(conn: asyncpg.Connection, row: asyncpg.Record, price: Decimal) -> None:
    fill = make_fill(row["side"], row["quantity"], price)
    if fill.side == "buy":
        # The reservation covered a fill at the limit; return what this better price saved.
        await _move(
            conn, row["user_id"], row["symbol"], row["reserved"] + fill.cash_delta, fill.quantity
        )
    else:  # quantity was taken when the order rested
        await _move(conn, row["user_id"], row["symbol"], fill.cash_delta, Decimal(0))
    filled = await conn.fetchrow(
        "UPDATE trading.orders SET status = 'filled', price = $2, notional = $3, fee = $4, "  # noqa: S608 - constant SQL
        "reserved = 0, filled_at = now(), updated_at = now() "
        f"WHERE id = $1 RETURNING {_ORDER_COLUMNS}",  # noqa: S608 - constant columns
        row["id"],
        price,
        fill.notional,
        fill.fee,
    )
    await _executed(conn, filled, fill, None)


async def match_open_orders(pool: asyncpg.Pool, now: float | None = None) -> int:
    """Fill every open limit order the current price crosses; returns how many filled."""
    candidates = await pool.fetch(
        "SELECT id, user_id, symbol, side, limit_price FROM trading.orders "
        "WHERE status = 'open' ORDER BY id LIMIT 1000"
    )
    prices: dict[str, Decimal] = {}
    filled = 0
    for cand in candidates:
        symbol = cand["symbol"]
        if symbol not in prices:
            prices[symbol] = to_decimal(quote(symbol, now).price)
        if not is_marketable(cand["side"], cand["limit_price"], prices[symbol]):
            continue
        async with pool.acquire() as conn, conn.transaction():
            # Same lock order as execute/cancel (account, then order): no deadlocks.
            await _lock_account(conn, cand["user_id"])
            row = await conn.fetchrow(
                f"SELECT {_ORDER_COLUMNS} FROM trading.orders "  # noqa: S608 - constant columns
                "WHERE id = $1 AND status = 'open' FOR UPDATE",
                cand["id"],
            )
            if row is None:  # cancelled or filled by another instance meanwhile
                continue
            await _fill_resting(conn, row, prices[symbol])
            filled += 1
    return filled


async def _matcher(app: FastAPI) -> None:
    while True:
        await asyncio.sleep(MATCH_INTERVAL_S)
        try:
            if await match_open_orders(app.state.pool):
                wake_relay(app)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("limit-order matcher pass failed")


def configure(app: FastAPI) -> None:
    # The keys the linked venue keys are encrypted with (re-read when a rotation replaces them).
    app.state.data_keys = DataKeys(path=app.state.settings.data_keys_file)
    venue_links.configure(app)
    venue_orders.configure(app)


async def start(app: FastAPI) -> None:
    start_relay(app, "trading")
    app.state.matcher = asyncio.create_task(_matcher(app), name="limit-matcher")
    await venue_orders.start(app)


async def stop(app: FastAPI) -> None:
    app.state.matcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await app.state.matcher
    await venue_orders.stop(app)
    await venue_links.stop(app)
    await stop_all(app)
