"""users: registration, login and the caller's profile.

Sessions, token refresh, logout and the published keys are in gekko.services.user_sessions.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime
from typing import Annotated, TypeVar

import asyncpg
from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from gekko.events import USER_REGISTERED
from gekko.outbox import add_event
from gekko.problems import ProblemError
from gekko.security.access import source_address
from gekko.security.crypto import DataKeys
from gekko.security.lockout import LoginGuard
from gekko.security.passwords import hash_password, verify_password
from gekko.security.rbac import (
    ADMINISTER,
    ADMINISTER_STEP_UP,
    PUBLIC,
    SIGNED_IN,
    SIGNED_IN_STEP_UP,
    AccessTable,
    Role,
)
from gekko.security.tokens import SigningKey
from gekko.services import user_audit, user_mfa, user_sessions
from gekko.services.deps import Claims, Pool, UserId
from gekko.services.inputs import StoredText
from gekko.services.sign_in_guard import refused, unless_redis_is_down
from gekko.services.user_mfa import MfaChallengeOut
from gekko.services.user_sessions import TokenOut, end_sessions, start_session
from gekko.services.wiring import start_relay, stop_all, wake_relay

PREFIX = user_sessions.PREFIX
router = APIRouter(prefix=PREFIX, tags=["users"])
# The routers make up the service; each route's permission is in ACCESS.
ROUTERS = (router, user_sessions.router, user_mfa.router, user_audit.router)
# Who may call each route (gekko.security.rbac); a route missing here stops the service.
ACCESS: AccessTable = {
    ("POST", PREFIX + "/register"): PUBLIC,
    ("POST", PREFIX + "/login"): PUBLIC,
    ("POST", PREFIX + "/login/mfa"): PUBLIC,
    ("POST", PREFIX + "/token/refresh"): PUBLIC,
    ("GET", PREFIX + "/.well-known/jwks.json"): PUBLIC,
    ("GET", PREFIX + "/me"): SIGNED_IN,
    ("POST", PREFIX + "/logout"): SIGNED_IN,
    ("GET", PREFIX + "/sessions"): SIGNED_IN,
    ("DELETE", PREFIX + "/sessions/{session_id}"): SIGNED_IN,
    ("GET", PREFIX + "/mfa"): SIGNED_IN,
    ("POST", PREFIX + "/mfa/enroll"): SIGNED_IN,
    ("POST", PREFIX + "/mfa/confirm"): SIGNED_IN,
    ("POST", PREFIX + "/mfa/step-up"): SIGNED_IN,
    ("DELETE", PREFIX + "/mfa"): SIGNED_IN_STEP_UP,
    ("PUT", PREFIX + "/{user_id}/role"): ADMINISTER_STEP_UP,
    ("GET", PREFIX + "/audit"): ADMINISTER,
}
log = logging.getLogger("gekko.users")
T = TypeVar("T")

# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is not our job.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A precomputed hash so a login for an unknown user costs the same time as a wrong password.
_DUMMY_HASH = hash_password("gekko-timing-equaliser")


class RegisterRequest(BaseModel):
    username: str = Field(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.\-]+$")
    email: StoredText = Field(max_length=254)
    password: str = Field(min_length=8, max_length=256)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        value = value.strip().lower()
        if not _EMAIL.match(value):
            raise ValueError("not a valid email address")
        return value


class UserOut(BaseModel):
    id: int
    username: str
    email: str


class ProfileOut(UserOut):
    role: Role
    created_at: datetime


class RoleIn(BaseModel):
    role: Role


class RoleOut(BaseModel):
    id: int
    username: str
    role: Role


class LoginRequest(BaseModel):
    username: StoredText = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=256)


async def start(app: FastAPI) -> None:
    app.state.login_guard = LoginGuard(app.state.redis, app.state.settings.login_lockout)
    start_relay(app, "users")


def configure(app: FastAPI) -> None:
    # The only component with the private key (re-read when a rotation replaces it).
    app.state.signing_key = SigningKey(app.state.settings.jwt_signing_key_file)
    # The keys the TOTP seeds are encrypted with (re-read when a rotation replaces the file).
    app.state.data_keys = DataKeys(path=app.state.settings.data_keys_file)


async def stop(app: FastAPI) -> None:
    await stop_all(app)


@router.post("/register", status_code=201, response_model=UserOut)
async def register(body: RegisterRequest, pool: Pool, request: Request) -> UserOut:
    password_hash = await asyncio.to_thread(hash_password, body.password)
    try:
        # The account and its user.registered event commit together (transactional outbox).
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """
                INSERT INTO users.accounts (username, email, password_hash)
                VALUES ($1, $2, $3)
                RETURNING id, username, email
                """,
                body.username,
                body.email,
                password_hash,
            )
            await add_event(
                conn, "users", USER_REGISTERED, {"user_id": row["id"], "username": row["username"]}
            )
    except asyncpg.UniqueViolationError as exc:
        field = "email" if "email" in (exc.constraint_name or "") else "username"
        raise ProblemError(
            409, f"{field} is already registered", title="Conflict", slug="user-exists"
        ) from None
    wake_relay(request.app)
    return UserOut(**dict(row))


def _security_event(request: Request, event: str, **fields: object) -> None:
    request.app.state.security_events.record(event, **fields)


@router.post("/login", response_model=TokenOut | MfaChallengeOut)
async def login(body: LoginRequest, pool: Pool, request: Request) -> JSONResponse:
    guard: LoginGuard = request.app.state.login_guard
    source = source_address(request)
    # Refused before the password is checked, the right one included: guessing on gains nothing.
    lock = await unless_redis_is_down(guard.lock(body.username, source), None)
    if lock is not None:
        _security_event(request, "login-refused-locked", scope=lock.scope, source=source)
        raise refused(lock)
    row = await pool.fetchrow(
        """
        SELECT id, password_hash FROM users.accounts
        WHERE lower(username) = lower($1) OR email = lower($1)
        """,
        body.username,
    )
    stored_hash = row["password_hash"] if row else _DUMMY_HASH
    ok = await asyncio.to_thread(verify_password, stored_hash, body.password)
    if row is None or not ok:
        # The account it was aimed at, where one exists (never what was typed: people type
        # passwords into the name field).
        _security_event(request, "login-failure", source=source, subject=row and row["id"])
        lock = await unless_redis_is_down(guard.failed(body.username, source), None)
        if lock is not None:
            _security_event(
                request, "lockout", scope=lock.scope, source=source, seconds=lock.retry_after_s
            )
            raise refused(lock)
        raise ProblemError(
            401,
            "invalid username or password",
            title="Unauthorized",
            slug="invalid-credentials",
        )
    if await user_mfa.has_mfa(pool, row["id"]):
        # The failure count stays until the second factor is right too, so the password alone
        # never buys more code guesses.
        _security_event(request, "login-password-accepted", user_id=row["id"])
        return user_mfa.challenge(request, row["id"])
    await unless_redis_is_down(guard.succeeded(body.username), None)
    return await start_session(request, pool, row["id"], source)


@router.get("/me", response_model=ProfileOut)
async def me(user_id: UserId, pool: Pool) -> ProfileOut:
    row = await pool.fetchrow(
        "SELECT id, username, email, role, created_at FROM users.accounts WHERE id = $1", user_id
    )
    if row is None:
        raise ProblemError(404, "user not found", slug="user-not-found")
    return ProfileOut(**dict(row))


@router.put("/{user_id}/role", response_model=RoleOut)
async def set_role(
    user_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: RoleIn,
    claims: Claims,
    pool: Pool,
    request: Request,
) -> RoleOut:
    """An admin gives a user another role. The user's sessions end, so the new role (a
    demotion above all) applies at once: they sign in again."""
    if user_id == claims.user_id:
        raise ProblemError(
            409, "you cannot change your own role; ask another admin", slug="own-role"
        )
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE users.accounts SET role = $2 WHERE id = $1 RETURNING id, username, role",
            user_id,
            str(body.role),
        )
        if row is None:
            raise ProblemError(404, "user not found", slug="user-not-found")
        sessions = await conn.fetch(
            "SELECT id FROM users.sessions WHERE user_id = $1 AND ended_at IS NULL", user_id
        )
        await end_sessions(request, conn, [r["id"] for r in sessions], "role-changed")
    _security_event(request, "role-changed", user_id=user_id, role=body.role, by=claims.user_id)
    return RoleOut(**dict(row))
