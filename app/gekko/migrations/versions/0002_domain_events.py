"""Paper exchange, portfolio projection, social graph, gamification totals, outboxes.

Adds what the event-driven domain needs: trading accounts/positions and limit-order columns,
a portfolio schema fed by events, social follows/trade shares and a user directory,
gamification totals, a transactional outbox per producing schema and a processed-events table
per consuming schema (idempotent consumers).

Revision ID: 0002_domain_events
Revises: 0001_initial
Create Date: 2025-08-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_domain_events"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRODUCERS = ("users", "trading", "social", "gamification")
CONSUMERS = ("portfolio", "social", "gamification")
INITIAL_CASH = "100000"


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS portfolio")

    # --- trading: limit orders, fees, cash and positions -------------------------------------
    op.execute("ALTER TABLE trading.orders ALTER COLUMN price DROP NOT NULL")
    op.execute("ALTER TABLE trading.orders DROP CONSTRAINT orders_status_check")
    op.execute(
        """
        ALTER TABLE trading.orders
            ADD CONSTRAINT orders_status_check
                CHECK (status IN ('new', 'open', 'filled', 'cancelled', 'rejected')),
            ADD COLUMN limit_price numeric(28, 10) CHECK (limit_price > 0),
            ADD COLUMN fee         numeric(28, 8) NOT NULL DEFAULT 0 CHECK (fee >= 0),
            ADD COLUMN notional    numeric(28, 8),
            ADD COLUMN reserved    numeric(28, 8) NOT NULL DEFAULT 0 CHECK (reserved >= 0),
            ADD COLUMN filled_at   timestamptz,
            ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now(),
            ADD CONSTRAINT orders_limit_price_iff_limit
                CHECK ((type = 'limit') = (limit_price IS NOT NULL)),
            ADD CONSTRAINT orders_filled_has_price
                CHECK (status <> 'filled' OR price IS NOT NULL)
        """
    )
    op.execute(
        "UPDATE trading.orders SET notional = round(quantity * price, 8), filled_at = created_at "
        "WHERE status = 'filled'"
    )
    op.execute("CREATE INDEX orders_open_idx ON trading.orders (id) WHERE status = 'open'")
    op.execute(
        """
        CREATE TABLE trading.accounts (
            user_id    bigint PRIMARY KEY,
            cash       numeric(28, 8) NOT NULL CHECK (cash >= 0),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE trading.positions (
            user_id  bigint NOT NULL,
            symbol   text NOT NULL,
            quantity numeric(28, 10) NOT NULL CHECK (quantity >= 0),
            PRIMARY KEY (user_id, symbol)
        )
        """
    )
    # Orders filled before this revision (no fees then) become opening balances.
    op.execute(
        f"""
        INSERT INTO trading.accounts (user_id, cash)
        SELECT user_id, greatest({INITIAL_CASH} - sum(CASE side WHEN 'buy' THEN notional
                                                   ELSE -notional END), 0)
        FROM trading.orders WHERE status = 'filled' GROUP BY user_id
        """  # noqa: S608 - constant
    )
    op.execute(
        """
        INSERT INTO trading.positions (user_id, symbol, quantity)
        SELECT user_id, symbol,
               greatest(sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END), 0)
        FROM trading.orders WHERE status = 'filled' GROUP BY user_id, symbol
        """
    )

    # --- portfolio: a projection of order.executed events ------------------------------------
    op.execute(
        """
        CREATE TABLE portfolio.accounts (
            user_id      bigint PRIMARY KEY,
            cash         numeric(28, 8) NOT NULL,
            realized_pnl numeric(28, 8) NOT NULL DEFAULT 0,
            fees_paid    numeric(28, 8) NOT NULL DEFAULT 0,
            trades       bigint NOT NULL DEFAULT 0,
            updated_at   timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE portfolio.positions (
            user_id      bigint NOT NULL,
            symbol       text NOT NULL,
            quantity     numeric(28, 10) NOT NULL,
            cost_basis   numeric(28, 8) NOT NULL,
            realized_pnl numeric(28, 8) NOT NULL DEFAULT 0,
            updated_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, symbol)
        )
        """
    )

    # --- social: follows, trade shares, a directory of known users ---------------------------
    op.execute(
        """
        ALTER TABLE social.posts
            ADD COLUMN kind     text NOT NULL DEFAULT 'post' CHECK (kind IN ('post', 'trade')),
            ADD COLUMN order_id bigint UNIQUE,
            ADD COLUMN trade    jsonb
        """
    )
    op.execute("CREATE INDEX posts_user_idx ON social.posts (user_id, id DESC)")
    op.execute(
        """
        CREATE TABLE social.follows (
            follower_id bigint NOT NULL,
            followee_id bigint NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (follower_id, followee_id),
            CHECK (follower_id <> followee_id)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE social.users (
            user_id       bigint PRIMARY KEY,
            username      text NOT NULL,
            registered_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )

    # --- gamification: running totals the rules need -----------------------------------------
    op.execute(
        """
        ALTER TABLE gamification.profiles
            ADD COLUMN trades bigint NOT NULL DEFAULT 0,
            ADD COLUMN volume numeric(28, 8) NOT NULL DEFAULT 0
        """
    )

    # --- event plumbing ----------------------------------------------------------------------
    for schema in PRODUCERS:
        op.execute(
            f"""
            CREATE TABLE {schema}.outbox (
                id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                event_id       uuid NOT NULL UNIQUE,
                type           text NOT NULL,
                occurred_at    timestamptz NOT NULL,
                payload        jsonb NOT NULL,
                traceparent    text,
                correlation_id text,
                sent_at        timestamptz
            )
            """
        )
        op.execute(f"CREATE INDEX outbox_unsent_idx ON {schema}.outbox (id) WHERE sent_at IS NULL")
    for schema in CONSUMERS:
        op.execute(
            f"""
            CREATE TABLE {schema}.processed_events (
                consumer     text NOT NULL,
                event_id     uuid NOT NULL,
                processed_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (consumer, event_id)
            )
            """
        )


def downgrade() -> None:
    for schema in CONSUMERS:
        op.execute(f"DROP TABLE IF EXISTS {schema}.processed_events")
    for schema in PRODUCERS:
        op.execute(f"DROP TABLE IF EXISTS {schema}.outbox")
    op.execute("ALTER TABLE gamification.profiles DROP COLUMN trades, DROP COLUMN volume")
    op.execute("DROP TABLE social.users, social.follows")
    op.execute("DELETE FROM social.posts WHERE kind = 'trade'")
    op.execute("ALTER TABLE social.posts DROP COLUMN kind, DROP COLUMN order_id, DROP COLUMN trade")
    op.execute("DROP SCHEMA portfolio CASCADE")
    op.execute("DROP TABLE trading.positions, trading.accounts")
    op.execute("DELETE FROM trading.orders WHERE status = 'open' OR price IS NULL")
    op.execute(
        """
        ALTER TABLE trading.orders
            DROP CONSTRAINT orders_filled_has_price,
            DROP CONSTRAINT orders_limit_price_iff_limit,
            DROP CONSTRAINT orders_status_check,
            DROP COLUMN limit_price, DROP COLUMN fee, DROP COLUMN notional,
            DROP COLUMN reserved, DROP COLUMN filled_at, DROP COLUMN updated_at,
            ADD CONSTRAINT orders_status_check
                CHECK (status IN ('new', 'filled', 'cancelled', 'rejected'))
        """
    )
    op.execute("ALTER TABLE trading.orders ALTER COLUMN price SET NOT NULL")
