"""The services' database role holds only what they use: it is no superuser and owns nothing, so
a service taken over cannot change the schema, lift the audit log's guard, rewrite an append-only
row or make itself a role; `gekko migrate` mends a role that drifted and says nothing when none
did. (Every other integration test runs the services as this role, so what it may do is proven
by the whole suite.)"""

from __future__ import annotations

import asyncio
import secrets
import subprocess

import asyncpg
import pytest

from .conftest import base_env, gekko_cmd

pytestmark = pytest.mark.integration


def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_the_services_role_is_no_superuser_and_owns_nothing(stack):
    pg = stack.postgres
    role = pg.fetch("SELECT * FROM pg_roles WHERE rolname = $1", pg.app_user)[0]
    powers = ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls")
    assert {power: role[power] for power in powers} == dict.fromkeys(powers, False)
    owned = pg.fetch("SELECT count(*) AS n FROM pg_class WHERE relowner = $1", role["oid"])[0]["n"]
    assert owned == 0
    # The services read the audit log (the admin's API) through this role.
    assert fetch(pg.app_url, "SELECT count(*) AS n FROM audit.events")[0]["n"] >= 0


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("UPDATE audit.events SET event = 'forged'", "permission denied for table events"),
        ("DELETE FROM audit.events", "permission denied for table events"),
        ("DELETE FROM alerts.alert_events", "permission denied for table alert_events"),
        ("TRUNCATE trading.orders", "permission denied for table orders"),
        ("ALTER TABLE audit.events DISABLE TRIGGER events_append_only", "must be owner"),
        ("DROP TABLE trading.orders", "must be owner"),
        ("CREATE TABLE users.backdoor (id int)", "permission denied for schema users"),
        ("SELECT * FROM alembic_version", "permission denied for table alembic_version"),
        ("CREATE ROLE intruder", "permission denied to create role"),
    ],
)
def test_the_services_role_is_refused_what_only_the_owner_may_do(stack, statement, refusal):
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=refusal):
        fetch(stack.postgres.app_url, statement)


def test_migrate_mends_a_drifted_role_and_is_quiet_when_nothing_drifted(postgres, redis_server):
    # A database and role of its own: the stack's role keeps its password throughout.
    database, user = f"roles_{secrets.token_hex(4)}", f"gekko_app_{secrets.token_hex(4)}"
    fetch(postgres.url, f"CREATE DATABASE {database} OWNER {postgres.user}")
    password = secrets.token_urlsafe(16)
    services_url = postgres.services_url(database).replace(
        f"{postgres.app_user}:{postgres.app_password}@", f"{user}:{password}@"
    )
    env = dict(
        base_env(postgres, redis_server),
        GEKKO_DATABASE_URL=services_url,
        GEKKO_MIGRATE_DATABASE_URL=postgres.owner_url(database),
    )

    def migrate() -> list[str]:
        done = subprocess.run(gekko_cmd("migrate"), env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert password not in done.stdout + done.stderr
        return done.stdout.strip().splitlines()[1:]  # after the revision line

    owner = postgres.owner_url(database)
    try:
        assert migrate()[0] == f"gekko-migrate: database role '{user}' created"
        # Drift: powers given, the password changed by hand, a privilege taken away.
        fetch(owner, f"ALTER ROLE {user} CREATEDB CREATEROLE PASSWORD 'changed-by-hand'")
        fetch(owner, f"REVOKE SELECT ON trading.orders FROM {user}")  # noqa: S608 (a test's name)
        fetch(owner, f"GRANT UPDATE ON audit.events TO {user}")
        with pytest.raises(asyncpg.InvalidPasswordError):
            fetch(services_url, "SELECT 1")
        assert migrate() == [
            f"gekko-migrate: database role '{user}' stripped of owner powers",
            f"gekko-migrate: database role '{user}' password updated",
            f"gekko-migrate: database role '{user}' granted the tables of alerts, archive, "
            "audit, gamification, portfolio, social, trading, users",
        ]
        role = fetch(owner, "SELECT * FROM pg_roles WHERE rolname = $1", user)[0]
        assert not role["rolcreatedb"] and not role["rolcreaterole"]
        assert fetch(services_url, "SELECT count(*) AS n FROM trading.orders")[0]["n"] == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            fetch(services_url, "UPDATE audit.events SET event = 'forged'")
        assert migrate() == []
    finally:
        fetch(postgres.url, f"DROP DATABASE {database} WITH (FORCE)")
        fetch(postgres.url, f"DROP ROLE IF EXISTS {user}")
