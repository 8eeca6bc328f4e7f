"""The venue-key routes before any database or venue is involved: paper mode keeps no key, and
a key's fields are checked per venue."""

import asyncio

import httpx
import pytest

from gekko.apps import build_app
from gekko.config import load_settings
from gekko.exchanges import credentials
from gekko.exchanges.base import ExchangeError
from gekko.exchanges.venues import VENUES, VenueSettingsError
from gekko.security.crypto import DataKeys
from gekko.security.rbac import Role

from .keys import DATA_KEYS_FILE, TOKEN_ENV, as_role

ENV = {
    "GEKKO_DATABASE_URL": "postgresql://gekko_app:pw@127.0.0.1:5432/gekko",
    "GEKKO_REDIS_URL": "redis://:pw@127.0.0.1:6379/0",
    **TOKEN_ENV,
}
KEY = {"venue": "oanda", "credentials": {"api_token": "t", "account_id": "101-1"}}


def post(app, body: dict) -> httpx.Response:
    app.state.pool = None  # never reached: these answers come before any query

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://trading") as client:
            return await client.post(
                "/api/v1/trading/venue-keys", json=body, headers=as_role(Role.TRADER)
            )

    return asyncio.run(run())


def test_paper_mode_keeps_no_key_and_says_why():
    answer = post(build_app(load_settings("trading", ENV)), KEY)
    assert answer.status_code == 409
    assert answer.headers["content-type"] == "application/problem+json"
    assert "trades on the paper exchange" in answer.json()["detail"]


def test_a_body_with_more_than_a_key_is_refused_before_anything_else():
    app = build_app(load_settings("trading", {**ENV, "GEKKO_EXCHANGE_MODE": "sandbox"}))
    answer = post(app, {**KEY, "password": "x"})
    assert answer.status_code == 422


@pytest.mark.parametrize(
    ("venue", "fields", "message"),
    [
        ("oanda", {"api_key": "k", "api_secret": "s"}, "are api_token, account_id"),
        ("binanceus", {"api_key": "k"}, "are api_key, api_secret"),
        ("coinbase", {"api_key": " ", "api_secret": "s"}, "api_key must not be empty"),
    ],
)
def test_fields_are_checked_per_venue(venue, fields, message):
    with pytest.raises(credentials.CredentialError, match=message):
        credentials.check_fields(VENUES[venue], fields)


def test_a_sealed_key_opens_only_in_its_own_row():
    keys = DataKeys(path=DATA_KEYS_FILE)
    sealed = credentials.seal(keys, "row-1", {"api_token": "t", "account_id": "101-1"})
    assert "101-1" not in sealed
    assert credentials.unseal(keys, "row-1", sealed) == {"api_token": "t", "account_id": "101-1"}
    with pytest.raises(Exception, match="altered or moved"):
        credentials.unseal(keys, "row-2", sealed)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (VenueSettingsError("Binance.US has no sandbox host"), 422),
        (ExchangeError("binanceus", "Signature invalid", 400, -1022), 422),
        (ExchangeError("oanda", "Too many requests", 429, retry_after_s=2.0), 503),
        (ExchangeError("coinbase", "no answer", unsure=True), 502),
        (ExchangeError("coinbase", "bad gateway", 502), 502),
    ],
)
def test_a_failed_check_is_answered_by_what_failed(error, status):
    assert credentials.refusal(error).status == status
