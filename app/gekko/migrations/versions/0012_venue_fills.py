"""Venue orders' fills (their value and fees, as the venue reports them) and the positions they
make in the portfolio, per venue.

Revision ID: 0012_venue_fills
Revises: 0011_venue_links
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_venue_fills"
down_revision: str | None = "0011_venue_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The fills' totals as the venue last reported them: what they were worth in the quote asset
    # and the fees by asset ({"BTC": "0.00001"}); the assets the symbol trades, from the venue's
    # rules when the order was placed. trading emits a venue_order.filled event for each rise.
    # fills_pending: the venue has not told every fill's detail yet (since fills_pending_since):
    # the order is asked again, even once done, for a day at most. Orders filled before this
    # revision have no value recorded (NULL): they are asked again, and their fills booked whole.
    op.execute(
        """
        ALTER TABLE trading.venue_orders
            ADD COLUMN filled_value        numeric DEFAULT 0 CHECK (filled_value >= 0),
            ADD COLUMN fees                jsonb NOT NULL DEFAULT '{}'::jsonb,
            ADD COLUMN base_asset          text,
            ADD COLUMN quote_asset         text,
            ADD COLUMN fills_pending       boolean NOT NULL DEFAULT false,
            ADD COLUMN fills_pending_since timestamptz
        """
    )
    op.execute(
        "UPDATE trading.venue_orders SET filled_value = NULL, fills_pending = true, "
        "fills_pending_since = now() WHERE filled_quantity > 0"
    )
    op.execute(
        "CREATE INDEX venue_orders_fills_pending_idx ON trading.venue_orders (updated_at) "
        "WHERE fills_pending"
    )
    # What the venue fills make, per venue account and symbol (the venue's name for it): the
    # quantity held, its cost in the quote asset (fees included), realized P&L, the fees in the
    # quote asset (fees taken in the base asset valued at their fill's price) and those charged
    # in another asset (BNB, an account's home currency), kept as charged.
    op.execute(
        """
        CREATE TABLE portfolio.venue_positions (
            user_id      bigint NOT NULL,
            venue        text NOT NULL,
            mode         text NOT NULL,
            symbol       text NOT NULL,
            base_asset   text,
            quote_asset  text,
            quantity     numeric NOT NULL DEFAULT 0,
            cost_basis   numeric NOT NULL DEFAULT 0,
            realized_pnl numeric NOT NULL DEFAULT 0,
            fees_paid    numeric NOT NULL DEFAULT 0,
            other_fees   jsonb NOT NULL DEFAULT '{}'::jsonb,
            fills        bigint NOT NULL DEFAULT 0,
            last_price   numeric,
            updated_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, venue, mode, symbol)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE portfolio.venue_positions")
    op.execute(
        "ALTER TABLE trading.venue_orders DROP COLUMN filled_value, DROP COLUMN fees, "
        "DROP COLUMN base_asset, DROP COLUMN quote_asset, DROP COLUMN fills_pending, "
        "DROP COLUMN fills_pending_since"
    )
