"""Position and P&L bookkeeping for the portfolio projection (average-cost method).

A holding keeps its quantity and total cost basis (buy fees included), so average cost is
cost / quantity; a sell releases cost pro rata and books realized P&L = proceeds - released
cost. Invariant (tested): cash + market value == initial cash + realized + unrealized.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal, localcontext

from gekko.domain.exchange import Fill, money

_CONTEXT = Context(prec=50)
ZERO = Decimal(0)


@dataclass(frozen=True)
class Holding:
    quantity: Decimal = ZERO
    cost_basis: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    @property
    def average_cost(self) -> Decimal | None:
        if self.quantity <= 0:
            return None
        with localcontext(_CONTEXT):
            return money(self.cost_basis / self.quantity)


def apply_fill(holding: Holding, fill: Fill) -> tuple[Holding, Decimal]:
    """New holding and the realized P&L this fill booked."""
    with localcontext(_CONTEXT):
        if fill.side == "buy":
            return (
                Holding(
                    holding.quantity + fill.quantity,
                    holding.cost_basis + fill.notional + fill.fee,
                    holding.realized_pnl,
                ),
                ZERO,
            )
        # Sell. Cost is released pro rata to the quantity sold; selling more than is held
        # (only possible if events arrive out of order) releases the whole basis.
        if holding.quantity <= 0:
            released = ZERO
        elif fill.quantity >= holding.quantity:
            released = holding.cost_basis
        else:
            released = money(holding.cost_basis * fill.quantity / holding.quantity)
        realized = fill.notional - fill.fee - released
        return (
            Holding(
                holding.quantity - fill.quantity,
                holding.cost_basis - released,
                holding.realized_pnl + realized,
            ),
            realized,
        )


@dataclass(frozen=True)
class Valuation:
    market_value: Decimal
    unrealized_pnl: Decimal


def value(holding: Holding, market_price: Decimal) -> Valuation:
    with localcontext(_CONTEXT):
        market_value = money(holding.quantity * market_price)
    return Valuation(market_value, market_value - holding.cost_basis)
