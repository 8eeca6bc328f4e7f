"""Paper-exchange arithmetic: fills, fees, limit marketability, balance and position checks.

Pure Decimal functions shared by trading (which enforces them) and portfolio (which replays
fills from events), so both sides agree to the last unit. Money is quantized to 1e-8 USD,
quantities to 1e-10; a local context with 50 digits keeps products exact before rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Literal

Side = Literal["buy", "sell"]

MONEY_QUANTUM = Decimal("0.00000001")
QUANTITY_QUANTUM = Decimal("0.0000000001")
FEE_BPS = Decimal(10)  # taker fee: 10 basis points of notional
INITIAL_CASH = Decimal("100000")  # every account starts with this much paper USD
MAX_QUANTITY = Decimal("1000000000")

_CONTEXT = Context(prec=50)


class OrderRejectedError(Exception):
    """A well-formed order the account cannot support (maps to a 422 problem)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Fill:
    side: Side
    quantity: Decimal
    price: Decimal
    notional: Decimal
    fee: Decimal

    @property
    def cash_delta(self) -> Decimal:
        """Signed change of cash: a buy pays notional + fee, a sell receives notional - fee."""
        if self.side == "buy":
            return -(self.notional + self.fee)
        return self.notional - self.fee

    @property
    def position_delta(self) -> Decimal:
        return self.quantity if self.side == "buy" else -self.quantity


def money(value: Decimal) -> Decimal:
    return value.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN, context=_CONTEXT)


def fee_for(notional: Decimal) -> Decimal:
    # Half-up, so a fee of exactly half a unit is charged rather than waived.
    with localcontext(_CONTEXT):
        raw = notional * FEE_BPS / Decimal(10_000)
    return raw.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP, context=_CONTEXT)


def make_fill(side: Side, quantity: Decimal, price: Decimal) -> Fill:
    with localcontext(_CONTEXT):
        notional = money(quantity * price)
    return Fill(side=side, quantity=quantity, price=price, notional=notional, fee=fee_for(notional))


def is_marketable(side: Side, limit_price: Decimal, market_price: Decimal) -> bool:
    """A buy limit crosses when the market is at or below it; a sell limit at or above."""
    return market_price <= limit_price if side == "buy" else market_price >= limit_price


def buy_reservation(quantity: Decimal, limit_price: Decimal) -> Decimal:
    """Cash held for a resting buy: the worst case, a fill at the limit price plus its fee."""
    fill = make_fill("buy", quantity, limit_price)
    return fill.notional + fill.fee


def check_cash(cash: Decimal, needed: Decimal) -> None:
    if needed > cash:
        raise OrderRejectedError(
            "insufficient-funds",
            f"insufficient funds: the order needs {needed:f} USD including fees, "
            f"available cash is {cash:f} USD",
        )


def check_position(symbol: str, held: Decimal, quantity: Decimal) -> None:
    if quantity > held:
        raise OrderRejectedError(
            "insufficient-position",
            f"insufficient position: cannot sell {quantity:f} {symbol}, "
            f"available quantity is {held:f}",
        )


def check_order(side: Side, symbol: str, fill: Fill, cash: Decimal, held: Decimal) -> None:
    """Raise OrderRejectedError unless the account can take this immediate fill."""
    if side == "buy":
        check_cash(cash, fill.notional + fill.fee)
    else:
        check_position(symbol, held, fill.quantity)


def to_decimal(value: float | str | Decimal) -> Decimal:
    """Prices come from the float price function; go through str so 190.12 stays 190.12."""
    return value if isinstance(value, Decimal) else Decimal(str(value))
