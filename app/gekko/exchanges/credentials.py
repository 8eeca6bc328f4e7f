"""Venue keys that users link to their accounts: checked with a signed call before they are
kept, kept encrypted (AES-256-GCM under the data keys, gekko.security.crypto), never shown again.

A key is stored as one encrypted JSON object of the venue's fields (Binance.US and Coinbase:
`api_key`, `api_secret`; OANDA: `api_token`, `account_id`), with the key's row as associated
data, so a ciphertext copied to another row or user does not decrypt. What is shown of a key is
its venue, label and the last four characters of what names it (the API key, OANDA's account).

Rotation is: link the new key (it is checked with a signed account call against the
environment's mode), then remove the old one; a removed key's ciphertext is erased, its row kept
for the record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from gekko.exchanges.base import ExchangeError, Mode
from gekko.exchanges.venues import CheckResult, Venue, VenueSettingsError, check
from gekko.security.crypto import DataKeys

# A user may hold this many keys per venue: the current one and its successor while rotating.
MAX_KEYS_PER_VENUE = 2


class CredentialError(ValueError):
    """The fields do not make a key of that venue (wrong names, empty values)."""


def venue_key_context(key_id: object) -> str:
    """The associated data of a stored key: the row it belongs to."""
    return f"trading.venue_keys/{key_id}"


def link_request_context(state_hash: str) -> str:
    """The associated data of an account sign-in's PKCE verifier (gekko.services.venue_links)."""
    return f"trading.venue_link_requests/{state_hash}"


def check_fields(venue: Venue, fields: Mapping[str, str]) -> dict[str, str]:
    expected = set(venue.credential_fields)
    if set(fields) != expected:
        raise CredentialError(
            f"the fields of a {venue.name} key are {', '.join(venue.credential_fields)}"
        )
    cleaned = {name: value.strip() for name, value in fields.items()}
    if empty := sorted(name for name, value in cleaned.items() if not value):
        raise CredentialError(f"{', '.join(empty)} must not be empty")
    return cleaned


def hint(venue: Venue, fields: Mapping[str, str]) -> str:
    """The last four characters of what names the key, as the venues' own consoles show it."""
    return "..." + fields[venue.hint_field][-4:]


def as_settings(
    venue: Venue, fields: Mapping[str, str], base_urls: Mapping[str, str]
) -> dict[str, str]:
    """The key in the shape the adapters are opened from (gekko.exchanges.venues)."""
    settings = dict(
        zip(venue.credential_env, (fields[f] for f in venue.credential_fields), strict=True)
    )
    if venue.name in base_urls:
        settings[f"GEKKO_{venue.name.upper()}_BASE_URL"] = base_urls[venue.name]
    return settings


async def verify(
    venue: Venue, mode: Mode, fields: Mapping[str, str], base_urls: Mapping[str, str]
) -> CheckResult:
    """A signed account call with the key; raises VenueSettingsError (the key or the mode cannot
    be used) or ExchangeError (the venue refused it, or did not answer)."""
    exchange = venue.open(mode, as_settings(venue, fields, base_urls))
    try:
        return await check(exchange)
    finally:
        await exchange.close()


def seal(keys: DataKeys, key_id: object, fields: Mapping[str, str]) -> str:
    return keys.encrypt(
        json.dumps(dict(fields), sort_keys=True).encode(), venue_key_context(key_id)
    )


def unseal(keys: DataKeys, key_id: object, stored: str) -> dict[str, str]:
    return json.loads(keys.decrypt(stored, venue_key_context(key_id)))


@dataclass(frozen=True)
class Refusal:
    """How a failed check is answered: the status and what the user is told."""

    status: int
    detail: str
    retry_after_s: float | None = None


def refusal(error: ExchangeError | VenueSettingsError) -> Refusal:
    if isinstance(error, VenueSettingsError):
        return Refusal(422, f"this key cannot be used: {error}")
    if error.retry_after_s is not None:
        return Refusal(
            503, f"the venue asked to slow down; try again later ({error})", error.retry_after_s
        )
    if error.http_status is not None and 400 <= error.http_status < 500:
        return Refusal(422, f"the venue refused this key: {error}")
    return Refusal(502, f"the venue did not answer the check; nothing was kept ({error})")
