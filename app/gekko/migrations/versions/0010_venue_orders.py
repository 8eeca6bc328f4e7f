"""Orders sent to a venue (Binance.US, Coinbase, OANDA) with a user's linked key
(gekko.services.venue_orders): recorded before they are sent, settled from the venue's answer.

Revision ID: 0010_venue_orders
Revises: 0009_monthly_partitions
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_venue_orders"
down_revision: str | None = "0009_monthly_partitions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # status: pending (recorded, being sent), unknown (sent, its answer lost: to be looked up by
    # client_order_id), then what the venue says: open, filled, cancelled, rejected. The client
    # order id goes with the order to the venue, which keeps it: the order is found by it.
    op.execute(
        """
        CREATE TABLE trading.venue_orders (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id         bigint NOT NULL,
            venue           text NOT NULL,
            mode            text NOT NULL CHECK (mode IN ('sandbox', 'live')),
            key_id          uuid NOT NULL REFERENCES trading.venue_keys (id),
            client_order_id text NOT NULL UNIQUE,
            symbol          text NOT NULL,
            venue_symbol    text NOT NULL,
            side            text NOT NULL CHECK (side IN ('buy', 'sell')),
            type            text NOT NULL CHECK (type IN ('market', 'limit')),
            quantity        numeric(28, 10) NOT NULL CHECK (quantity > 0),
            limit_price     numeric(28, 10) CHECK (limit_price > 0),
            status          text NOT NULL CHECK (status IN
                                ('pending', 'unknown', 'open', 'filled', 'cancelled', 'rejected')),
            filled_quantity numeric(28, 10) NOT NULL DEFAULT 0,
            price           numeric(28, 10),
            venue_order_id  text,
            reason          text,
            -- when the order became unknown: a lost request can still be taken for a while
            unsure_since    timestamptz,
            idempotency_key text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT venue_orders_user_idempotency_key UNIQUE (user_id, idempotency_key)
        )
        """
    )
    op.execute("CREATE INDEX venue_orders_user_idx ON trading.venue_orders (user_id, id DESC)")
    # What the reconciler looks up, least recently looked at first.
    op.execute(
        "CREATE INDEX venue_orders_unsettled_idx ON trading.venue_orders (updated_at)"
        " WHERE status IN ('pending', 'unknown', 'open')"
    )


def downgrade() -> None:
    op.execute("DROP TABLE trading.venue_orders")
