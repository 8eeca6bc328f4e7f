"""trading: accounts a user links by signing in at the venue (Coinbase OAuth2), as an alternative
to pasting an API key (gekko.services.venue_keys).

  POST /api/v1/trading/venue-links            (step-up, like linking a key) starts a sign-in:
       the answer's `authorize_url` is where the user's browser goes (Coinbase's consent page,
       with an unguessable `state` and a PKCE challenge); it is good for 10 minutes, once.
  POST /api/v1/trading/venue-links/complete   with the `state` and `code` Coinbase sent the
       browser back with (to GEKKO_COINBASE_OAUTH_REDIRECT_URI, the platform's page that posts
       them here): the code is exchanged for tokens, the link is checked with an account call,
       and kept like a key, of kind `oauth`: encrypted, never shown, removed with
       DELETE /api/v1/trading/venue-keys/{id} (which also revokes the grant at Coinbase).
  A sign-in started with `replaces` (the id of one of the user's links, broken or not) renews
  that link in place: same key id, so its orders stay reachable, and its old grant is revoked.

The sign-in is bound to the user who started it: another user's `state` is unknown to them.
The tokens are refreshed before they expire by whichever trading instance needs them
(gekko.services.venue_tokens).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import asyncpg
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gekko.exchanges import credentials
from gekko.exchanges.base import Exchange, ExchangeError, Mode, VenueHttp
from gekko.exchanges.coinbase import LinkedAccount, default_portfolio
from gekko.exchanges.oauth import (
    FixedTokens,
    OAuthClient,
    Tokens,
    client_refused,
    grant_refused,
    new_verifier,
)
from gekko.exchanges.venues import VENUES, Venue, VenueSettingsError, check
from gekko.problems import ProblemError
from gekko.security.crypto import DataKeys
from gekko.security.events import SecurityEvents
from gekko.security.rbac import TRADE, TRADE_STEP_UP, AccessTable
from gekko.services.deps import Pool, UserId, venue_mode
from gekko.services.inputs import StoredText
from gekko.services.venue_keys import KEY_COLUMNS, VenueKeyOut, refuse_beyond_limit
from gekko.services.venue_tokens import StoredTokens, link_fields, revoke, revoke_in_background

log = logging.getLogger(__name__)

PREFIX = "/api/v1/trading/venue-links"
router = APIRouter(prefix=PREFIX, tags=["trading"])
ACCESS: AccessTable = {
    ("POST", PREFIX): TRADE_STEP_UP,
    ("POST", PREFIX + "/complete"): TRADE,
}
# A sign-in is good this long (the user reads Coinbase's consent page meanwhile), and a user has
# at most this many under way.
REQUEST_TTL_S = 600
MAX_PENDING = 5


class LinkStartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    venue: Literal["coinbase"]
    label: StoredText = Field(default="", max_length=64)
    # One of your links of this venue to renew in place (a broken one: its orders stay yours
    # to settle and cancel).
    replaces: uuid.UUID | None = None


class LinkStartOut(BaseModel):
    authorize_url: str
    expires_at: datetime


class LinkCompleteIn(BaseModel):
    """What the venue sent the user's browser back with: `code`, or `error` if they declined."""

    model_config = ConfigDict(extra="forbid")
    state: str = Field(min_length=16, max_length=256)
    code: str | None = Field(default=None, min_length=1, max_length=2048)
    error: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _code_or_error(self) -> LinkCompleteIn:
        if (self.code is None) == (self.error is None):
            raise ValueError("give the `code` the venue sent back, or its `error`")
        return self


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _client(app: FastAPI, venue: Venue) -> OAuthClient:
    client = app.state.venue_oauth.get(venue.name)
    if client is None:
        raise VenueSettingsError(
            f"{venue.title} accounts cannot be linked by signing in here: the platform has no "
            f"OAuth client for it (GEKKO_{venue.name.upper()}_OAUTH_CLIENT_ID and the rest)"
        )
    return client


def _mode(request: Request) -> Mode:
    return venue_mode(request, "there is no venue account to link")


def _events(request: Request) -> SecurityEvents:
    return request.app.state.security_events


