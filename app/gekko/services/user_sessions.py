"""users: sessions, refresh token rotation, logout, and the published token keys (JWKS).

Part of the users service (its router is included by gekko.services.users). The session rules
are in gekko.security.sessions; the database rows are users.sessions and users.refresh_tokens.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from gekko.problems import ProblemError
from gekko.security.access import unauthorized
from gekko.security.events import SecurityEvents
from gekko.security.rbac import parse_role
from gekko.security.revocations import revoke_sessions
from gekko.security.sessions import SessionPolicy, new_refresh_token, refresh_token_hash
from gekko.security.tokens import ACCESS_TOKEN_TTL_S, SigningKey
from gekko.services.deps import Claims, Pool

PREFIX = "/api/v1/users"
# Served by the users service beside gekko.services.users' own router (see its ROUTERS).
router = APIRouter(prefix=PREFIX, tags=["users"])
log = logging.getLogger("gekko.users")

# Verifiers allow this much clock skew past `exp`, so a revocation must outlast it.
_EXPIRY_LEEWAY_S = 5


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - OAuth token type, not a secret
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=256)


class SessionOut(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str
    source_address: str
    current: bool


def _policy(request: Request) -> SessionPolicy:
    return request.app.state.settings.sessions


def _token_answer(
    request: Request,
    user_id: int,
    role: str,
    session_id: str,
    refresh: str,
    mfa_at: datetime | None,
) -> JSONResponse:
    signing_key: SigningKey = request.app.state.signing_key
    mfa_epoch = int(mfa_at.timestamp()) if mfa_at is not None else None
    out = TokenOut(
        access_token=signing_key.issue(
            user_id, session_id, role=parse_role(role), mfa_at=mfa_epoch
        ),
        expires_in=ACCESS_TOKEN_TTL_S,
        refresh_token=refresh,
        refresh_expires_in=_policy(request).refresh_ttl_s,
    )
    # Tokens must never sit in a shared cache.
    return JSONResponse(out.model_dump(), headers={"Cache-Control": "no-store"})


async def _add_refresh_token(conn: asyncpg.Connection, session_id: uuid.UUID, ttl_s: int) -> str:
    token = new_refresh_token()
    await conn.execute(
        """
        INSERT INTO users.refresh_tokens (token_hash, session_id, expires_at)
        VALUES ($1, $2, now() + make_interval(secs => $3))
        """,
        refresh_token_hash(token),
        session_id,
        ttl_s,
    )
    return token


async def start_session(
    request: Request,
    pool: asyncpg.Pool,
    user_id: int,
    source_address: str,
    mfa_at: float | None = None,
) -> JSONResponse:
    """A new session for a user who just proved who they are (`mfa_at`: with a second factor,
    at that time): its first token pair."""
    policy = _policy(request)
    session_id = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        # Read under a share lock: a role change in flight commits first, and then ends this
        # session too, or waits for it; either way no token carries a role already taken away.
        role = await conn.fetchval(
            "SELECT role FROM users.accounts WHERE id = $1 FOR SHARE", user_id
        )
        proved = await conn.fetchval(
            """
            INSERT INTO users.sessions
                (id, user_id, expires_at, user_agent, source_address, mfa_at)
            VALUES ($1, $2, now() + make_interval(secs => $3), $4, $5, to_timestamp($6))
            RETURNING mfa_at
            """,
            session_id,
            user_id,
            policy.max_lifetime_s,
            request.headers.get("user-agent", "")[:256],
            source_address,
            mfa_at,
        )
        refresh = await _add_refresh_token(conn, session_id, policy.refresh_ttl_s)
    events(request).record(
        "login-success",
        user_id=user_id,
        source=source_address,
        session=session_id,
        second_factor=proved is not None,
    )
    return _token_answer(request, user_id, role, str(session_id), refresh, proved)


async def end_sessions(
    request: Request, conn: asyncpg.Connection, session_ids: list[uuid.UUID], reason: str
) -> None:
    await conn.execute(
        """
        UPDATE users.sessions SET ended_at = now(), ended_reason = $2
        WHERE id = ANY($1::uuid[]) AND ended_at IS NULL
        """,
        session_ids,
        reason,
    )
    # Their access tokens are refused everywhere until the last one issued has expired. With
    # Redis down the sessions still end (no refresh, no new token), and the access tokens
    # already out stay valid until they expire: logged and counted, never a failed logout.
    until = time.time() + ACCESS_TOKEN_TTL_S + _EXPIRY_LEEWAY_S
    try:
        await revoke_sessions(request.app.state.redis, [str(s) for s in session_ids], until)
    except RedisError as exc:
        log.error("ended sessions not published to Redis (%s): %s", exc, reason)
        events(request).record("revocation-not-published", reason=reason)


def events(request: Request) -> SecurityEvents:
    return request.app.state.security_events


@router.post("/token/refresh", response_model=TokenOut)
async def refresh(body: RefreshRequest, pool: Pool, request: Request) -> JSONResponse:
    """A new token pair for a refresh token, which is used up: presenting it again ends the
    session (it can only have been copied)."""
    policy = _policy(request)
    refused: str | None = None
    async with pool.acquire() as conn, conn.transaction():
        # The token is read and marked used in one statement, under a row lock, so of two
        # refreshes with one token the second always sees it used.
        row = await conn.fetchrow(
            """
            WITH presented AS (
                SELECT token_hash, session_id, expires_at, used_at
                FROM users.refresh_tokens WHERE token_hash = $1 FOR UPDATE
            ), marked AS (
                UPDATE users.refresh_tokens t SET used_at = now()
                FROM presented p
                WHERE t.token_hash = p.token_hash AND p.used_at IS NULL
            )
            SELECT p.session_id, p.used_at IS NOT NULL AS reused, s.user_id, a.role, s.mfa_at,
                   s.ended_at IS NOT NULL AS ended,
                   p.expires_at < now() OR s.expires_at < now() AS expired
            FROM presented p JOIN users.sessions s ON s.id = p.session_id
            JOIN users.accounts a ON a.id = s.user_id
            """,
            refresh_token_hash(body.refresh_token),
        )
        if row is None:
            refused = "unknown refresh token"
        elif row["ended"]:
            refused = "the session has ended; sign in again"
        elif row["reused"]:
            refused = "refresh token was already used; the session has ended"
            await end_sessions(request, conn, [row["session_id"]], "refresh-token-reuse")
        elif row["expired"]:
            refused = "refresh token has expired; sign in again"
        else:
            await conn.execute(
                "UPDATE users.sessions SET last_used_at = now() WHERE id = $1", row["session_id"]
            )
            new_token = await _add_refresh_token(conn, row["session_id"], policy.refresh_ttl_s)
    # Refused after the commit, so a session ended for reuse stays ended.
    if refused is not None:
        if row is not None and row["reused"] and not row["ended"]:
            events(request).record(
                "refresh-token-reuse", user_id=row["user_id"], session=row["session_id"]
            )
        raise ProblemError(401, refused, title="Unauthorized", slug="invalid-refresh-token")
    events(request).record("token-refreshed", user_id=row["user_id"], session=row["session_id"])
    return _token_answer(
        request, row["user_id"], row["role"], str(row["session_id"]), new_token, row["mfa_at"]
    )


@router.post("/logout", status_code=204)
async def logout(claims: Claims, pool: Pool, request: Request) -> Response:
    """Ends the caller's session: its refresh token and access tokens stop working."""
    try:
        session_id = uuid.UUID(claims.session_id)
    except ValueError:
        raise unauthorized("the token's session was not issued by this service") from None
    async with pool.acquire() as conn, conn.transaction():
        await end_sessions(request, conn, [session_id], "logout")
    events(request).record("logout", user_id=claims.user_id)
    return Response(status_code=204)


