"""Alert tracking: every alert Alertmanager notified about, its current state, and an
append-only history of what happened to it (fired, notified whom, escalated, acknowledged by
whom, resolved), for the alerts service (gekko.services.alerts).

Revision ID: 0007_alerts
Revises: 0006_audit
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007_alerts"
down_revision: str | None = "0006_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA alerts")
    # One row per alert occurrence: Alertmanager's fingerprint (a hash of the label set) and
    # the time it started firing (startsAt) identify it; the same labels firing again later
    # are a new row. fired_at is startsAt, first_seen_at when the first webhook brought it.
    op.execute(
        """
        CREATE TABLE alerts.alerts (
            id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            fingerprint         text NOT NULL,
            fired_at            timestamptz NOT NULL,
            alertname           text NOT NULL DEFAULT '',
            severity            text NOT NULL DEFAULT '',
            team                text NOT NULL DEFAULT '',
            labels              jsonb NOT NULL,
            annotations         jsonb NOT NULL DEFAULT '{}',
            generator_url       text NOT NULL DEFAULT '',
            status              text NOT NULL DEFAULT 'firing'
                                CHECK (status IN ('firing', 'acknowledged', 'resolved')),
            first_seen_at       timestamptz NOT NULL DEFAULT now(),
            acknowledged_at     timestamptz,
            acknowledged_by     text,
            ack_comment         text,
            silence_id          text,
            escalated_at        timestamptz,
            escalation_ended_at timestamptz,
            resolved_at         timestamptz,
            updated_at          timestamptz NOT NULL DEFAULT now(),
            UNIQUE (fingerprint, fired_at),
            CONSTRAINT alerts_acknowledged_has_who
                CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL)),
            CONSTRAINT alerts_status_matches
                CHECK ((status = 'resolved') = (resolved_at IS NOT NULL)
                       AND (status <> 'acknowledged' OR acknowledged_at IS NOT NULL)),
            CONSTRAINT alerts_escalation_ends_after_it_starts
                CHECK (escalation_ended_at IS NULL OR escalated_at IS NOT NULL)
        )
        """
    )
    op.execute("CREATE INDEX alerts_status_fired_idx ON alerts.alerts (status, fired_at DESC)")
    op.execute("CREATE INDEX alerts_fired_idx ON alerts.alerts (fired_at DESC)")
    # The escalation loop's work: what is still open, and escalations not yet ended.
    op.execute(
        """
        CREATE INDEX alerts_open_idx ON alerts.alerts (fired_at)
            WHERE status <> 'resolved'
               OR (escalated_at IS NOT NULL AND escalation_ended_at IS NULL)
        """
    )
    op.execute(
        """
        CREATE TABLE alerts.alert_events (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            alert_id   bigint NOT NULL REFERENCES alerts.alerts (id),
            kind       text NOT NULL CHECK (kind IN ('fired', 'notified', 'escalated',
                                                     'escalation_ended', 'acknowledged',
                                                     'resolved')),
            at         timestamptz NOT NULL,
            receiver   text,
            actor      text,
            comment    text,
            silence_id text,
            details    jsonb NOT NULL DEFAULT '{}'
        )
        """
    )
    op.execute("CREATE INDEX alert_events_alert_idx ON alerts.alert_events (alert_id, at, id)")
    # Append-only, as audit.events: the privileges are revoked from the application's role (the
    # owner), and a statement trigger refuses any update, delete or truncate even if they are
    # granted back.
    op.execute(
        """
        CREATE FUNCTION alerts.append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '%.% is append-only (% refused)', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER alert_events_append_only
            BEFORE UPDATE OR DELETE OR TRUNCATE ON alerts.alert_events
            FOR EACH STATEMENT EXECUTE FUNCTION alerts.append_only()
        """
    )
    op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON alerts.alert_events FROM PUBLIC, CURRENT_USER")
    # Who acknowledged: user names from user.registered, so the service reads no other
    # service's tables (as social.users).
    op.execute(
        """
        CREATE TABLE alerts.users (
            user_id  bigint PRIMARY KEY,
            username text NOT NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP SCHEMA alerts CASCADE")