@router.post("", status_code=201, response_model=LinkStartOut)
async def start_link(
    body: LinkStartIn, user_id: UserId, pool: Pool, request: Request
) -> LinkStartOut:
    """Start linking your venue account: send your browser to `authorize_url`."""
    mode = _mode(request)
    venue = VENUES[body.venue]
    try:
        client = _client(request.app, venue)
    except VenueSettingsError as exc:
        raise ProblemError(409, str(exc), slug="venue-link-unavailable") from None
    if body.replaces is None:
        await refuse_beyond_limit(pool, user_id, venue)
    else:
        await _replaceable(pool, user_id, venue, mode, body.replaces)
    state, verifier = secrets.token_urlsafe(32), new_verifier()
    state_hash = _state_hash(state)
    keys: DataKeys = request.app.state.data_keys
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM trading.venue_link_requests WHERE expires_at < now()")
        pending = await conn.fetchval(
            "SELECT count(*) FROM trading.venue_link_requests WHERE user_id = $1", user_id
        )
        if pending >= MAX_PENDING:
            raise ProblemError(
                409,
                f"you have {pending} account sign-ins under way: finish one, or wait "
                f"{REQUEST_TTL_S // 60} minutes for them to lapse",
                slug="too-many-venue-links",
            )
        expires_at = await conn.fetchval(
            """
            INSERT INTO trading.venue_link_requests
                (state_hash, user_id, venue, mode, label, verifier_encrypted, replaces,
                 expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
            RETURNING expires_at
            """,
            state_hash,
            user_id,
            venue.name,
            mode.value,
            body.label,
            keys.encrypt(verifier.encode(), credentials.link_request_context(state_hash)),
            body.replaces,
            float(REQUEST_TTL_S),
        )
    _events(request).record("venue-link-started", user_id=user_id, venue=venue.name)
    return LinkStartOut(authorize_url=client.authorize_url(state, verifier), expires_at=expires_at)


async def _replaceable(
    pool: asyncpg.Pool, user_id: int, venue: Venue, mode: Mode, key_id: uuid.UUID
) -> None:
    found = await pool.fetchrow(
        "SELECT venue, mode, kind FROM trading.venue_keys"
        " WHERE id = $1 AND user_id = $2 AND removed_at IS NULL",
        key_id,
        user_id,
    )
    # Another user's link answers as a missing one.
    if found is None:
        raise ProblemError(404, "no such venue key", slug="venue-key-not-found")
    if (found["venue"], found["mode"], found["kind"]) != (venue.name, mode.value, "oauth"):
        raise ProblemError(
            409,
            f"only a {venue.title} account linked by signing in, in {mode.value} mode, can be "
            "renewed this way",
            slug="venue-key-not-renewable",
        )


@router.post("/complete", status_code=201, response_model=VenueKeyOut)
async def complete_link(
    body: LinkCompleteIn, user_id: UserId, pool: Pool, request: Request
) -> VenueKeyOut:
    """Finish linking with what the venue sent your browser back with; the link is kept like a
    venue key (see GET /api/v1/trading/venue-keys)."""
    app = request.app
    state_hash = _state_hash(body.state)
    # Used once: taken out whatever comes next.
    sign_in = await pool.fetchrow(
        "DELETE FROM trading.venue_link_requests WHERE state_hash = $1 AND user_id = $2"
        " RETURNING venue, mode, label, verifier_encrypted, replaces, expires_at > now() AS live",
        state_hash,
        user_id,
    )
    if sign_in is None or not sign_in["live"]:
        raise ProblemError(
            409,
            "this account sign-in is unknown, already finished or older than "
            f"{REQUEST_TTL_S // 60} minutes: start again (POST {PREFIX})",
            slug="venue-link-expired",
        )
    venue = VENUES[sign_in["venue"]]
    if body.error is not None:
        _events(request).record(
            "venue-link-declined", user_id=user_id, venue=venue.name, error=body.error[:64]
        )
        raise ProblemError(
            422,
            f"{venue.title} answered {body.error!r}: the account was not linked",
            slug="venue-link-declined",
        )
    mode = Mode(sign_in["mode"])
    if mode.value != app.state.settings.exchange_mode:
        raise ProblemError(
            409,
            "the environment's trading mode changed meanwhile: start again",
            slug="venue-link-expired",
        )
    verifier = app.state.data_keys.decrypt(
        sign_in["verifier_encrypted"], credentials.link_request_context(state_hash)
    ).decode()
    if sign_in["replaces"] is None:
        await refuse_beyond_limit(pool, user_id, venue)
    try:
        client = _client(app, venue)
        tokens, portfolio_id = await _grant_and_check(app, venue, mode, client, body.code, verifier)
    except (ExchangeError, VenueSettingsError) as exc:
        refused = _refusal(exc)
        _events(request).record(
            "venue-link-refused", user_id=user_id, venue=venue.name, status=refused.status
        )
        raise ProblemError(refused.status, refused.detail, slug="venue-link-not-verified") from None
    try:
        if sign_in["replaces"] is None:
            row = await _keep(app, user_id, venue, mode, sign_in["label"], tokens, portfolio_id)
        else:
            row = await _renew(app, user_id, sign_in["replaces"], tokens, portfolio_id)
    except BaseException:
        revoke_in_background(app, venue.name, link_fields(tokens, portfolio_id))
        raise
    _events(request).record(
        "venue-key-linked",
        user_id=user_id,
        venue=venue.name,
        key=str(row["id"]),
        hint=row["hint"],
        kind="oauth",
        renewed=sign_in["replaces"] is not None,
    )
    return VenueKeyOut(**dict(row))


