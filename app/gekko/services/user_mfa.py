"""users: second factors. Enrolment (TOTP with recovery codes), the second step of a sign-in,
step-up for sensitive actions, and turning MFA off.

Part of the users service (its router is included by gekko.services.users, whose ACCESS table
declares each route's permission). The factor rules are in gekko.security.mfa; the seeds are
encrypted with gekko.security.crypto's data keys, bound to their row.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import asyncpg
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from gekko.problems import ProblemError
from gekko.security.access import source_address, unauthorized
from gekko.security.crypto import DataKeys
from gekko.security.lockout import LoginGuard
from gekko.security.mfa import (
    new_recovery_codes,
    new_totp_secret,
    provisioning_uri,
    recovery_code_hash,
    totp_step,
)
from gekko.security.rbac import MFA_REQUIRED_ROLES, parse_role
from gekko.security.tokens import (
    ACCESS_TOKEN_TTL_S,
    MFA_CHALLENGE_TTL_S,
    SigningKey,
    TokenError,
    decode_mfa_challenge,
)
from gekko.services.deps import Claims, Pool
from gekko.services.sign_in_guard import refused, unless_redis_is_down
from gekko.services.user_sessions import PREFIX, events, start_session

router = APIRouter(prefix=PREFIX, tags=["users"])


class MfaChallengeOut(BaseModel):
    mfa_required: bool = True
    mfa_token: str
    expires_in: int


class MfaLoginRequest(BaseModel):
    mfa_token: str = Field(min_length=1, max_length=2048)
    code: str = Field(min_length=6, max_length=32)


class CodeIn(BaseModel):
    code: str = Field(min_length=6, max_length=32)


class EnrolmentOut(BaseModel):
    secret: str
    otpauth_uri: str


class AccessTokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - OAuth token type, not a secret
    expires_in: int


class ConfirmedOut(AccessTokenOut):
    recovery_codes: list[str]


class MfaStatusOut(BaseModel):
    enabled: bool
    confirmed_at: datetime | None
    recovery_codes_left: int


def seed_context(user_id: int) -> str:
    """Where a seed lives: its ciphertext decrypts in this row only."""
    return f"users.mfa/{user_id}"


def _keys(request: Request) -> DataKeys:
    return request.app.state.data_keys


def _no_store(body: BaseModel) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


def _wrong_code(status: int = 401) -> ProblemError:
    return ProblemError(
        status,
        "the code is not valid (a TOTP code works once; check the device's clock) and is not an "
        "unused recovery code",
        title="Unauthorized" if status == 401 else "Bad Request",
        slug="invalid-mfa-code",
    )


async def enrol_confirmed(
    conn: asyncpg.Connection, keys: DataKeys, user_id: int, secret: str, step: int = 0
) -> list[str]:
    """Store a confirmed seed for the user (replacing any) with fresh recovery codes; returns
    the codes, which exist nowhere else from now on."""
    await conn.execute(
        """
        INSERT INTO users.mfa (user_id, secret_encrypted, confirmed_at, last_step)
        VALUES ($1, $2, now(), $3)
        ON CONFLICT (user_id) DO UPDATE SET secret_encrypted = EXCLUDED.secret_encrypted,
            created_at = now(), confirmed_at = now(), last_step = EXCLUDED.last_step
        """,
        user_id,
        keys.encrypt(secret.encode("ascii"), seed_context(user_id)),
        step,
    )
    codes = new_recovery_codes()
    await conn.execute("DELETE FROM users.recovery_codes WHERE user_id = $1", user_id)
    await conn.executemany(
        "INSERT INTO users.recovery_codes (user_id, code_hash) VALUES ($1, $2)",
        [(user_id, recovery_code_hash(code)) for code in codes],
    )
    return codes


async def _accept_code(
    conn: asyncpg.Connection, keys: DataKeys, user_id: int, code: str
) -> str | None:
    """Use up `code` for this user's confirmed MFA: "totp" or "recovery-code", None if wrong.
    Both are marked used in the caller's transaction, so a code never works twice."""
    row = await conn.fetchrow(
        """
        SELECT secret_encrypted, last_step FROM users.mfa
        WHERE user_id = $1 AND confirmed_at IS NOT NULL FOR UPDATE
        """,
        user_id,
    )
    if row is None:
        return None
    secret = keys.decrypt(row["secret_encrypted"], seed_context(user_id)).decode("ascii")
    step = totp_step(secret, code, after_step=row["last_step"])
    if step is not None:
        await conn.execute("UPDATE users.mfa SET last_step = $2 WHERE user_id = $1", user_id, step)
        return "totp"
    digest = recovery_code_hash(code)
    if digest is not None and await conn.fetchval(
        """
        UPDATE users.recovery_codes SET used_at = now()
        WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL RETURNING true
        """,
        user_id,
        digest,
    ):
        return "recovery-code"
    return None


