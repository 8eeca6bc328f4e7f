"""trading: orders sent to a venue (Binance.US, Coinbase, OANDA) with the user's linked key, in an
environment whose mode is sandbox or live. The paper exchange (gekko.services.trading) is
untouched by them: a venue order's cash moves at the venue, and each rise of its fills goes to
the portfolio as a venue_order.filled event (portfolio.venue_positions).

An order is never sent twice:
- it is recorded (`pending`) with a fresh client order id before anything is sent, and the venue
  keeps that id with the order;
- the adapter settles a lost answer by looking the order up by that id (gekko.exchanges);
- an order whose answer is still unknown is kept `unknown` (answered 202) and looked up again,
  never sent again: when it is read, and by a background pass over unsettled orders; one the
  venue still does not know of `NOT_FOUND_AFTER_S` after it became unknown never reached it, and
  is `rejected`;
- the trader is answered within `ANSWER_WITHIN_S`, under the gateway's upstream timeout: a
  placement still under way then (a slow venue, a request budget to wait for) goes on in the
  background and the answer is 202 `pending`, so a client never sees a timeout that would
  tempt it to send the order again;
- a status only moves forward (pending, unknown, open, then filled, cancelled or rejected): a
  late answer never undoes a later one.
An Idempotency-Key makes a retried POST return the first order (200) instead of a second.

A venue that keeps failing is degraded (gekko.exchanges.health): orders to it are refused with
503 and Retry-After, one goes through as a probe after each cool-off, and the background pass
probes it too. Answers about a venue's failure carry FAULT_ELSEWHERE_HEADER, so the gateway
does not hold them against the trading instance (nor retry them on another).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gekko import events as ev
from gekko.config import VENUE_NAMES
from gekko.domain.venue_fills import added_fill, fees_from_json, fees_to_json
from gekko.exchanges.base import ExchangeError, ExchangeOrder, Mode, OrderRequest, OrderStatus
from gekko.exchanges.desk import SymbolError, VenueDesk, check_order_rules
from gekko.exchanges.health import VenueHealth
from gekko.exchanges.throttle import ThrottledExchange
from gekko.exchanges.venues import VENUES, VenueSettingsError
from gekko.outbox import add_event
from gekko.problems import ProblemError
from gekko.security.rbac import SIGNED_IN, TRADE, AccessTable
from gekko.services.deps import IdempotencyKey, Pool, UserId, idempotency_key_reused, venue_mode
from gekko.services.venue_access import (
    ANSWER_WITHIN_S,
    desk_of,
    exchange_of_key,
    too_slow,
    usable_key,
    venue_problem,
)

PREFIX = "/api/v1/trading/venue-orders"
router = APIRouter(prefix=PREFIX, tags=["trading"])
ACCESS: AccessTable = {
    ("POST", PREFIX): TRADE,
    ("GET", PREFIX): SIGNED_IN,
    ("GET", PREFIX + "/{order_id}"): SIGNED_IN,
    ("DELETE", PREFIX + "/{order_id}"): TRADE,
}
log = logging.getLogger("gekko.trading.venues")

# An order the venue still does not know of this long after its answer was lost never reached
# it: past Coinbase's 2-minute token and Binance's recvWindow, a late request is refused.
NOT_FOUND_AFTER_S = 130.0
# A placement takes this long at most (waiting for request budget included); a pending order
# older than PENDING_GIVE_UP_S was left by an instance that stopped before the venue answered.
PLACE_WITHIN_S = 120.0
PENDING_GIVE_UP_S = 600.0
# Open orders (and done ones whose fills the venue has not told in full) are refreshed from the
# venue this many reconcile intervals apart; the latter for a day at most (a venue that never
# tells, a key removed since): a read still asks.
OPEN_REFRESH_INTERVALS = 6
FILLS_PENDING_GIVE_UP_S = 86400.0
UNSETTLED = ("pending", "unknown")
# What a status may follow: a late answer never undoes a later one.
_AFTER = {
    "unknown": ("pending",),
    "open": ("pending", "unknown", "open"),
    "filled": ("pending", "unknown", "open"),
    "cancelled": ("pending", "unknown", "open"),
    "rejected": ("pending", "unknown", "open"),
}
_COLUMNS = (
    "id, user_id, venue, mode, key_id, client_order_id, symbol, venue_symbol, side, type, "
    "quantity, limit_price, status, filled_quantity, price, venue_order_id, reason, "
    "unsure_since, idempotency_key, created_at, updated_at, filled_value, fees, base_asset, "
    "quote_asset, fills_pending"
)
# The venue's word for an order, in the platform's.
_STATUS = {
    OrderStatus.NEW: "open",
    OrderStatus.PARTIALLY_FILLED: "open",
    OrderStatus.FILLED: "filled",
    OrderStatus.CANCELED: "cancelled",
    OrderStatus.EXPIRED: "cancelled",
    OrderStatus.REJECTED: "rejected",
}
OrderId = Annotated[int, Path(ge=1, le=2**63 - 1, description="venue order id (the platform's)")]


class VenueOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    venue: Literal[VENUE_NAMES]  # type: ignore[valid-type]
    symbol: str = Field(
        min_length=3,
        max_length=32,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="BASE-QUOTE (BTC-USD, EUR-USD), or the venue's own name (BTCUSD, EUR_USD)",
    )
    side: Literal["buy", "sell"]
    type: Literal["market", "limit"] = "market"
    # numeric(28, 10): 18 digits before the point.
    quantity: Decimal = Field(gt=0, lt=Decimal("1e18"), max_digits=28, decimal_places=10)
    limit_price: Decimal | None = Field(
        default=None, gt=0, lt=Decimal("1e18"), max_digits=28, decimal_places=10
    )

    @model_validator(mode="after")
    def _limit_price_iff_limit(self) -> VenueOrderIn:
        if (self.type == "limit") != (self.limit_price is not None):
            raise ValueError("limit_price is required for limit orders, and only for them")
        return self


class VenueOrderOut(BaseModel):
    id: int
    venue: str
    mode: str
    symbol: str
    venue_symbol: str
    side: str
    type: str
    quantity: float
    limit_price: float | None
    status: str = Field(description="pending, unknown, open, filled, cancelled or rejected")
    filled_quantity: float
    price: float | None = Field(description="the limit price, as the venue reports it")
    average_price: float | None = Field(
        description="the fills' volume-weighted price, as the venue reports them"
    )
    filled_value: float = Field(description="what the fills were worth, in the quote asset")
    fees: dict[str, float] = Field(description="the venue's fees on the fills, by asset")
    fills_pending: bool = Field(
        description="the venue has not told every fill's detail yet: it is asked again (by the "
        "background pass for a day, and on every read)"
    )
    client_order_id: str
    venue_order_id: str | None
    reason: str | None = Field(description="why the order was rejected, or is unknown")
    created_at: datetime
    updated_at: datetime


def _out(row: asyncpg.Record) -> VenueOrderOut:
    filled, value = row["filled_quantity"], row["filled_value"] or Decimal(0)
    fields = {
        name: row[name]
        for name in VenueOrderOut.model_fields
        if name not in ("average_price", "fees", "filled_value")
    }
    return VenueOrderOut(
        **fields,
        average_price=value / filled if filled > 0 and value > 0 else None,
        filled_value=value,
        fees=fees_from_json(row["fees"]),
    )


def _json(row: asyncpg.Record, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(_out(row).model_dump(mode="json"), status_code=status, headers=headers)


def _mode(request: Request) -> Mode:
    return venue_mode(request, "place orders with POST /api/v1/trading/execute")


def _same_request(row: asyncpg.Record, body: VenueOrderIn) -> bool:
    return (row["venue"], row["side"], row["type"], row["quantity"], row["limit_price"]) == (
        body.venue,
        body.side,
        body.type,
        body.quantity,
        body.limit_price,
    ) and row["symbol"] == body.symbol.upper()


async def _select(pool: asyncpg.Pool, where: str, *args: Any) -> asyncpg.Record | None:
    """The order matching `where` (a constant condition of this module), or None."""
    return await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM trading.venue_orders WHERE {where}",  # noqa: S608 - constants
        *args,
    )


_BY_KEY = "user_id = $1 AND idempotency_key = $2"


async def _record(
    pool: asyncpg.Pool, row_id: int, status: str, fills: ExchangeOrder | None = None, **changes: Any
) -> asyncpg.Record:
    """Move the order to `status` if it may follow the current one, and take the venue's `fills`
    if more has filled than was recorded; the row as it stands."""
    changes["status"] = status
    if status == "unknown":
        changes["unsure_since"] = datetime.now(UTC)
    names = list(changes)
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=3))
    async with pool.acquire() as conn, conn.transaction():
        if fills is not None:
            await _take_fills(conn, row_id, fills)
        row = await conn.fetchrow(
            f"UPDATE trading.venue_orders SET {sets}, updated_at = now() "  # noqa: S608 - ours
            f"WHERE id = $1 AND status = ANY($2::text[]) RETURNING {_COLUMNS}",
            row_id,
            list(_AFTER[status]),
            *(changes[name] for name in names),
        )
    return row if row is not None else await _select(pool, "id = $1", row_id)


async def _take_fills(conn: asyncpg.Connection, row_id: int, reported: ExchangeOrder) -> None:
    """Record the venue's fill totals where they add to the recorded ones, and what they added
    as a venue_order.filled event, in the same transaction (the portfolio books each once); a
    stale answer (less filled than recorded) changes nothing. An order whose fills the venue has
    not yet told in full (or told without their value) is marked fills_pending: the reconciler
    asks for it again, even once it is done."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM trading.venue_orders WHERE id = $1 FOR UPDATE",  # noqa: S608
        row_id,
    )
    recorded = row["filled_quantity"] if row["filled_value"] is not None else Decimal(0)
    if reported.filled_quantity < recorded:
        return
    recorded_fees = fees_from_json(row["fees"])
    added = added_fill(row["filled_quantity"], row["filled_value"], recorded_fees, reported)
    pending = not reported.fills_complete or (added is None and reported.filled_quantity > recorded)
    await conn.execute(
        "UPDATE trading.venue_orders SET fills_pending = $2, fills_pending_since = CASE "
        "WHEN NOT $2 THEN NULL ELSE coalesce(fills_pending_since, now()) END WHERE id = $1",
        row_id,
        pending,
    )
    if added is None:
        return
    quantity, value, fees = added
    # Totals only rise: an answer with less in one of them (a value or a fee left out) lowers
    # none, so what it left out is not counted again by the next answer.
    totals = recorded_fees if row["filled_value"] is not None else {}
    for asset, amount in reported.fees.items():
        totals[asset] = max(totals.get(asset, Decimal(0)), amount)
    await conn.execute(
        "UPDATE trading.venue_orders SET filled_quantity = greatest(filled_quantity, $2), "
        "filled_value = greatest(coalesce(filled_value, 0), $3), fees = $4::jsonb WHERE id = $1",
        row_id,
        reported.filled_quantity,
        reported.filled_value,
        fees_to_json(totals),
    )
    await add_event(
        conn,
        "trading",
        ev.VENUE_ORDER_FILLED,
        {
            "order_id": row_id,
            "user_id": row["user_id"],
            "venue": row["venue"],
            "mode": row["mode"],
            "symbol": row["venue_symbol"],
            "base_asset": row["base_asset"],
            "quote_asset": row["quote_asset"],
            "side": row["side"],
            "quantity": format(quantity, "f"),
            "value": format(value, "f"),
            "fees": {a: format(v, "f") for a, v in fees.items()},
            "fees_in_kind": reported.fees_in_kind,
            "filled_quantity": format(reported.filled_quantity, "f"),
        },
    )


