"""The deployment's first admin: created once per environment by `gekko migrate` when
GEKKO_BOOTSTRAP_ADMIN_PASSWORD is set (the deploy passes the password from the controller's
secrets). An existing admin of that name is left as it is; the name held by anyone else is an
error, never a promotion: whoever registered it first is not made an admin."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from gekko.events import USER_REGISTERED
from gekko.outbox import add_event
from gekko.security.passwords import hash_password
from gekko.security.rbac import Role

DEFAULT_ADMIN_USERNAME = "admin"
DEFAULT_ADMIN_EMAIL = "admin@gekko.example.com"


class BootstrapError(Exception):
    pass


@dataclass(frozen=True)
class BootstrapAdmin:
    username: str
    email: str
    password: str


async def ensure_admin(database_url: str, admin: BootstrapAdmin) -> bool:
    """True if the admin was created now, False if it already existed."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        async with conn.transaction():
            role = await conn.fetchval(
                "SELECT role FROM users.accounts WHERE lower(username) = lower($1)",
                admin.username,
            )
            if role == Role.ADMIN:
                return False
            if role is not None:
                raise BootstrapError(
                    f"the user name {admin.username!r} belongs to a {role}, not an admin; "
                    "rename that account or choose another admin name (gekko_admin_username)"
                )
            try:
                user_id = await conn.fetchval(
                    """
                    INSERT INTO users.accounts (username, email, password_hash, role)
                    VALUES ($1, $2, $3, 'admin') RETURNING id
                    """,
                    admin.username,
                    admin.email.lower(),
                    hash_password(admin.password),
                )
            except asyncpg.UniqueViolationError:
                raise BootstrapError(
                    f"the e-mail address {admin.email!r} belongs to another account; choose "
                    "another for the admin (gekko_admin_email)"
                ) from None
            await add_event(
                conn, "users", USER_REGISTERED, {"user_id": user_id, "username": admin.username}
            )
    finally:
        await conn.close()
    return True