async def has_mfa(pool: asyncpg.Pool | asyncpg.Connection, user_id: int) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT confirmed_at IS NOT NULL FROM users.mfa WHERE user_id = $1", user_id
        )
    )


def challenge(request: Request, user_id: int) -> JSONResponse:
    """The answer to a right password for an account with MFA: the sign-in's second step."""
    signing_key: SigningKey = request.app.state.signing_key
    return _no_store(
        MfaChallengeOut(
            mfa_token=signing_key.issue_mfa_challenge(user_id), expires_in=MFA_CHALLENGE_TTL_S
        )
    )


async def _checked_code(
    request: Request, conn: asyncpg.Connection, user_id: int, username: str, code: str
) -> str:
    """A code for a sign-in or step-up, under the same lockout as passwords: wrong codes count
    against the account and the source, and a locked account gets no code checked."""
    guard: LoginGuard = request.app.state.login_guard
    source = source_address(request)
    lock = await unless_redis_is_down(guard.lock(username, source), None)
    if lock is not None:
        events(request).record("login-refused-locked", scope=lock.scope, source=source)
        raise refused(lock)
    kind = await _accept_code(conn, _keys(request), user_id, code)
    if kind is None:
        events(request).record("mfa-failure", subject=user_id, source=source)
        lock = await unless_redis_is_down(guard.failed(username, source), None)
        if lock is not None:
            events(request).record(
                "lockout", scope=lock.scope, source=source, seconds=lock.retry_after_s
            )
            raise refused(lock)
        raise _wrong_code()
    events(request).record(f"mfa-{kind}", user_id=user_id)
    return kind


@router.post("/login/mfa", response_model=None)
async def login_mfa(body: MfaLoginRequest, pool: Pool, request: Request) -> JSONResponse:
    """The second step of a sign-in: the token from the password step and a TOTP code (or a
    recovery code). Each sign-in token completes once."""
    try:
        pending = decode_mfa_challenge(body.mfa_token, request.app.state.verify_keys)
    except TokenError as exc:
        raise ProblemError(
            401,
            f"{exc}; sign in with your password again",
            title="Unauthorized",
            slug="invalid-mfa-token",
        ) from None
    async with pool.acquire() as conn:
        username = await conn.fetchval(
            "SELECT username FROM users.accounts WHERE id = $1", pending.user_id
        )
        if username is None:
            raise unauthorized("the account no longer exists")
        try:
            async with conn.transaction():
                fresh = await conn.fetchval(
                    """
                    INSERT INTO users.mfa_challenges_used (id, expires_at)
                    VALUES ($1, to_timestamp($2)) ON CONFLICT DO NOTHING RETURNING true
                    """,
                    pending.challenge_id,
                    pending.expires_at,
                )
                if not fresh:
                    raise ProblemError(
                        401,
                        "this sign-in was already completed; sign in with your password again",
                        title="Unauthorized",
                        slug="invalid-mfa-token",
                    )
                await _checked_code(request, conn, pending.user_id, username, body.code)
        finally:
            await conn.execute("DELETE FROM users.mfa_challenges_used WHERE expires_at < now()")
    guard: LoginGuard = request.app.state.login_guard
    await unless_redis_is_down(guard.succeeded(username), None)
    return await start_session(
        request, pool, pending.user_id, source_address(request), mfa_at=time.time()
    )


@router.get("/mfa", response_model=MfaStatusOut)
async def mfa_status(claims: Claims, pool: Pool) -> MfaStatusOut:
    row = await pool.fetchrow(
        """
        SELECT m.confirmed_at,
               (SELECT count(*) FROM users.recovery_codes r
                WHERE r.user_id = $1 AND r.used_at IS NULL) AS codes_left
        FROM (SELECT $1::bigint AS user_id) u
        LEFT JOIN users.mfa m ON m.user_id = u.user_id
        """,
        claims.user_id,
    )
    confirmed = row["confirmed_at"]
    return MfaStatusOut(
        enabled=confirmed is not None,
        confirmed_at=confirmed,
        recovery_codes_left=row["codes_left"] if confirmed else 0,
    )