async def _touch(pool: asyncpg.Pool, row_id: int) -> None:
    """Looked at, not settled: to the back of the reconciler's queue."""
    await pool.execute("UPDATE trading.venue_orders SET updated_at = now() WHERE id = $1", row_id)


def _as_reported(order: ExchangeOrder) -> dict[str, Any]:
    return {
        "status": _STATUS[order.status],
        "venue_order_id": order.venue_order_id,
        "price": order.price,
        "reason": None,
        "fills": order,
    }


Placed = tuple[asyncpg.Record, ExchangeError | None]


async def _place_and_record(
    app: FastAPI, row_id: int, exchange: ThrottledExchange, order: OrderRequest
) -> Placed:
    """Send the order and record the venue's answer, whoever is still waiting for it."""
    pool = app.state.pool
    try:
        async with asyncio.timeout(PLACE_WITHIN_S):
            placed = await desk_of(app).call(exchange, lambda: exchange.place_order(order))
    except ExchangeError as exc:
        if exc.unsure:
            log.warning("venue order %s: answer lost, to be looked up: %s", row_id, exc)
            return await _record(pool, row_id, "unknown", reason=str(exc)), exc
        if exc.retry_after_s is not None or exc.not_sent:
            # Not sent (no budget, no host reached), or refused before it was taken (429): the
            # trader is told to retry, so a retry with the same Idempotency-Key places it, not
            # replays this.
            row = await _record(pool, row_id, "rejected", reason=str(exc), idempotency_key=None)
            return row, exc
        return await _record(pool, row_id, "rejected", reason=str(exc)), exc
    except Exception as exc:  # a timeout or a bug while the request may have been sent
        log.exception("venue order %s: placement cut short; to be looked up", row_id)
        lost = ExchangeError(
            exchange.venue, f"placement cut short ({type(exc).__name__})", unsure=True
        )
        return await _record(pool, row_id, "unknown", reason=lost.message), lost
    row = await _record(pool, row_id, **_as_reported(placed))
    log.info("venue order %s on %s: %s", row_id, exchange.venue, row["status"])
    return row, None


