"""asyncpg pool for the application (SQLAlchemy is used by migrations only)."""

from __future__ import annotations

import asyncpg


async def create_pool(database_url: str, *, max_size: int = 10) -> asyncpg.Pool:
    # min_size=0: the pool connects lazily, so a service starts (and reports itself degraded)
    # even while PostgreSQL is still coming up, instead of crash-looping.
    return await asyncpg.create_pool(
        dsn=database_url,
        min_size=0,
        max_size=max_size,
        command_timeout=5,
        max_inactive_connection_lifetime=60,
        timeout=3,
    )
