"""The audit log: an append-only, hash-chained table of security events.

Revision ID: 0006_audit
Revises: 0005_mfa
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_audit"
down_revision: str | None = "0005_mfa"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA audit")
    # seq: the chain's order (assigned under the writers' lock); hash = SHA-256(prev_hash ||
    # canonical row), see gekko.security.audit.
    op.execute(
        """
        CREATE TABLE audit.events (
            seq             bigint PRIMARY KEY CHECK (seq > 0),
            at              timestamptz NOT NULL,
            event           text NOT NULL,
            component       text NOT NULL,
            actor_user_id   bigint,
            subject_user_id bigint,
            source_address  text NOT NULL DEFAULT '',
            correlation_id  text NOT NULL DEFAULT '',
            details         jsonb NOT NULL DEFAULT '{}',
            prev_hash       bytea NOT NULL CHECK (length(prev_hash) = 32),
            hash            bytea NOT NULL UNIQUE CHECK (length(hash) = 32)
        )
        """
    )
    op.execute("CREATE INDEX events_event_at_idx ON audit.events (event, at)")
    op.execute("CREATE INDEX events_actor_idx ON audit.events (actor_user_id, at)")
    op.execute("CREATE INDEX events_subject_idx ON audit.events (subject_user_id, at)")
    # Append-only for everyone, the application's role (the table's owner) included: the
    # privileges are revoked, and a trigger refuses a change even if they are granted back.
    op.execute(
        """
        CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit.events is append-only (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON audit.events
            FOR EACH ROW EXECUTE FUNCTION audit.refuse_change()
        """
    )
    op.execute(
        """
        CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON audit.events
            FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change()
        """
    )
    op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit.events FROM PUBLIC, CURRENT_USER")


def downgrade() -> None:
    op.execute("DROP SCHEMA audit CASCADE")
