"""Sessions and rotating refresh tokens for the users service.

Revision ID: 0003_sessions
Revises: 0002_domain_events
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_sessions"
down_revision: str | None = "0002_domain_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users.sessions (
            id             uuid PRIMARY KEY,
            user_id        bigint NOT NULL REFERENCES users.accounts (id) ON DELETE CASCADE,
            created_at     timestamptz NOT NULL DEFAULT now(),
            last_used_at   timestamptz NOT NULL DEFAULT now(),
            expires_at     timestamptz NOT NULL,
            user_agent     text NOT NULL DEFAULT '',
            source_address text NOT NULL DEFAULT '',
            ended_at       timestamptz,
            ended_reason   text
                CHECK (ended_reason IN ('logout', 'ended-by-user', 'refresh-token-reuse'))
        )
        """
    )
    op.execute(
        "CREATE INDEX sessions_user_open_idx ON users.sessions (user_id) WHERE ended_at IS NULL"
    )
    # A refresh token is kept as its SHA-256 only; used_at marks one that was rotated away, so
    # presenting it again is recognised as reuse.
    op.execute(
        """
        CREATE TABLE users.refresh_tokens (
            token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
            session_id uuid NOT NULL REFERENCES users.sessions (id) ON DELETE CASCADE,
            issued_at  timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            used_at    timestamptz
        )
        """
    )
    op.execute("CREATE INDEX refresh_tokens_session_idx ON users.refresh_tokens (session_id)")


def downgrade() -> None:
    op.execute("DROP TABLE users.refresh_tokens")
    op.execute("DROP TABLE users.sessions")
