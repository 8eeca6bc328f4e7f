"""A venue's fill, as the portfolio books it: the venue's quantity, value and fees by asset
turned into the quantity that moved and a fee in the quote asset.

Venues charge fees in different assets: Coinbase in the quote currency, Binance.US in the asset
received (the base asset on a buy, the quote asset on a sell) unless BNB pays them, OANDA in the
account's home currency. A fee in the quote asset adds to the fill's cost (or comes off its
proceeds); one in the base asset changes the quantity that moved (a buy receives less, a sell
gives up more) and is valued at the fill's price; one in any other asset cannot be valued here
and is kept as charged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext

from gekko.domain.exchange import Fill, Side

_CONTEXT = Context(prec=50)
ZERO = Decimal(0)


@dataclass(frozen=True)
class VenueFill:
    fill: Fill  # quantity: what moved in the holding; fee: in the quote asset
    fee_value: Decimal  # every fee that could be valued, in the quote asset
    other_fees: Mapping[str, Decimal] = field(default_factory=dict)


def book(
    side: Side,
    quantity: Decimal,
    value: Decimal,
    fees: Mapping[str, Decimal],
    base_asset: str | None,
    quote_asset: str | None,
) -> VenueFill:
    """The fill of `quantity` worth `value` (quote asset) with `fees` charged, by asset."""
    if quantity <= 0:
        raise ValueError("a fill has a positive quantity")
    with localcontext(_CONTEXT):
        price = value / quantity
        quote_fee = fees.get(quote_asset, ZERO) if quote_asset else ZERO
        base_fee = fees.get(base_asset, ZERO) if base_asset else ZERO
        moved = quantity - base_fee if side == "buy" else quantity + base_fee
        other = {a: v for a, v in fees.items() if a not in (base_asset, quote_asset) and v}
        return VenueFill(
            fill=Fill(side=side, quantity=moved, price=price, notional=value, fee=quote_fee),
            fee_value=quote_fee + base_fee * price,
            other_fees=other,
        )
