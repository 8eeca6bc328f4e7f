"""Venue keys users link to their accounts (gekko.exchanges.credentials): encrypted at rest,
erased when removed.

Revision ID: 0008_venue_keys
Revises: 0007_alerts
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008_venue_keys"
down_revision: str | None = "0007_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # credentials_encrypted: gekko.security.crypto's gk1.<key id>.<data> of the venue's fields,
    # with the row's id as associated data; NULL once the key is removed (the row stays, for
    # the record). mode: where the key was checked (sandbox or live).
    op.execute(
        """
        CREATE TABLE trading.venue_keys (
            id                    uuid PRIMARY KEY,
            user_id               bigint NOT NULL,
            venue                 text NOT NULL,
            mode                  text NOT NULL CHECK (mode IN ('sandbox', 'live')),
            label                 text NOT NULL DEFAULT '',
            hint                  text NOT NULL,
            credentials_encrypted text CHECK (credentials_encrypted LIKE 'gk1.%'),
            created_at            timestamptz NOT NULL DEFAULT now(),
            removed_at            timestamptz,
            CHECK ((removed_at IS NULL) = (credentials_encrypted IS NOT NULL))
        )
        """
    )
    op.execute(
        "CREATE INDEX venue_keys_user_idx ON trading.venue_keys (user_id, venue)"
        " WHERE removed_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE trading.venue_keys")
