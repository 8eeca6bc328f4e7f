"""Accounts a user links by signing in at the venue (Coinbase OAuth2, gekko.services.venue_links):
the sign-ins under way, and the linked account kept as a venue key of kind `oauth`.

Revision ID: 0011_venue_links
Revises: 0010_venue_orders
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011_venue_links"
down_revision: str | None = "0010_venue_orders"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # kind: api_key (the user pasted a key) or oauth (the user signed in at the venue; the
    # encrypted fields are its tokens and the portfolio it granted). broken_reason: why the venue
    # no longer accepts the link (its refresh was refused): orders with it are refused until the
    # user links the account again.
    op.execute(
        """
        ALTER TABLE trading.venue_keys
            ADD COLUMN kind text NOT NULL DEFAULT 'api_key' CHECK (kind IN ('api_key', 'oauth')),
            ADD COLUMN broken_reason text
        """
    )
    # A sign-in under way: found by the SHA-256 of its `state` (the state itself is only in the
    # user's browser and the venue's redirect), used once, gone after expires_at. The PKCE
    # verifier is encrypted with the data keys, the row's state hash as associated data.
    # replaces: the user's link this sign-in renews in place (its orders stay reachable).
    op.execute(
        """
        CREATE TABLE trading.venue_link_requests (
            state_hash         text PRIMARY KEY,
            user_id            bigint NOT NULL,
            venue              text NOT NULL,
            mode               text NOT NULL CHECK (mode IN ('sandbox', 'live')),
            label              text NOT NULL DEFAULT '',
            verifier_encrypted text NOT NULL CHECK (verifier_encrypted LIKE 'gk1.%'),
            replaces           uuid REFERENCES trading.venue_keys (id),
            created_at         timestamptz NOT NULL DEFAULT now(),
            expires_at         timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX venue_link_requests_user_idx ON trading.venue_link_requests (user_id)")


def downgrade() -> None:
    op.execute("DROP TABLE trading.venue_link_requests")
    op.execute("ALTER TABLE trading.venue_keys DROP COLUMN broken_reason, DROP COLUMN kind")