@router.post("", status_code=201, response_model=VenueOrderOut)
async def place(
    body: VenueOrderIn,
    user_id: UserId,
    pool: Pool,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Send an order to a venue with your linked key. 201: the venue's answer (open or filled);
    202: `pending` (still being sent) or `unknown` (its answer was lost), settled in the
    background: GET it. Never sent twice."""
    app = request.app
    started = time.monotonic()
    mode = _mode(request)
    if idempotency_key is not None:
        first = await _select(pool, _BY_KEY, user_id, idempotency_key)
        if first is not None:
            return _replayed(first, body)
    desk = desk_of(app)
    venue = VENUES[body.venue]
    key_id = await usable_key(app, user_id, venue, mode, "orders to it are refused")
    what = f"the {venue.title} order"
    try:
        exchange = await exchange_of_key(app, key_id)
        async with asyncio.timeout(ANSWER_WITHIN_S):
            rules = await desk.symbol(exchange, key_id, body.symbol)
        check_order_rules(rules, body.quantity, body.limit_price)
    except SymbolError as exc:
        raise ProblemError(422, str(exc), slug="venue-symbol") from None
    except TimeoutError:
        raise too_slow(venue, what, "nothing was sent") from None
    except (ExchangeError, VenueSettingsError) as exc:
        raise venue_problem(exc, what) from None
    order = OrderRequest(
        client_order_id="gk" + uuid.uuid4().hex,
        symbol=rules.symbol,
        side=body.side,
        type=body.type,
        quantity=body.quantity,
        price=body.limit_price,
    )
    async with pool.acquire() as conn, conn.transaction():
        # The key's row, shared-locked: its removal (which takes it exclusively and counts the
        # open orders) is either done, and refuses this order, or waits for it.
        if not await conn.fetchval(
            "SELECT true FROM trading.venue_keys WHERE id = $1 AND removed_at IS NULL FOR SHARE",
            key_id,
        ):
            raise ProblemError(409, "your venue key was removed meanwhile", slug="no-venue-key")
        row = await conn.fetchrow(
            f"""
            INSERT INTO trading.venue_orders (user_id, venue, mode, key_id, client_order_id,
                symbol, venue_symbol, side, type, quantity, limit_price, status, idempotency_key,
                base_asset, quote_asset)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $13, $14)
            ON CONFLICT (user_id, idempotency_key) DO NOTHING
            RETURNING {_COLUMNS}
            """,  # noqa: S608 - constant columns
            user_id, venue.name, mode.value, key_id, order.client_order_id,
            body.symbol.upper(), rules.symbol, body.side, body.type, body.quantity,
            body.limit_price, idempotency_key, rules.base_asset, rules.quote_asset,
        )  # fmt: skip
    if row is None:  # the same key's first request got here first
        return _replayed(await _select(pool, _BY_KEY, user_id, idempotency_key), body)
    # The placement is not tied to this request: a trader who gives up, or a slow venue, never
    # leaves an order half sent. Kept referenced until done (and waited for on shutdown).
    placing = asyncio.ensure_future(_place_and_record(app, row["id"], exchange, order))
    app.state.venue_placements.add(placing)
    placing.add_done_callback(_placement_done(app))
    location = {"Location": f"{PREFIX}/{row['id']}"}
    remaining = max(0.1, ANSWER_WITHIN_S - (time.monotonic() - started))
    done, _ = await asyncio.wait({placing}, timeout=remaining)
    if not done:
        return _json(row, 202, location)
    row, error = placing.result()
    if error is None:
        return _json(row, 201, location)
    if error.unsure:
        return _json(row, 202, location)
    problem = venue_problem(error, what)
    problem.extra["order_id"] = row["id"]
    raise problem


def _placement_done(app: FastAPI) -> Callable[[asyncio.Future[Placed]], None]:
    def done(placing: asyncio.Future[Placed]) -> None:
        app.state.venue_placements.discard(placing)
        if not placing.cancelled() and (error := placing.exception()) is not None:
            # Only recording can fail here (the venue's answer is handled): the row stays
            # pending and is looked up.
            log.error("venue order placement not recorded: %r", error)

    return done


def _replayed(first: asyncpg.Record, body: VenueOrderIn) -> JSONResponse:
    if not _same_request(first, body):
        raise idempotency_key_reused()
    return _json(first, 200, {"Idempotent-Replayed": "true"})


def _never_reached(row: asyncpg.Record) -> bool:
    """An order the venue does not know of that can no longer reach it."""
    now = datetime.now(UTC)
    if row["status"] == "unknown":
        return (now - row["unsure_since"]).total_seconds() > NOT_FOUND_AFTER_S
    if row["status"] == "pending":
        return (now - row["created_at"]).total_seconds() > PENDING_GIVE_UP_S
    return False


async def settle(app: FastAPI, row: asyncpg.Record) -> asyncpg.Record:
    """Ask the venue for an order by its client order id and record what it says."""
    pool = app.state.pool
    exchange = await exchange_of_key(app, row["key_id"])
    found = await desk_of(app).call(
        exchange, lambda: exchange.get_order(row["venue_symbol"], row["client_order_id"])
    )
    if found is not None:
        return await _record(pool, row["id"], **_as_reported(found))
    if _never_reached(row):
        reason = "the venue has no order with this client order id: it never reached it"
        return await _record(pool, row["id"], "rejected", reason=reason)
    return row


async def _own(pool: asyncpg.Pool, order_id: int, user_id: int) -> asyncpg.Record:
    row = await _select(pool, "id = $1 AND user_id = $2", order_id, user_id)
    if row is None:  # someone else's order is as invisible as a missing one
        raise ProblemError(404, f"venue order {order_id} not found", slug="order-not-found")
    return row


@router.get("/{order_id}", response_model=VenueOrderOut)
async def get_order(
    order_id: OrderId, user_id: UserId, pool: Pool, request: Request
) -> JSONResponse:
    """The order as the venue reports it now (open, unknown and pending orders are looked up, and
    so are done ones whose fills the venue has not told in full); as last recorded if the venue
    cannot be asked in time."""
    row = await _own(pool, order_id, user_id)
    if row["status"] in (*UNSETTLED, "open") or row["fills_pending"]:
        try:
            async with asyncio.timeout(ANSWER_WITHIN_S):
                row = await settle(request.app, row)
        except (ExchangeError, ProblemError, VenueSettingsError, TimeoutError) as exc:
            log.info("venue order %s: could not look it up now: %r", order_id, exc)
    return _json(row, 200)


@router.delete("/{order_id}", response_model=VenueOrderOut)
async def cancel_order(
    order_id: OrderId, user_id: UserId, pool: Pool, request: Request
) -> JSONResponse:
    """Cancel an open order at the venue (idempotent once cancelled)."""
    app = request.app
    row = await _own(pool, order_id, user_id)
    if row["status"] == "open":
        what = f"cancelling venue order {order_id}"
        try:
            async with asyncio.timeout(ANSWER_WITHIN_S):  # one deadline, under the gateway's
                row = await _cancel(app, row)
        except TimeoutError:
            outcome = "the cancel may have reached it: read the order, or cancel it again"
            raise too_slow(VENUES[row["venue"]], what, outcome) from None
        except ExchangeError as exc:
            raise venue_problem(exc, what) from None
    if row["status"] == "cancelled":
        return _json(row, 200)
    raise ProblemError(
        409,
        f"venue order {order_id} is {row['status']}; only open orders can be cancelled",
        title="Order not cancellable",
        slug="order-not-cancellable",
    )


async def _cancel(app: FastAPI, row: asyncpg.Record) -> asyncpg.Record:
    exchange = await exchange_of_key(app, row["key_id"])
    try:
        cancelled = await desk_of(app).call(
            exchange, lambda: exchange.cancel_order(row["venue_symbol"], row["client_order_id"])
        )
    except ExchangeError as exc:
        if exc.venue_failed:
            raise
        # Refused: most often the order filled or ended meanwhile; see what it is now.
        with contextlib.suppress(ExchangeError):
            row = await settle(app, row)
        if row["status"] == "open":
            raise
        return row
    return await _record(app.state.pool, row["id"], **_as_reported(cancelled))


@router.get("")
async def list_orders(
    user_id: UserId,
    pool: Pool,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> dict[str, list[VenueOrderOut]]:
    """Newest first, as last recorded; `before` = the smallest id of a page gives the next."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM trading.venue_orders "  # noqa: S608 - constant columns
        "WHERE user_id = $1 AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $2",
        user_id,
        limit,
        before,
    )
    return {"orders": [_out(r) for r in rows]}


