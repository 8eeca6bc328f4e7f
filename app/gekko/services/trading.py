"""trading: market orders filled at the shared deterministic price, stored in PostgreSQL.

An Idempotency-Key makes a retried POST safe: the (user_id, idempotency_key) unique constraint
guarantees one row, and a replay returns the original order with 200 instead of 201.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from gekko.domain.prices import UnknownSymbolError, normalize_symbol, quote
from gekko.problems import ProblemError
from gekko.services.deps import Pool, UserId

router = APIRouter(prefix="/api/v1/trading", tags=["trading"])

_ORDER_COLUMNS = "id, user_id, symbol, side, type, quantity, price, status, created_at"


class ExecuteRequest(BaseModel):
    symbol: str = Field(min_length=1, max_length=16)
    side: Literal["buy", "sell"]
    quantity: Decimal = Field(gt=0, max_digits=28, decimal_places=10)
    type: Literal["market"] = "market"

    @field_validator("symbol")
    @classmethod
    def _known_symbol(cls, value: str) -> str:
        try:
            return normalize_symbol(value)
        except UnknownSymbolError as exc:
            raise ValueError(str(exc)) from None


class OrderOut(BaseModel):
    id: int
    user_id: int
    symbol: str
    side: str
    type: str
    quantity: float
    price: float
    status: str
    created_at: datetime


def _order(row: object) -> OrderOut:
    return OrderOut(**dict(row))  # type: ignore[call-overload]


IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
]


@router.post("/execute", status_code=201, response_model=OrderOut)
async def execute(
    body: ExecuteRequest,
    user_id: UserId,
    pool: Pool,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    fill = quote(body.symbol)
    row = await pool.fetchrow(
        f"""
        INSERT INTO trading.orders
            (user_id, symbol, side, type, quantity, price, status, idempotency_key)
        VALUES ($1, $2, $3, $4, $5, $6, 'filled', $7)
        ON CONFLICT (user_id, idempotency_key) DO NOTHING
        RETURNING {_ORDER_COLUMNS}
        """,  # noqa: S608 - column list is a constant, values are bound parameters
        user_id,
        fill.symbol,
        body.side,
        body.type,
        body.quantity,
        Decimal(str(fill.price)),
        idempotency_key,
    )
    if row is not None:
        return JSONResponse(_order(row).model_dump(mode="json"), status_code=201)

    # Conflict: this user already used the key. Replay the original if it is the same request.
    original = await pool.fetchrow(
        f"SELECT {_ORDER_COLUMNS} FROM trading.orders "  # noqa: S608 - constant columns
        "WHERE user_id = $1 AND idempotency_key = $2",
        user_id,
        idempotency_key,
    )
    if original is None:  # pragma: no cover - the conflicting row cannot vanish (no deletes)
        raise ProblemError(409, "idempotency conflict; retry the request", slug="idempotency")
    same = (
        original["symbol"] == fill.symbol
        and original["side"] == body.side
        and original["type"] == body.type
        and original["quantity"] == body.quantity
    )
    if not same:
        raise ProblemError(
            422,
            "Idempotency-Key was already used for a different order",
            title="Idempotency key reused",
            slug="idempotency-key-reused",
        )
    return JSONResponse(
        _order(original).model_dump(mode="json"),
        status_code=200,
        headers={"Idempotent-Replayed": "true"},
    )


@router.get("/orders")
async def list_orders(
    user_id: UserId,
    pool: Pool,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, list[OrderOut]]:
    rows = await pool.fetch(
        f"SELECT {_ORDER_COLUMNS} FROM trading.orders "  # noqa: S608 - constant columns
        "WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
        user_id,
        limit,
    )
    return {"orders": [_order(r) for r in rows]}