async def _keep(
    app: FastAPI,
    user_id: int,
    venue: Venue,
    mode: Mode,
    label: str,
    tokens: Tokens,
    portfolio_id: str,
) -> asyncpg.Record:
    key_id = uuid.uuid4()
    return await app.state.pool.fetchrow(
        f"""
        INSERT INTO trading.venue_keys
            (id, user_id, venue, mode, label, hint, kind, credentials_encrypted)
        VALUES ($1, $2, $3, $4, $5, $6, 'oauth', $7)
        RETURNING {KEY_COLUMNS}
        """,  # noqa: S608 - a constant
        key_id,
        user_id,
        venue.name,
        mode.value,
        label,
        _hint(portfolio_id),
        credentials.seal(app.state.data_keys, key_id, link_fields(tokens, portfolio_id)),
    )


async def _renew(
    app: FastAPI, user_id: int, key_id: uuid.UUID, tokens: Tokens, portfolio_id: str
) -> asyncpg.Record:
    """The link's row with the new grant (and no longer broken); the old grant revoked."""
    async with app.state.pool.acquire() as conn, conn.transaction():
        old = await conn.fetchval(
            "SELECT credentials_encrypted FROM trading.venue_keys"
            " WHERE id = $1 AND user_id = $2 AND kind = 'oauth' AND removed_at IS NULL FOR UPDATE",
            key_id,
            user_id,
        )
        if old is None:
            raise ProblemError(
                409,
                "the link to renew was removed meanwhile: start again",
                slug="venue-link-expired",
            )
        row = await conn.fetchrow(
            f"""
            UPDATE trading.venue_keys
            SET credentials_encrypted = $2, hint = $3, broken_reason = NULL
            WHERE id = $1
            RETURNING {KEY_COLUMNS}
            """,  # noqa: S608 - a constant
            key_id,
            credentials.seal(app.state.data_keys, key_id, link_fields(tokens, portfolio_id)),
            _hint(portfolio_id),
        )
    app.state.venue_desk.forget(key_id)
    revoke_in_background(app, row["venue"], credentials.unseal(app.state.data_keys, key_id, old))
    return row


def _hint(portfolio_id: str) -> str:
    return "portfolio ..." + portfolio_id[-4:]


async def _grant_and_check(
    app: FastAPI, venue: Venue, mode: Mode, client: OAuthClient, code: str | None, verifier: str
) -> tuple[Tokens, str]:
    """The tokens for the code, and the portfolio the user granted, checked with an account
    call. A grant that cannot be used is revoked before the error is raised."""
    assert code is not None  # noqa: S101 - the model requires a code without an error
    http = VenueHttp(venue.name, 10.0)
    try:
        tokens = await client.exchange_code(http, code, verifier)
    finally:
        await http.close()
    probe = FixedTokens(tokens)
    adapter = venue.open_linked(mode, app.state.settings.venue_base_urls, LinkedAccount(probe, ""))
    try:
        portfolio_id = default_portfolio(await adapter.portfolios())  # type: ignore[attr-defined]
        if portfolio_id is None:
            raise VenueSettingsError(
                "no portfolio was granted (or several, none the default): link again and grant "
                "access to the portfolio to trade in"
            )
        await check(adapter)
    except BaseException:
        await revoke(client, tokens)
        raise
    finally:
        await adapter.close()
    return tokens, portfolio_id


def _refusal(error: ExchangeError | VenueSettingsError) -> credentials.Refusal:
    if isinstance(error, ExchangeError) and grant_refused(error):
        return credentials.Refusal(
            422, f"the venue refused the sign-in's code (used or expired): start again ({error})"
        )
    if isinstance(error, ExchangeError) and client_refused(error):
        return credentials.Refusal(
            502,
            f"the platform's sign-in with the venue is misconfigured; nothing was kept ({error})",
        )
    return credentials.refusal(error)


def opener(
    app: FastAPI, venue: Venue, key_id: object, fields: dict[str, Any]
) -> Callable[[], Exchange]:
    """How the adapter of a linked account is opened (gekko.exchanges.desk)."""
    desk = app.state.venue_desk

    def open_linked() -> Exchange:
        tokens = StoredTokens(
            app.state.pool, app.state.data_keys, key_id, fields, _client(app, venue)
        )
        return venue.open_linked(
            desk.mode, desk.base_urls, LinkedAccount(tokens, fields["portfolio_id"])
        )

    return open_linked


def configure(app: FastAPI) -> None:
    """The platform's OAuth clients, per venue."""
    settings = app.state.settings.coinbase_oauth
    app.state.venue_oauth = {}
    app.state.venue_revocations = set()
    if settings is not None:
        app.state.venue_oauth["coinbase"] = OAuthClient(
            settings.client_id, settings.client_secret, settings.redirect_uri, settings.login_url
        )


async def stop(app: FastAPI) -> None:
    """Revocations under way get a moment to reach the venue."""
    if app.state.venue_revocations:
        await asyncio.wait(set(app.state.venue_revocations), timeout=5)


__all__ = ["ACCESS", "configure", "opener", "router", "stop"]