async def reconcile_once(app: FastAPI, interval_s: float) -> int:
    """Look up the orders left pending or unknown, and refresh the open ones and the done ones
    whose fills are pending (for a day), least recently looked at first, skipping degraded
    venues (probed instead); returns how many settled."""
    desk = desk_of(app)
    await desk.probe_degraded()
    rows = await app.state.pool.fetch(
        f"SELECT {_COLUMNS} FROM trading.venue_orders "  # noqa: S608 - constant columns
        "WHERE ((status IN ('pending', 'unknown') AND updated_at < now() - $1 * interval '1 s')"
        "   OR ((status = 'open' OR (fills_pending AND fills_pending_since > now() - $4 "
        "        * interval '1 s')) AND updated_at < now() - $2 * interval '1 s'))"
        "  AND venue <> ALL($3::text[]) "
        "ORDER BY updated_at LIMIT 100",
        interval_s,
        interval_s * OPEN_REFRESH_INTERVALS,
        desk.health.degraded(),
        FILLS_PENDING_GIVE_UP_S,
    )
    settled = 0
    for row in rows:
        try:
            after = await settle(app, row)
        except Exception as exc:  # one order's trouble (a removed key, a venue error) is its own
            log.info("venue order %s: not settled this pass: %r", row["id"], exc)
            after = row
        if after["status"] == row["status"]:
            await _touch(app.state.pool, row["id"])
        settled += row["status"] in UNSETTLED and after["status"] not in UNSETTLED
    return settled


