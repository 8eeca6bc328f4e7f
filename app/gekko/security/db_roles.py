"""The application's PostgreSQL role: a login that is not a superuser, owns nothing and may not
change the schema, with only what the services do: read and write their tables, and append to the
append-only ones (the audit log, the alerts' history).

The migrations run as the database's owner (GEKKO_MIGRATE_DATABASE_URL); after them `gekko migrate`
makes sure this role exists with the deploy's password and exactly these privileges. A service that
is taken over then cannot alter a table, lift the append-only triggers, rewrite the audit chain or
read another database, and the owner's password is never in a service's environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import asyncpg

from gekko.archive.partitions import MONTH_SUFFIX_SQL, TABLES

# Rows here are written once: the role may insert and read them, never update or delete them (the
# tables' triggers refuse that too, for everyone but a superuser lifting them).
APPEND_ONLY_TABLES = ("audit.events", "alerts.alert_events")

# What the role gets in each application schema (names quoted by format(): schema, role).
_GRANTS = (
    "GRANT USAGE ON SCHEMA %I TO %I",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I",
)
_APPEND_ONLY = "REVOKE UPDATE, DELETE, TRUNCATE ON %I.%I FROM %I"
_PARTITION = "REVOKE ALL ON %I.%I FROM %I"
# The month tables of the kept tables, by name (gekko.archive.partitions): orders_y2026m12 ...
MONTH_TABLES = "^(" + "|".join(table.name for table in TABLES) + f")({MONTH_SUFFIX_SQL}|_default)$"
# Schemas the role only reads: what the archive job (as the owner) recorded of archived months,
# which `gekko audit verify` steps over.
READ_ONLY_SCHEMAS = ("archive",)
_READ_ONLY = (
    "GRANT USAGE ON SCHEMA %I TO %I",
    "GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I",
    "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA %I FROM %I",
)

# Schemas the services do not use: the catalogue, and `public` (alembic's version table).
_NOT_APPLICATION_SCHEMAS = ("public", "information_schema")

# What a login role must not be able to do (pg_roles columns, all expected false).
_POWERS = {
    "rolsuper": "NOSUPERUSER",
    "rolcreatedb": "NOCREATEDB",
    "rolcreaterole": "NOCREATEROLE",
    "rolreplication": "NOREPLICATION",
    "rolbypassrls": "NOBYPASSRLS",
}


class DatabaseRoleError(Exception):
    pass


@dataclass(frozen=True)
class LoginRole:
    user: str
    password: str

    @classmethod
    def from_url(cls, database_url: str) -> LoginRole:
        parts = urlsplit(database_url)
        if not parts.username or parts.password is None:
            raise DatabaseRoleError("the application's database URL must name a user and password")
        return cls(user=unquote(parts.username), password=unquote(parts.password))


async def application_schemas(owner: asyncpg.Connection) -> list[str]:
    rows = await owner.fetch(
        """
        SELECT nspname FROM pg_namespace
        WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> ALL($1::text[])
        ORDER BY nspname
        """,
        list(_NOT_APPLICATION_SCHEMAS),
    )
    return [row["nspname"] for row in rows]


async def _privileges(owner: asyncpg.Connection, schemas: list[str]) -> list[tuple[str, str]]:
    """Every access list in the application's schemas, to tell whether a grant changed one (a
    partition's is left out: a new month is not a change of what the services may do)."""
    rows = await owner.fetch(
        """
        SELECT n.nspname AS name, coalesce(n.nspacl::text, '') AS acl
        FROM pg_namespace n WHERE n.nspname = ANY($1::text[])
        UNION ALL
        SELECT n.nspname || '.' || c.relname, coalesce(c.relacl::text, '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p', 'v', 'S')
          AND NOT c.relispartition AND c.relname !~ $2
        ORDER BY 1
        """,
        schemas,
        MONTH_TABLES,
    )
    return [(row["name"], row["acl"]) for row in rows]


async def _partitions(owner: asyncpg.Connection, schemas: list[str]) -> list[tuple[str, str]]:
    """Every month table in the application's schemas (a month of orders or of the audit log is
    a table of its own, which the schema-wide grants reach): the partitions, and by their name
    a month an archive run left detached when it was stopped (until the next run attaches it)."""
    rows = await owner.fetch(
        """
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
          AND (c.relispartition OR c.relname ~ $2)
        ORDER BY 1, 2
        """,
        schemas,
        MONTH_TABLES,
    )
    return [(row[0], row[1]) for row in rows]


async def _sql(owner: asyncpg.Connection, template: str, *values: str) -> None:
    """Run a statement whose names and literals PostgreSQL's format() quotes (%I, %L): role
    statements take no bind parameters."""
    placeholders = ", ".join(f"${i}::text" for i in range(1, len(values) + 1))
    statement = await owner.fetchval(f"SELECT format('{template}', {placeholders})", *values)
    await owner.execute(statement)


async def _password_works(database_url: str) -> bool:
    try:
        conn = await asyncpg.connect(database_url, timeout=10)
    except asyncpg.InvalidPasswordError:
        return False
    await conn.close()
    return True


async def ensure_application_role(owner_url: str, database_url: str) -> list[str]:
    """Create or mend the role of `database_url` through the owner's connection; the output lines
    say what changed (none when nothing did)."""
    role = LoginRole.from_url(database_url)
    lines: list[str] = []
    owner = await asyncpg.connect(owner_url, timeout=10)
    try:
        if role.user == await owner.fetchval("SELECT current_user"):
            raise DatabaseRoleError(
                f"the application's database role must not be the owner ({role.user}): give "
                "GEKKO_DATABASE_URL its own user"
            )
        found = await owner.fetchrow("SELECT * FROM pg_roles WHERE rolname = $1", role.user)
        if found is None:
            await _sql(
                owner, "CREATE ROLE %I LOGIN NOINHERIT PASSWORD %L", role.user, role.password
            )
            lines.append(f"database role {role.user!r} created")
        else:
            if not found["rolcanlogin"] or any(found[power] for power in _POWERS):
                powers = " ".join(_POWERS.values())
                await _sql(owner, f"ALTER ROLE %I LOGIN {powers}", role.user)
                lines.append(f"database role {role.user!r} stripped of owner powers")
            if not await _password_works(database_url):
                await _sql(owner, "ALTER ROLE %I PASSWORD %L", role.user, role.password)
                lines.append(f"database role {role.user!r} password updated")
        async with owner.transaction():
            schemas = await application_schemas(owner)
            before = await _privileges(owner, schemas)
            for schema in schemas:
                for grant in _READ_ONLY if schema in READ_ONLY_SCHEMAS else _GRANTS:
                    await _sql(owner, grant, schema, role.user)
            for table in APPEND_ONLY_TABLES:
                schema, name = table.split(".")
                if schema in schemas:
                    await _sql(owner, _APPEND_ONLY, schema, name, role.user)
            # The services reach a partitioned table's rows through it, never a partition
            # directly: no month of the audit log can be changed by going around its parent.
            for schema, name in await _partitions(owner, schemas):
                await _sql(owner, _PARTITION, schema, name, role.user)
            if await _privileges(owner, schemas) != before:
                granted = ", ".join(schemas)
                lines.append(f"database role {role.user!r} granted the tables of {granted}")
    finally:
        await owner.close()
    return lines
