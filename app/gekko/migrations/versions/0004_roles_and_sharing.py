"""Roles for users (trader, viewer, operator, admin) and trade sharing as a user's own choice.

Revision ID: 0004_roles_and_sharing
Revises: 0003_sessions
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004_roles_and_sharing"
down_revision: str | None = "0003_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A role change ends the user's sessions.
    op.execute(
        """
        ALTER TABLE users.sessions DROP CONSTRAINT sessions_ended_reason_check,
            ADD CONSTRAINT sessions_ended_reason_check CHECK (ended_reason IN
                ('logout', 'ended-by-user', 'refresh-token-reuse', 'role-changed'))
        """
    )
    op.execute(
        """
        ALTER TABLE users.accounts ADD COLUMN role text NOT NULL DEFAULT 'trader'
            CHECK (role IN ('trader', 'viewer', 'operator', 'admin'))
        """
    )
    # Fills reach the social feed only for users who chose to share them (no row: not shared).
    op.execute(
        """
        CREATE TABLE social.preferences (
            user_id      bigint PRIMARY KEY,
            share_trades boolean NOT NULL DEFAULT false,
            updated_at   timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE social.preferences")
    op.execute("ALTER TABLE users.accounts DROP COLUMN role")
