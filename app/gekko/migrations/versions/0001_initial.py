"""Initial schema: one PostgreSQL schema per service.

Revision ID: 0001_initial
Revises:
Create Date: 2025-08-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for schema in ("users", "trading", "social", "gamification"):
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")

    op.execute(
        """
        CREATE TABLE users.accounts (
            id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            username      text NOT NULL CHECK (length(username) BETWEEN 3 AND 32),
            email         text NOT NULL CHECK (email = lower(email)),
            password_hash text NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # Case-insensitive uniqueness; the constraint names tell the API which field clashed.
    op.execute("CREATE UNIQUE INDEX accounts_username_key ON users.accounts (lower(username))")
    op.execute("CREATE UNIQUE INDEX accounts_email_key ON users.accounts (email)")

    op.execute(
        """
        CREATE TABLE trading.orders (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id         bigint NOT NULL,
            symbol          text NOT NULL,
            side            text NOT NULL CHECK (side IN ('buy', 'sell')),
            type            text NOT NULL DEFAULT 'market' CHECK (type IN ('market', 'limit')),
            quantity        numeric(28, 10) NOT NULL CHECK (quantity > 0),
            price           numeric(28, 10) NOT NULL CHECK (price > 0),
            status          text NOT NULL
                            CHECK (status IN ('new', 'filled', 'cancelled', 'rejected')),
            idempotency_key text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT orders_user_idempotency_key UNIQUE (user_id, idempotency_key)
        )
        """
    )
    op.execute("CREATE INDEX orders_user_id_idx ON trading.orders (user_id, id DESC)")

    op.execute(
        """
        CREATE TABLE social.posts (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id    bigint NOT NULL,
            body       text NOT NULL CHECK (length(body) BETWEEN 1 AND 280),
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )

    op.execute(
        """
        CREATE TABLE gamification.profiles (
            user_id    bigint PRIMARY KEY,
            points     bigint NOT NULL DEFAULT 0 CHECK (points >= 0),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE gamification.achievements (
            user_id    bigint NOT NULL,
            code       text NOT NULL,
            awarded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, code)
        )
        """
    )


def downgrade() -> None:
    for schema in ("gamification", "social", "trading", "users"):
        op.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