@router.post("/mfa/enroll", response_model=EnrolmentOut)
async def enrol(claims: Claims, pool: Pool, request: Request) -> JSONResponse:
    """A new TOTP seed for the caller's authenticator app, pending until /mfa/confirm. An
    account that already has MFA must turn it off first (with a fresh code)."""
    secret = new_totp_secret()
    async with pool.acquire() as conn, conn.transaction():
        username = await conn.fetchval(
            "SELECT username FROM users.accounts WHERE id = $1", claims.user_id
        )
        if username is None:
            raise ProblemError(404, "user not found", slug="user-not-found")
        if await has_mfa(conn, claims.user_id):
            raise ProblemError(
                409,
                "MFA is already on; to change the device, turn it off (DELETE /api/v1/users/mfa) "
                "and enrol again",
                slug="mfa-already-enabled",
            )
        await conn.execute(
            """
            INSERT INTO users.mfa (user_id, secret_encrypted) VALUES ($1, $2)
            ON CONFLICT (user_id) DO UPDATE SET secret_encrypted = EXCLUDED.secret_encrypted,
                created_at = now(), last_step = 0
            """,
            claims.user_id,
            _keys(request).encrypt(secret.encode("ascii"), seed_context(claims.user_id)),
        )
    events(request).record("mfa-enrolment-started", user_id=claims.user_id)
    return _no_store(EnrolmentOut(secret=secret, otpauth_uri=provisioning_uri(secret, username)))


async def _mfa_access_token(
    request: Request, conn: asyncpg.Connection, claims: Claims, role: str
) -> str:
    """Marks the caller's session as having proved a second factor now; its new access token."""
    now = time.time()
    try:
        session_id = uuid.UUID(claims.session_id)
    except ValueError:
        raise unauthorized("the token's session was not issued by this service") from None
    await conn.execute(
        "UPDATE users.sessions SET mfa_at = to_timestamp($2) WHERE id = $1 AND ended_at IS NULL",
        session_id,
        now,
    )
    signing_key: SigningKey = request.app.state.signing_key
    return signing_key.issue(
        claims.user_id, claims.session_id, role=parse_role(role), mfa_at=int(now)
    )


@router.post("/mfa/confirm", response_model=ConfirmedOut)
async def confirm(body: CodeIn, claims: Claims, pool: Pool, request: Request) -> JSONResponse:
    """Turns MFA on with a code from the newly enrolled app. Answers the recovery codes, shown
    this once, and an access token for this session with the second factor proved."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """
            SELECT m.secret_encrypted, a.role FROM users.mfa m
            JOIN users.accounts a ON a.id = m.user_id
            WHERE m.user_id = $1 AND m.confirmed_at IS NULL FOR UPDATE OF m
            """,
            claims.user_id,
        )
        if row is None:
            raise ProblemError(
                409,
                "no enrolment is waiting; start one with POST /api/v1/users/mfa/enroll",
                slug="mfa-not-enrolling",
            )
        stored = row["secret_encrypted"]
        secret = _keys(request).decrypt(stored, seed_context(claims.user_id)).decode("ascii")
        step = totp_step(secret, body.code, after_step=0)
        if step is None:
            raise _wrong_code(400)
        codes = await enrol_confirmed(conn, _keys(request), claims.user_id, secret, step)
        token = await _mfa_access_token(request, conn, claims, row["role"])
    events(request).record("mfa-enabled", user_id=claims.user_id)
    return _no_store(
        ConfirmedOut(access_token=token, expires_in=ACCESS_TOKEN_TTL_S, recovery_codes=codes)
    )


@router.post("/mfa/step-up", response_model=AccessTokenOut)
async def step_up(body: CodeIn, claims: Claims, pool: Pool, request: Request) -> JSONResponse:
    """Proves the second factor again for a sensitive action: an access token for this session
    dated now."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT username, role FROM users.accounts WHERE id = $1", claims.user_id
        )
        if row is None:
            raise ProblemError(404, "user not found", slug="user-not-found")
        if not await has_mfa(conn, claims.user_id):
            raise ProblemError(
                409, "MFA is not on for this account; enrol first", slug="mfa-not-enabled"
            )
        await _checked_code(request, conn, claims.user_id, row["username"], body.code)
        token = await _mfa_access_token(request, conn, claims, row["role"])
    return _no_store(AccessTokenOut(access_token=token, expires_in=ACCESS_TOKEN_TTL_S))


@router.delete("/mfa", status_code=204)
async def disable(claims: Claims, pool: Pool, request: Request) -> Response:
    """Turns MFA off (a step-up within the last minutes is needed). Operators and admins
    cannot: their role needs it."""
    if claims.role in MFA_REQUIRED_ROLES:
        raise ProblemError(
            409, f"the {claims.role} role needs MFA; it stays on", slug="mfa-required-for-role"
        )
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM users.mfa WHERE user_id = $1", claims.user_id)
        await conn.execute("DELETE FROM users.recovery_codes WHERE user_id = $1", claims.user_id)
    events(request).record("mfa-disabled", user_id=claims.user_id)
    return Response(status_code=204)
