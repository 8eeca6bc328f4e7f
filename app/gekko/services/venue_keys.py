"""trading: the venue keys a user links (Binance.US, Coinbase, OANDA), for the orders that will go
to the venue in sandbox or live mode.

Linking and removing a key are sensitive: they need a second factor proved in the last minutes
(step-up), like a role change. A key is checked with a signed account call against the
environment's mode before it is kept, then stored encrypted (gekko.exchanges.credentials) and
never returned: the answers show its venue, label and last four characters. A user holds at most
two keys per venue, so a rotation is: link the new one, then remove the old. In paper mode
(the default) there is no venue to check a key against, and linking is refused.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gekko.config import VENUE_NAMES
from gekko.exchanges import credentials
from gekko.exchanges.base import ExchangeError
from gekko.exchanges.venues import VENUES, Venue, VenueSettingsError
from gekko.problems import ProblemError
from gekko.security.events import SecurityEvents
from gekko.security.rbac import TRADE, TRADE_STEP_UP, AccessTable
from gekko.services.deps import Pool, UserId, venue_mode
from gekko.services.inputs import StoredText
from gekko.services.venue_tokens import revoke_in_background

PREFIX = "/api/v1/trading/venue-keys"
router = APIRouter(prefix=PREFIX, tags=["trading"])
ACCESS: AccessTable = {
    ("GET", PREFIX): TRADE,
    ("POST", PREFIX): TRADE_STEP_UP,
    ("DELETE", PREFIX + "/{key_id}"): TRADE_STEP_UP,
}
KEY_COLUMNS = "id, venue, mode, kind, label, hint, broken_reason AS broken, created_at, removed_at"
# The longest field a venue hands out is a PEM private key (about 250 characters).
_MAX_FIELD_CHARS = 4096


class VenueKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    venue: Literal[VENUE_NAMES]  # type: ignore[valid-type]
    label: StoredText = Field(default="", max_length=64)
    # Binance.US, Coinbase: api_key, api_secret; OANDA: api_token, account_id.
    credentials: dict[
        Annotated[str, Field(max_length=32)],
        Annotated[SecretStr, Field(max_length=_MAX_FIELD_CHARS)],
    ] = Field(max_length=4)


class VenueKeyOut(BaseModel):
    id: uuid.UUID
    venue: str
    mode: str
    # api_key: a key the user pasted; oauth: an account they linked by signing in at the venue
    # (gekko.services.venue_links).
    kind: str
    label: str
    hint: str
    # Why the venue no longer accepts it (a link whose refresh was refused): link it again.
    broken: str | None = None
    created_at: datetime
    removed_at: datetime | None = None


class VenueKeysOut(BaseModel):
    keys: list[VenueKeyOut]


def _events(request: Request) -> SecurityEvents:
    return request.app.state.security_events


async def refuse_beyond_limit(pool: asyncpg.Pool, user_id: int, venue: Venue) -> None:
    """409 when the user holds the most keys (pasted or linked by signing in) of the venue."""
    active = await pool.fetchval(
        "SELECT count(*) FROM trading.venue_keys"
        " WHERE user_id = $1 AND venue = $2 AND removed_at IS NULL",
        user_id,
        venue.name,
    )
    if active >= credentials.MAX_KEYS_PER_VENUE:
        raise ProblemError(
            409,
            f"you hold {active} {venue.title} keys or linked accounts already: remove one first "
            f"(DELETE {PREFIX}/<id>)",
            slug="too-many-venue-keys",
        )


@router.get("", response_model=VenueKeysOut)
async def list_keys(user_id: UserId, pool: Pool) -> VenueKeysOut:
    rows = await pool.fetch(
        f"SELECT {KEY_COLUMNS} FROM trading.venue_keys "  # noqa: S608 - a constant
        "WHERE user_id = $1 AND removed_at IS NULL ORDER BY created_at",
        user_id,
    )
    return VenueKeysOut(keys=[VenueKeyOut(**dict(row)) for row in rows])


@router.post("", status_code=201, response_model=VenueKeyOut)
async def link_key(body: VenueKeyIn, user_id: UserId, pool: Pool, request: Request) -> VenueKeyOut:
    settings = request.app.state.settings
    venue = VENUES[body.venue]
    mode = venue_mode(request, "there is no venue to check a key against, so none is kept")
    try:
        fields = credentials.check_fields(
            venue, {name: value.get_secret_value() for name, value in body.credentials.items()}
        )
    except credentials.CredentialError as exc:
        raise ProblemError(422, str(exc), slug="invalid-venue-key") from None
    await refuse_beyond_limit(pool, user_id, venue)
    try:
        await credentials.verify(venue, mode, fields, settings.venue_base_urls)
    except (ExchangeError, VenueSettingsError) as exc:
        refused = credentials.refusal(exc)
        _events(request).record(
            "venue-key-refused", user_id=user_id, venue=venue.name, status=refused.status
        )
        headers = (
            {"Retry-After": str(max(1, round(refused.retry_after_s)))}
            if refused.retry_after_s is not None
            else None
        )
        raise ProblemError(
            refused.status, refused.detail, slug="venue-key-not-verified", headers=headers
        ) from None
    key_id = uuid.uuid4()
    row = await pool.fetchrow(
        f"""
        INSERT INTO trading.venue_keys
            (id, user_id, venue, mode, label, hint, credentials_encrypted)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        RETURNING {KEY_COLUMNS}
        """,  # noqa: S608 - a constant
        key_id,
        user_id,
        venue.name,
        mode.value,
        body.label,
        credentials.hint(venue, fields),
        credentials.seal(request.app.state.data_keys, key_id, fields),
    )
    _events(request).record(
        "venue-key-linked", user_id=user_id, venue=venue.name, key=str(key_id), hint=row["hint"]
    )
    return VenueKeyOut(**dict(row))


@router.delete("/{key_id}", status_code=204)
async def remove_key(
    key_id: Annotated[uuid.UUID, Path(description="the key's id")],
    user_id: UserId,
    pool: Pool,
    request: Request,
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        # The key is what reaches its orders at the venue: kept while one is open or unsettled.
        # Its row is locked first: an order being placed with it holds a shared lock, so none
        # slips in between this count and the removal.
        held = await conn.fetchrow(
            "SELECT kind, credentials_encrypted FROM trading.venue_keys"
            " WHERE id = $1 AND user_id = $2 FOR UPDATE",
            key_id,
            user_id,
        )
        in_use = await conn.fetchval(
            "SELECT count(*) FROM trading.venue_orders WHERE key_id = $1 AND user_id = $2"
            " AND status IN ('pending', 'unknown', 'open')",
            key_id,
            user_id,
        )
        if in_use:
            raise ProblemError(
                409,
                f"{in_use} of your venue orders placed with this key are open or not settled "
                "yet: cancel them (DELETE /api/v1/trading/venue-orders/<id>) or let them settle "
                "first",
                slug="venue-key-in-use",
            )
        row = await conn.fetchrow(
            """
            UPDATE trading.venue_keys SET removed_at = now(), credentials_encrypted = NULL
            WHERE id = $1 AND user_id = $2 AND removed_at IS NULL
            RETURNING venue, hint
            """,
            key_id,
            user_id,
        )
    # Another user's key answers as a missing one: its existence is not theirs to learn.
    if row is None:
        raise ProblemError(404, "no such venue key", slug="venue-key-not-found")
    _events(request).record(
        "venue-key-removed", user_id=user_id, venue=row["venue"], key=str(key_id), hint=row["hint"]
    )
    request.app.state.venue_desk.forget(key_id)
    if held["kind"] == "oauth":
        fields = credentials.unseal(
            request.app.state.data_keys, key_id, held["credentials_encrypted"]
        )
        revoke_in_background(request.app, row["venue"], fields)