async def _reconciler(app: FastAPI) -> None:
    interval_s = app.state.settings.venue_reconcile_interval_s
    while True:
        await asyncio.sleep(interval_s)
        try:
            await reconcile_once(app, interval_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("venue order reconciliation pass failed")


def configure(app: FastAPI) -> None:
    health = VenueHealth(app.state.metrics_registry)
    mode = Mode(app.state.settings.exchange_mode)
    if mode is not Mode.PAPER:
        for name in VENUES:
            health.watch(name)
    app.state.venue_desk = VenueDesk(mode, app.state.settings.venue_base_urls, health)
    app.state.venue_placements = set()


async def start(app: FastAPI) -> None:
    app.state.venue_reconciler = None
    if desk_of(app).mode is not Mode.PAPER:
        app.state.venue_reconciler = asyncio.create_task(_reconciler(app), name="venue-reconciler")


async def stop(app: FastAPI) -> None:
    task = app.state.venue_reconciler
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Placements under way get a moment to finish and be recorded; what is left is cut short
    # before the adapters close (it stays pending, looked up by the next instance).
    placements = set(app.state.venue_placements)
    if placements:
        _, left = await asyncio.wait(placements, timeout=ANSWER_WITHIN_S * 3)
        for placing in left:
            placing.cancel()
        await asyncio.gather(*left, return_exceptions=True)
    await desk_of(app).close()
