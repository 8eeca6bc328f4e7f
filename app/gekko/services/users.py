"""users: registration, login (JWT issue) and the caller's profile."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

import asyncpg
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from gekko.events import USER_REGISTERED
from gekko.outbox import add_event
from gekko.problems import ProblemError
from gekko.security import DEFAULT_TOKEN_TTL_S, hash_password, issue_token, verify_password
from gekko.services.deps import Pool, UserId
from gekko.services.wiring import start_relay, stop_all, wake_relay

router = APIRouter(prefix="/api/v1/users", tags=["users"])

# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is not our job.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A precomputed hash so a login for an unknown user costs the same time as a wrong password.
_DUMMY_HASH = hash_password("gekko-timing-equaliser")


class RegisterRequest(BaseModel):
    username: str = Field(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.\-]+$")
    email: str = Field(max_length=254)
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
    created_at: datetime


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=256)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - OAuth token type, not a secret
    expires_in: int


async def start(app: FastAPI) -> None:
    start_relay(app, "users")


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


@router.post("/login", response_model=TokenOut)
async def login(body: LoginRequest, pool: Pool, request: Request) -> JSONResponse:
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
        raise ProblemError(
            401,
            "invalid username or password",
            title="Unauthorized",
            slug="invalid-credentials",
        )
    token = issue_token(row["id"], request.app.state.settings.jwt_secret)
    out = TokenOut(access_token=token, expires_in=DEFAULT_TOKEN_TTL_S)
    return JSONResponse(out.model_dump(), headers={"Cache-Control": "no-store"})


@router.get("/me", response_model=ProfileOut)
async def me(user_id: UserId, pool: Pool) -> ProfileOut:
    row = await pool.fetchrow(
        "SELECT id, username, email, created_at FROM users.accounts WHERE id = $1", user_id
    )
    if row is None:
        raise ProblemError(404, "user not found", slug="user-not-found")
    return ProfileOut(**dict(row))
