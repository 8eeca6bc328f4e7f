"""trading: what venue orders and balances share to reach a user's venue: their newest key for
a venue and mode, the adapter of a stored key, and how a venue's refusal, silence or
degradation is told to the trader (a problem+json answer; those about the venue's own failure
carry FAULT_ELSEWHERE_HEADER, so the gateway does not hold them against the instance)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from gekko.exchanges.base import ExchangeError, Mode
from gekko.exchanges.credentials import unseal
from gekko.exchanges.desk import VenueDesk
from gekko.exchanges.throttle import ThrottledExchange
from gekko.exchanges.venues import VENUES, Venue, VenueSettingsError
from gekko.problems import FAULT_ELSEWHERE_HEADER, ProblemError
from gekko.services import venue_links
from gekko.services.venue_tokens import LinkBroken

# Traders are answered within this, under the gateway's upstream timeout (5 s by default).
ANSWER_WITHIN_S = 3.5


def desk_of(app: FastAPI) -> VenueDesk:
    return app.state.venue_desk


def venue_problem(exc: ExchangeError | VenueSettingsError, what: str) -> ProblemError:
    """How a venue's refusal or silence is told to the trader."""
    if isinstance(exc, VenueSettingsError):
        return ProblemError(422, f"{what}: {exc}", slug="venue-unusable")
    if isinstance(exc, LinkBroken):
        return ProblemError(
            409,
            f"{what}: your account link no longer works ({exc.message}): see GET "
            "/api/v1/trading/venue-keys, and sign in again to renew it",
            slug="venue-link-broken",
        )
    elsewhere = {FAULT_ELSEWHERE_HEADER: f"venue:{exc.venue}"}
    if exc.retry_after_s is not None:
        wait = max(1, round(exc.retry_after_s))
        return ProblemError(
            503,
            f"{what}: the venue's request budget is spent ({exc}); retry in {wait} s",
            slug="venue-rate-limited",
            headers={"Retry-After": str(wait), **elsewhere},
        )
    if exc.not_sent:
        return ProblemError(
            502,
            f"{what}: the venue could not be reached ({exc}); nothing was sent: try again "
            "(with the same Idempotency-Key, if it had one)",
            slug="venue-unavailable",
            headers=elsewhere,
        )
    if exc.venue_failed:
        return ProblemError(
            502, f"{what}: the venue did not answer ({exc})", slug="venue-unavailable",
            headers=elsewhere,
        )  # fmt: skip
    return ProblemError(422, f"{what}: the venue refused it: {exc}", slug="venue-refused")


def too_slow(venue: Venue, what: str, outcome: str) -> ProblemError:
    return ProblemError(
        503,
        f"{what}: {venue.title} did not answer within {ANSWER_WITHIN_S} s; {outcome}",
        slug="venue-unavailable",
        headers={"Retry-After": "5", FAULT_ELSEWHERE_HEADER: f"venue:{venue.name}"},
    )


async def usable_key(app: FastAPI, user_id: int, venue: Venue, mode: Mode, refused: str) -> Any:
    """The id of the user's newest key for the venue in this mode; a ProblemError when there is
    none (409) or the venue is degraded (503, `refused` saying what that costs the caller)."""
    key_id = await app.state.pool.fetchval(
        "SELECT id FROM trading.venue_keys WHERE user_id = $1 AND venue = $2 AND mode = $3 "
        "AND removed_at IS NULL ORDER BY created_at DESC LIMIT 1",
        user_id,
        venue.name,
        mode.value,
    )
    if key_id is None:
        raise ProblemError(
            409,
            f"you have no {venue.title} key for {mode.value} trading: link one first "
            "(POST /api/v1/trading/venue-keys)",
            slug="no-venue-key",
        )
    wait = desk_of(app).health.retry_after_s(venue.name)
    if wait is not None:
        raise ProblemError(
            503,
            f"{venue.title} is degraded (its last calls failed): {refused}; "
            f"retry in {round(wait)} s",
            slug="venue-degraded",
            headers={
                "Retry-After": str(round(wait)),
                FAULT_ELSEWHERE_HEADER: f"venue:{venue.name}",
            },
        )
    return key_id


async def exchange_of_key(app: FastAPI, key_id: object) -> ThrottledExchange:
    """The adapter of a stored key; ProblemError 409 once the key is removed or its link broke."""
    key = await app.state.pool.fetchrow(
        "SELECT id, venue, kind, broken_reason, credentials_encrypted FROM trading.venue_keys"
        " WHERE id = $1",
        key_id,
    )
    if key is None or key["credentials_encrypted"] is None:
        raise ProblemError(
            409,
            "the venue key of this order was removed: link it again to reach the order",
            slug="venue-key-removed",
        )
    venue = VENUES[key["venue"]]
    if key["broken_reason"] is not None:
        raise _link_broken(venue, key["id"], key["broken_reason"])
    fields = unseal(app.state.data_keys, key["id"], key["credentials_encrypted"])
    desk = desk_of(app)
    if key["kind"] == "oauth":
        opener = venue_links.opener(app, venue, key["id"], fields)
    else:
        opener = desk.api_key_opener(venue, fields)
    return await desk.exchange(key["id"], venue, opener)


def _link_broken(venue: Venue, key_id: object, reason: str) -> ProblemError:
    return ProblemError(
        409,
        f"your {venue.title} account link no longer works ({reason}): sign in again to renew "
        f'it in place (POST /api/v1/trading/venue-links {{"venue": "{venue.name}", '
        f'"replaces": "{key_id}"}}); its orders stay yours',
        slug="venue-link-broken",
    )