@router.get("/sessions", response_model=list[SessionOut])
async def list_sessions(claims: Claims, pool: Pool) -> list[SessionOut]:
    """The caller's open sessions, newest first."""
    rows = await pool.fetch(
        """
        SELECT id, created_at, last_used_at, expires_at, user_agent, source_address
        FROM users.sessions
        WHERE user_id = $1 AND ended_at IS NULL AND expires_at > now()
        ORDER BY created_at DESC
        """,
        claims.user_id,
    )
    return [
        SessionOut(**{**dict(r), "id": str(r["id"]), "current": str(r["id"]) == claims.session_id})
        for r in rows
    ]


@router.delete("/sessions/{session_id}", status_code=204)
async def end_session(
    session_id: uuid.UUID, claims: Claims, pool: Pool, request: Request
) -> Response:
    """Ends one of the caller's sessions (another device, or this one). Another user's session
    is answered like one that does not exist."""
    async with pool.acquire() as conn, conn.transaction():
        owner = await conn.fetchval(
            "SELECT user_id FROM users.sessions WHERE id = $1 AND ended_at IS NULL", session_id
        )
        if owner != claims.user_id:
            raise ProblemError(404, "no such open session", slug="session-not-found")
        await end_sessions(request, conn, [session_id], "ended-by-user")
    events(request).record("session-ended", user_id=claims.user_id)
    return Response(status_code=204)


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> JSONResponse:
    """The public keys access tokens are signed with (RFC 7517), by `kid`."""
    document: dict[str, Any] = request.app.state.verify_keys.jwks()
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})
