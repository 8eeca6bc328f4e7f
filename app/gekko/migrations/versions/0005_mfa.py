"""Second factors: TOTP seeds (encrypted at rest), recovery codes (hashed), used sign-in
challenges, and when each session last proved a second factor.

Revision ID: 0005_mfa
Revises: 0004_roles_and_sharing
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_mfa"
down_revision: str | None = "0004_roles_and_sharing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # secret_encrypted: gekko.security.crypto's gk1.<key id>.<data>, never the seed itself.
    # last_step: the TOTP time step last accepted, so no code is accepted twice.
    op.execute(
        """
        CREATE TABLE users.mfa (
            user_id          bigint PRIMARY KEY REFERENCES users.accounts (id) ON DELETE CASCADE,
            secret_encrypted text NOT NULL CHECK (secret_encrypted LIKE 'gk1.%'),
            created_at       timestamptz NOT NULL DEFAULT now(),
            confirmed_at     timestamptz,
            last_step        bigint NOT NULL DEFAULT 0
        )
        """
    )
    op.execute(
        """
        CREATE TABLE users.recovery_codes (
            user_id   bigint NOT NULL REFERENCES users.accounts (id) ON DELETE CASCADE,
            code_hash bytea NOT NULL CHECK (length(code_hash) = 32),
            used_at   timestamptz,
            PRIMARY KEY (user_id, code_hash)
        )
        """
    )
    # A sign-in challenge completes once: its id is kept until the challenge would expire.
    op.execute(
        """
        CREATE TABLE users.mfa_challenges_used (
            id         text PRIMARY KEY,
            expires_at timestamptz NOT NULL
        )
        """
    )
    op.execute("ALTER TABLE users.sessions ADD COLUMN mfa_at timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE users.sessions DROP COLUMN mfa_at")
    op.execute("DROP TABLE users.mfa_challenges_used")
    op.execute("DROP TABLE users.recovery_codes")
    op.execute("DROP TABLE users.mfa")
