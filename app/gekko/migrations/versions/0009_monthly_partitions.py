"""Orders (with their fills) and audit rows in monthly partitions, for 7-year retention
(BC-003): a month past the hot window is archived to a file and detached (gekko.archive).

Copy and swap: each table is renamed aside, a partitioned table of the same columns, checks,
identity and privileges takes its name, the rows are copied, and the old table is dropped, all in
the migration's one transaction (writers wait for it; nothing is lost or doubled).

A partitioned table's unique keys must hold its partition column, so:
- orders: the key is (id, created_at). An Idempotency-Key is found again by an index, no longer
  a unique one: placing an order already serializes a user's orders (the account row's lock),
  and a key is remembered while its order is hot.
- audit: the key is (seq, at); the chain (gekko.security.audit) makes each hash unique.

archive.partitions records what was archived: where the file is, its checksum, its retention,
whether it was restored or (past its retention) pruned, and for the audit log the chain's ends,
which `gekko audit verify` steps over.

Revision ID: 0009_monthly_partitions
Revises: 0008_venue_keys
Create Date: 2026-12-06
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from gekko.archive.partitions import (
    AUDIT,
    MONTHS_AHEAD,
    ORDERS,
    Month,
    PartitionedTable,
    partition_statements,
)

revision: str = "0009_monthly_partitions"
down_revision: str | None = "0008_venue_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The indexes each table had, made again on the partitioned table (and so on each partition).
_INDEXES = {
    ORDERS: (
        "ALTER TABLE trading.orders ADD CONSTRAINT orders_pkey PRIMARY KEY (id, created_at)",
        "CREATE INDEX orders_user_id_idx ON trading.orders (user_id, id DESC)",
        "CREATE INDEX orders_open_idx ON trading.orders (id) WHERE status = 'open'",
        "CREATE INDEX orders_user_idempotency_key_idx ON trading.orders (user_id, idempotency_key)"
        " WHERE idempotency_key IS NOT NULL",
    ),
    AUDIT: (
        "ALTER TABLE audit.events ADD CONSTRAINT events_pkey PRIMARY KEY (seq, at)",
        "CREATE INDEX events_event_at_idx ON audit.events (event, at)",
        "CREATE INDEX events_actor_idx ON audit.events (actor_user_id, at)",
        "CREATE INDEX events_subject_idx ON audit.events (subject_user_id, at)",
        # Append-only for everyone, the owner included, as before (0006_audit): the row trigger
        # passes to every partition, the statement trigger is made on each
        # (gekko.archive.partitions), and the services' role loses the privileges on each too
        # (gekko.security.db_roles). The owner keeps them on the partitions: moving rows a
        # default partition caught into their month deletes them from it, detached.
        "CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON audit.events"
        " FOR EACH ROW EXECUTE FUNCTION audit.refuse_change()",
        "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON audit.events"
        " FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change()",
        "REVOKE UPDATE, DELETE, TRUNCATE ON audit.events FROM PUBLIC, CURRENT_USER",
    ),
}


def _scalar(sql: str):
    return op.get_bind().execute(sa.text(sql)).scalar()


def _privileges(table: str) -> list[tuple[str, str]]:
    """(grantee, privilege) of a table's access list, PUBLIC and the owner left out."""
    rows = op.get_bind().execute(
        sa.text(
            "SELECT a.grantee::regrole::text, a.privilege_type "
            "FROM pg_class c, aclexplode(c.relacl) a "
            "WHERE c.oid = CAST(:table AS regclass) AND a.grantee <> 0 AND a.grantee <> c.relowner"
        ),
        {"table": table},
    )
    return [(row[0], row[1]) for row in rows]


def _partition(table: PartitionedTable, identity: bool) -> None:
    aside = f"{table.schema}.{table.name}_unpartitioned"
    op.execute(f"ALTER TABLE {table.qualified} RENAME TO {table.name}_unpartitioned")
    if table.append_only:
        op.execute(f"DROP TRIGGER events_append_only ON {aside}")
        op.execute(f"DROP TRIGGER events_no_truncate ON {aside}")
    op.execute(
        f"CREATE TABLE {table.qualified} (LIKE {aside} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
        f"INCLUDING IDENTITY) PARTITION BY RANGE ({table.key})"
    )
    now = Month.of(datetime.now(UTC))
    first = _scalar(f"SELECT min({table.key}) FROM {aside}")  # noqa: S608 - our own names
    since = min(Month.of(first), now) if first else now
    for month in since.until(now.plus(MONTHS_AHEAD)):
        for statement in partition_statements(table, month):
            op.execute(statement)
    for statement in partition_statements(table, None):
        op.execute(statement)
    op.execute(
        f"INSERT INTO {table.qualified} OVERRIDING SYSTEM VALUE SELECT * FROM {aside}"  # noqa: S608
    )
    if identity:
        # The next id continues from the old sequence (ids of rolled-back inserts stay unused).
        old = _scalar(f"SELECT pg_get_serial_sequence('{aside}', 'id')")
        last = _scalar(
            f"SELECT greatest(coalesce(pg_sequence_last_value('{old}'), 0), "  # noqa: S608
            f"coalesce((SELECT max(id) FROM {aside}), 0))"
        )
        op.execute(f"ALTER TABLE {table.qualified} ALTER COLUMN id RESTART WITH {int(last) + 1}")
    grants = _privileges(aside)
    op.execute(f"DROP TABLE {aside}")
    if identity:
        sequence = _scalar(f"SELECT pg_get_serial_sequence('{table.qualified}', 'id')")
        op.execute(f"ALTER SEQUENCE {sequence} RENAME TO {table.name}_id_seq")
    for statement in _INDEXES[table]:
        op.execute(statement)
    for grantee, privilege in grants:
        # regrole's text is the role's name quoted where it needs to be
        op.execute(f"GRANT {privilege} ON {table.qualified} TO {grantee}")


def upgrade() -> None:
    op.execute("CREATE SCHEMA archive")
    op.execute(
        """
        CREATE TABLE archive.partitions (
            partition       text PRIMARY KEY,
            data_class      text NOT NULL,
            parent          text NOT NULL,
            month           text NOT NULL,
            rows            bigint NOT NULL CHECK (rows >= 0),
            file            text NOT NULL,
            sha256          text NOT NULL CHECK (length(sha256) = 64),
            content_sha256  text NOT NULL CHECK (length(content_sha256) = 64),
            archived_at     timestamptz NOT NULL,
            retain_until    timestamptz NOT NULL,
            copies          text[] NOT NULL DEFAULT '{}',
            first_seq       bigint,
            last_seq        bigint,
            first_prev_hash bytea,
            last_hash       bytea,
            restored_at     timestamptz,
            pruned_at       timestamptz
        )
        """
    )
    _partition(ORDERS, identity=True)
    _partition(AUDIT, identity=False)


def downgrade() -> None:
    raise NotImplementedError(
        "partitioned tables are not turned back: restore a backup taken before 0009 instead"
    )
