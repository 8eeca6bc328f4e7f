"""A venue's fill, as the portfolio books it: the venue's quantity, value and fees by asset
turned into the quantity that moved and a fee in the quote asset, then applied to a position
that may be long or short.

Venues charge fees in different assets. Coinbase charges the quote currency; OANDA the account's
home currency, from the balance; Binance.US the asset received (the base asset on a buy, the
quote asset on a sell) unless BNB pays them, taken from what the fill moved ("in kind"). A fee
in the quote asset adds to the fill's cost (or comes off its proceeds). One in the base asset
taken in kind changes the quantity that moved (a buy receives less, a sell gives up more); one
in the base asset taken from the balance is valued at the fill's price. Any other asset cannot
be valued here and is kept as charged.

Positions at a venue may go short (OANDA units, or coins held before the platform's first
order): the average-cost method on a signed quantity. Cost basis is what was paid for a long
position and minus what was received for a short one; a fill against the position releases cost
pro rata and realizes P&L, and what is left of it opens the other side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
from typing import Protocol

import orjson

from gekko.domain.exchange import Side

log = logging.getLogger("gekko.domain.venue_fills")

_CONTEXT = Context(prec=50)
ZERO = Decimal(0)
# Released cost is kept to this many places: venues quote in assets with up to 18 (ETH).
_PLACES = Decimal(1).scaleb(-18)


@dataclass(frozen=True)
class VenueFill:
    side: Side
    quantity: Decimal  # what moved in the position (fees taken in kind included)
    price: Decimal  # the fill's price (value / quantity the venue filled)
    cash: Decimal  # the cash it moved, in the quote asset: -(value + fee) on a buy, value - fee
    fee_value: Decimal  # every fee that could be valued, in the quote asset
    other_fees: Mapping[str, Decimal] = field(default_factory=dict)


def book(
    side: Side,
    quantity: Decimal,
    value: Decimal,
    fees: Mapping[str, Decimal],
    base_asset: str | None,
    quote_asset: str | None,
    *,
    fees_in_kind: bool = False,
) -> VenueFill:
    """The fill of `quantity` worth `value` (quote asset) with `fees` charged, by asset."""
    if quantity <= 0 or value <= 0:
        raise ValueError("a fill has a positive quantity and value")
    with localcontext(_CONTEXT):
        price = value / quantity
        base_fee = fees.get(base_asset, ZERO) if base_asset else ZERO
        quote_fee = fees.get(quote_asset, ZERO) if quote_asset else ZERO
        if fees_in_kind:
            moved = quantity - base_fee if side == "buy" else quantity + base_fee
            fee_value = quote_fee + base_fee * price
        else:
            moved = quantity
            quote_fee += base_fee * price  # paid from the balance: a cost like the quote's
            fee_value = quote_fee
        if moved <= 0:
            raise ValueError(f"a fee of {base_fee} {base_asset} takes all of a {quantity} fill")
        cash = -(value + quote_fee) if side == "buy" else value - quote_fee
        other = {a: v for a, v in fees.items() if a not in (base_asset, quote_asset) and v}
        return VenueFill(side, moved, price, cash, fee_value, other)


@dataclass(frozen=True)
class Position:
    quantity: Decimal = ZERO  # negative: short
    cost_basis: Decimal = ZERO  # paid for a long position, minus what a short one received
    realized_pnl: Decimal = ZERO

    @property
    def average_price(self) -> Decimal | None:
        if not self.quantity:
            return None
        with localcontext(_CONTEXT):
            return self.cost_basis / self.quantity


def apply(position: Position, fill: VenueFill) -> tuple[Position, Decimal]:
    """The position after the fill, and the P&L the fill realized."""
    with localcontext(_CONTEXT):
        signed = fill.quantity if fill.side == "buy" else -fill.quantity
        held = position.quantity
        if not held or (held > 0) == (signed > 0):  # opens or adds: its cash is its cost
            return Position(
                held + signed, position.cost_basis - fill.cash, position.realized_pnl
            ), ZERO
        closing = min(abs(signed), abs(held))
        # Whole amounts where the whole is taken: a closed position keeps no rounding residue.
        released = position.cost_basis
        if closing < abs(held):
            released = (position.cost_basis * closing / abs(held)).quantize(_PLACES)
        closing_cash = fill.cash
        if closing < abs(signed):
            closing_cash = (fill.cash * closing / abs(signed)).quantize(_PLACES)
        realized = closing_cash - released
        left = held + signed
        cost = position.cost_basis - released
        if abs(signed) > abs(held):  # the rest of the fill opens the other side
            cost = -(fill.cash - closing_cash)
        return Position(left, cost, position.realized_pnl + realized), realized


def late_fees(
    fees: Mapping[str, Decimal],
    base_asset: str | None,
    quote_asset: str | None,
    price: Decimal | None,
) -> tuple[Decimal, dict[str, Decimal]]:
    """Fees a venue settled after the fill they belong to: their value in the quote asset (one
    in the base asset at `price`, the last fill's), and those in any other asset as charged."""
    with localcontext(_CONTEXT):
        valued = fees.get(quote_asset, ZERO) if quote_asset else ZERO
        other: dict[str, Decimal] = {}
        for asset, amount in fees.items():
            if asset == quote_asset:
                continue
            if asset == base_asset and price is not None:
                valued += amount * price
            else:
                other[asset] = amount
        return valued, other


class FillTotals(Protocol):
    """An order's fills as a venue last stated them (gekko.exchanges.base.ExchangeOrder)."""

    filled_quantity: Decimal
    filled_value: Decimal
    fees: Mapping[str, Decimal]


Added = tuple[Decimal, Decimal, dict[str, Decimal]]


def added_fill(
    filled: Decimal, value: Decimal | None, fees: dict[str, Decimal], reported: FillTotals
) -> Added | None:
    """What the venue's totals add to the recorded ones (quantity, value, fees by asset), or
    None when they add nothing: a stale answer, or a quantity without its value. Fees that rose
    alone (a fee the venue settled later) are added with no quantity. An order recorded before
    fills had values (`value` None) counts as nothing recorded: all of it is added."""
    if value is None:
        filled, value, fees = ZERO, ZERO, {}
    quantity = reported.filled_quantity - filled
    added_value = reported.filled_value - value
    added_fees = {a: v - fees.get(a, ZERO) for a, v in reported.fees.items()}
    added_fees = {a: v for a, v in added_fees.items() if v > 0}
    if quantity < 0 or (quantity == 0 and not added_fees):
        return None
    if quantity > 0 and added_value <= 0:  # every adapter reports the value with the quantity
        log.warning("venue order: %s more filled at no stated price; not taken", quantity)
        return None
    return quantity, max(added_value, ZERO), added_fees


def fees_from_json(stored: str) -> dict[str, Decimal]:
    """Fees by asset as a jsonb column keeps them (asset -> decimal string)."""
    return {asset: Decimal(amount) for asset, amount in orjson.loads(stored).items()}


def fees_to_json(fees: Mapping[str, Decimal]) -> str:
    return orjson.dumps({asset: format(amount, "f") for asset, amount in fees.items()}).decode()
