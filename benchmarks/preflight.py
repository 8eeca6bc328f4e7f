"""Reach the deployed PostgreSQL and Redis, and give the bench its own database and Redis DB.

The bench shares the deployed datastores but nothing else: database `gekko_bench` (dropped and
recreated, then migrated) and Redis DB 1 (flushed), so its services never register in the
deployed gateway's registry (DB 0) and its orders never reach the deployed database.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg
from redis.asyncio import Redis

from benchmarks import ops
from benchmarks.settings import BenchSettings

DEPLOY_HINT = "is the stack deployed? Run `make deploy` first"


class PreflightError(RuntimeError):
    pass


@dataclass(frozen=True)
class Datastores:
    database_url: str  # the bench database
    redis_url: str  # the bench Redis DB

    def service_env(self) -> dict[str, str]:
        """The GEKKO_* contract shared by every process the bench starts."""
        return {
            "GEKKO_DATABASE_URL": self.database_url,
            "GEKKO_REDIS_URL": self.redis_url,
            "GEKKO_JWT_VERIFY_KEYS_FILE": ops.VERIFY_KEYS_FILE,
            "GEKKO_JWT_SIGNING_KEY_FILE": ops.SIGNING_KEY_FILE,
            "GEKKO_DATA_KEYS_FILE": ops.DATA_KEYS_FILE,
            "GEKKO_BIND_HOST": "127.0.0.1",
            "GEKKO_ENVIRONMENT": "bench",
            "GEKKO_LOG_LEVEL": "INFO",
        }


def read_secret(directory: Path, name: str) -> str:
    path = directory / name
    try:
        tokens = path.read_text().split()
    except OSError as exc:
        raise PreflightError(f"cannot read {path}: {exc.strerror}; {DEPLOY_HINT}") from None
    if not tokens:
        raise PreflightError(f"{path} is empty; {DEPLOY_HINT}")
    return tokens[0]


async def _prepare(cfg: BenchSettings, pg_password: str, redis_password: str) -> None:
    redis = Redis(
        host="127.0.0.1",
        port=cfg.redis_port,
        db=cfg.redis_db,
        username="gekko-admin",  # the deployment's admin user (the default user is off)
        password=redis_password,
        socket_timeout=3,
        socket_connect_timeout=3,
    )
    try:
        await redis.ping()
        await redis.flushdb()
    except Exception as exc:
        raise PreflightError(f"Redis on 127.0.0.1:{cfg.redis_port}: {exc}; {DEPLOY_HINT}") from None
    finally:
        await redis.aclose()

    try:
        conn = await asyncpg.connect(
            host=cfg.pg_host,
            port=cfg.pg_port,
            user="gekko",
            password=pg_password,
            database="gekko",
            timeout=5,
        )
    except Exception as exc:
        raise PreflightError(
            f"PostgreSQL on {cfg.pg_host}:{cfg.pg_port}: {exc}; {DEPLOY_HINT}"
        ) from None
    try:
        # WITH (FORCE) ends sessions a crashed earlier run may have left behind (PostgreSQL 13+).
        await conn.execute(f'DROP DATABASE IF EXISTS "{cfg.database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{cfg.database}" OWNER gekko')
    except asyncpg.InsufficientPrivilegeError as exc:
        raise PreflightError(
            f"role gekko may not create databases ({exc}); the bench needs its own database"
        ) from None
    finally:
        await conn.close()


def _migrate(database_url: str, log_dir: Path) -> None:
    env = {**os.environ, "GEKKO_DATABASE_URL": database_url, "GEKKO_LOG_LEVEL": "WARNING"}
    log_path = log_dir / "migrate.log"
    with log_path.open("wb") as log:
        proc = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gekko.cli", "migrate"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    if proc.returncode != 0:
        raise PreflightError(f"gekko migrate failed (exit {proc.returncode}); see {log_path}")


def prepare(cfg: BenchSettings, log_dir: Path) -> Datastores:
    """Check the deployed datastores, reset the bench's share of them, and migrate."""
    pg_password = read_secret(cfg.secrets_dir, "postgres_password")
    redis_password = read_secret(cfg.secrets_dir, "redis_password")
    asyncio.run(_prepare(cfg, pg_password, redis_password))
    database_url = (
        f"postgresql://gekko:{quote(pg_password, safe='')}@{cfg.pg_host}:{cfg.pg_port}/"
        f"{cfg.database}"
    )
    admin = f"gekko-admin:{quote(redis_password, safe='')}"
    redis_url = f"redis://{admin}@127.0.0.1:{cfg.redis_port}/{cfg.redis_db}"
    _migrate(database_url, log_dir)
    return Datastores(database_url, redis_url)


def drop_database(cfg: BenchSettings) -> None:
    """Best effort, at exit: leave no bench data in the deployed PostgreSQL."""

    async def _drop() -> None:
        conn = await asyncpg.connect(
            host=cfg.pg_host,
            port=cfg.pg_port,
            user="gekko",
            password=read_secret(cfg.secrets_dir, "postgres_password"),
            database="gekko",
            timeout=5,
        )
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{cfg.database}" WITH (FORCE)')
        finally:
            await conn.close()

    try:
        asyncio.run(_drop())
    except Exception as exc:
        print(f"bench: could not drop database {cfg.database}: {exc}", file=sys.stderr)
