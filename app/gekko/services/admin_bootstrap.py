"""The deployment's own accounts, made by `gekko migrate` from the controller's secrets:

- the first admin (GEKKO_BOOTSTRAP_ADMIN_*), created once per environment, with the TOTP seed
  the deploy generated (an admin needs MFA). An existing admin of that name is left as it is
  (it may have changed its password or device), except that one without MFA gets the seed. The
  name held by anyone else is an error, never a promotion: whoever registered it first is not
  made an admin;
- the monitor (GEKKO_BOOTSTRAP_MONITOR_*), a viewer the deploy's own checks sign in as (verify,
  scale, rollback): it reads the platform's state and can change nothing. Its password follows
  the secrets store, so a rotated password applies at the next deploy.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

import asyncpg
import pyotp

from gekko.events import USER_REGISTERED
from gekko.outbox import add_event
from gekko.security.crypto import DataKeys
from gekko.security.passwords import hash_password, verify_password
from gekko.security.rbac import Role
from gekko.services.user_mfa import enrol_confirmed, has_mfa

DEFAULT_ADMIN_USERNAME = "admin"
DEFAULT_ADMIN_EMAIL = "admin@gekko.example.com"
DEFAULT_MONITOR_USERNAME = "monitor"
DEFAULT_MONITOR_EMAIL = "monitor@gekko.example.com"


class BootstrapError(Exception):
    pass


@dataclass(frozen=True)
class BootstrapAccount:
    username: str
    email: str
    password: str
    role: Role = Role.ADMIN
    totp_secret: str = ""  # base32; an admin's second factor


def check_totp_secret(secret: str) -> None:
    try:
        pyotp.TOTP(secret).now()
    except (binascii.Error, ValueError):
        raise BootstrapError(
            "the admin's TOTP seed is not base32 (A-Z, 2-7); generate one with "
            "`python3 -c 'import pyotp; print(pyotp.random_base32(32))'`"
        ) from None


async def _create(conn: asyncpg.Connection, account: BootstrapAccount, hint: str) -> int:
    try:
        user_id = await conn.fetchval(
            """
            INSERT INTO users.accounts (username, email, password_hash, role)
            VALUES ($1, $2, $3, $4) RETURNING id
            """,
            account.username,
            account.email.lower(),
            hash_password(account.password),
            str(account.role),
        )
    except asyncpg.UniqueViolationError:
        raise BootstrapError(
            f"the e-mail address {account.email!r} belongs to another account; choose another "
            f"for the {account.role} ({hint})"
        ) from None
    await add_event(
        conn, "users", USER_REGISTERED, {"user_id": user_id, "username": account.username}
    )
    return user_id


async def _existing(
    conn: asyncpg.Connection, account: BootstrapAccount, hint: str
) -> asyncpg.Record | None:
    row = await conn.fetchrow(
        "SELECT id, role, password_hash FROM users.accounts WHERE lower(username) = lower($1)",
        account.username,
    )
    if row is not None and row["role"] != account.role:
        article = "an" if account.role == Role.ADMIN else "a"
        raise BootstrapError(
            f"the user name {account.username!r} belongs to a {row['role']}, not {article} "
            f"{account.role}; rename that account or choose another name ({hint})"
        )
    return row


async def ensure_admin(conn: asyncpg.Connection, admin: BootstrapAccount, keys: DataKeys) -> str:
    """What happened: "created", "given MFA" or "already there"."""
    hint = "gekko_admin_username, gekko_admin_email"
    async with conn.transaction():
        row = await _existing(conn, admin, hint)
        user_id = row["id"] if row is not None else await _create(conn, admin, hint)
        state = "already there" if row is not None else "created"
        if admin.totp_secret and not await has_mfa(conn, user_id):
            await enrol_confirmed(conn, keys, user_id, admin.totp_secret)
            state = "created with MFA" if row is None else "given MFA"
    return state


async def ensure_monitor(conn: asyncpg.Connection, monitor: BootstrapAccount) -> str:
    """What happened: "created", "password updated" or "already there"."""
    hint = "gekko_monitor_username, gekko_monitor_email"
    async with conn.transaction():
        row = await _existing(conn, monitor, hint)
        if row is None:
            await _create(conn, monitor, hint)
            return "created"
        if verify_password(row["password_hash"], monitor.password):
            return "already there"
        await conn.execute(
            "UPDATE users.accounts SET password_hash = $2 WHERE id = $1",
            row["id"],
            hash_password(monitor.password),
        )
    return "password updated"


async def ensure_accounts(
    database_url: str,
    admin: BootstrapAccount | None,
    monitor: BootstrapAccount | None,
    keys: DataKeys | None,
) -> list[str]:
    """The output lines of what was done for each account given."""
    lines = []
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        if admin is not None:
            if admin.totp_secret:
                check_totp_secret(admin.totp_secret)
                if keys is None:
                    raise BootstrapError(
                        "GEKKO_DATA_KEYS is needed to store the admin's TOTP seed encrypted"
                    )
            state = await ensure_admin(conn, admin, keys)  # type: ignore[arg-type]
            lines.append(f"admin {admin.username!r} {state}")
        if monitor is not None:
            state = await ensure_monitor(conn, monitor)
            lines.append(f"viewer {monitor.username!r} {state}")
    finally:
        await conn.close()
    return lines
