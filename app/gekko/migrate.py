"""`gekko migrate`: alembic upgrade head against GEKKO_DATABASE_URL, from the installed package."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from importlib.resources import as_file, files

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

log = logging.getLogger("gekko.migrate")

CONNECT_WAIT_S = 30.0


class DatabaseUnavailableError(RuntimeError):
    pass


@dataclass(frozen=True)
class MigrationResult:
    applied: int
    revision: str | None


def sqlalchemy_url(database_url: str) -> str:
    """postgresql://... -> postgresql+asyncpg://... (alembic runs on SQLAlchemy + asyncpg)."""
    for scheme in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if database_url.startswith(scheme):
            return "postgresql+asyncpg://" + database_url[len(scheme) :]
    raise ValueError("database URL must start with postgresql://")


def format_result(result: MigrationResult) -> str:
    revision = result.revision or "base"
    if result.applied:
        return f"gekko-migrate: applied {result.applied} revision(s), now at {revision}"
    return f"gekko-migrate: up to date at {revision}"


def redact(database_url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = database_url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return database_url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


async def _read_revision(database_url: str) -> str | None:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


async def wait_for_revision(database_url: str, wait_s: float = CONNECT_WAIT_S) -> str | None:
    """Current revision, retrying the connection while PostgreSQL is still starting."""
    deadline = time.monotonic() + wait_s
    delay = 0.5
    while True:
        try:
            return await _read_revision(database_url)
        except (
            OSError,
            asyncpg.CannotConnectNowError,
            asyncpg.ConnectionDoesNotExistError,
            TimeoutError,
        ) as exc:
            if time.monotonic() >= deadline:
                raise DatabaseUnavailableError(
                    f"cannot connect to PostgreSQL at {redact(database_url)} "
                    f"after {wait_s:.0f} s: {exc}"
                ) from exc
            log.info("waiting for PostgreSQL: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 3.0)


def alembic_config(database_url: str, script_location: str) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.set_main_option("version_path_separator", "os")
    # Passed as an attribute, not an ini option, so '%' in passwords needs no escaping.
    config.attributes["database_url"] = database_url
    return config


def count_between(script: ScriptDirectory, before: str | None, after: str | None) -> int:
    if after is None or after == before:
        return 0
    return sum(1 for _ in script.iterate_revisions(after, before or "base"))


def run_migrations(database_url: str, wait_s: float = CONNECT_WAIT_S) -> MigrationResult:
    before = asyncio.run(wait_for_revision(database_url, wait_s))
    with as_file(files("gekko") / "migrations") as location:
        config = alembic_config(database_url, str(location))
        script = ScriptDirectory.from_config(config)
        command.upgrade(config, "head")
        after = asyncio.run(_read_revision(database_url))
        return MigrationResult(applied=count_between(script, before, after), revision=after)
