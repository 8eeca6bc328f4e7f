"""Coinbase accounts linked by signing in at Coinbase (OAuth2 authorization code with PKCE and
refresh), through the gateway to the trading service in sandbox mode, against a Coinbase double
that is both the login host and the Advanced Trade API: the link is made once per sign-in, its
tokens never leave the service, orders go out with its access token and its portfolio, the
token is refreshed before it expires with no call refused, a revoked token is replaced and the
order still placed once, a refresh made by another instance is taken rather than repeated, and
a link the venue no longer honours is refused clearly."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from doubles.coinbase import PORTFOLIO_ID
from gekko.exchanges.base import ExchangeError
from gekko.exchanges.credentials import unseal
from gekko.exchanges.oauth import OAuthClient
from gekko.security.crypto import DataKeys
from gekko.security.rbac import Role
from gekko.services.venue_tokens import StoredTokens

from .conftest import (
    COINBASE_CLIENT_ID,
    COINBASE_CLIENT_SECRET,
    COINBASE_REDIRECT_URI,
    DATA_KEYS_FILE,
    as_role,
)

pytestmark = pytest.mark.integration

LINKS = "/api/v1/trading/venue-links"
KEYS = "/api/v1/trading/venue-keys"
ORDERS = "/api/v1/trading/venue-orders"
BTC_BUY = {"venue": "coinbase", "symbol": "BTC-USD", "side": "buy", "quantity": "0.001"}


def a_trader() -> dict[str, str]:
    return as_role(Role.TRADER, user_id=800_000 + secrets.randbelow(100_000))


def sign_in(stack, headers: dict[str, str], label: str = "") -> dict[str, str]:
    """Start a link and consent at the venue, as the user's browser would: the `state` and
    `code` the venue sends back to the platform's page."""
    started = httpx.post(
        f"{stack.gateway}{LINKS}", json={"venue": "coinbase", "label": label}, headers=headers
    )
    assert started.status_code == 201, started.text
    consent = httpx.get(started.json()["authorize_url"], follow_redirects=False)
    assert consent.status_code == 302, consent.text
    back = urlsplit(consent.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == COINBASE_REDIRECT_URI
    query = parse_qs(back.query)
    return {"state": query["state"][0], "code": query["code"][0]}


def link(stack, headers: dict[str, str], label: str = "") -> dict:
    done = httpx.post(
        f"{stack.gateway}{LINKS}/complete", json=sign_in(stack, headers, label), headers=headers,
        timeout=15,
    )  # fmt: skip
    assert done.status_code == 201, done.text
    return done.json()


def place(stack, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{stack.gateway}{ORDERS}", json=BTC_BUY, headers=headers, timeout=15)


@pytest.fixture
def short_lived_tokens(coinbase) -> Iterator[None]:
    """Access tokens that live 4 s (Coinbase's live an hour): refreshed 1 s before they end."""
    coinbase.access_lifetime_s = 4.0
    try:
        yield
    finally:
        coinbase.access_lifetime_s = 3600.0


def test_a_trader_links_a_coinbase_account_by_signing_in_and_trades_with_it(stack, coinbase):
    headers = a_trader()
    started = httpx.post(f"{stack.gateway}{LINKS}", json={"venue": "coinbase"}, headers=headers)
    assert started.status_code == 201, started.text
    asked = parse_qs(urlsplit(started.json()["authorize_url"]).query)
    assert asked["response_type"] == ["code"] and asked["client_id"] == [COINBASE_CLIENT_ID]
    assert asked["code_challenge_method"] == ["S256"] and len(asked["state"][0]) >= 32
    assert {"offline_access", "wallet:buys:create"} <= set(asked["scope"][0].split())

    grants = len(coinbase.token_grants)
    linked = link(stack, headers, label="main")
    assert (linked["kind"], linked["venue"], linked["label"]) == ("oauth", "coinbase", "main")
    assert linked["hint"] == "portfolio ..." + PORTFOLIO_ID[-4:]
    assert coinbase.token_grants[grants:] == ["authorization_code"]
    listed = httpx.get(f"{stack.gateway}{KEYS}", headers=headers)
    assert [k["id"] for k in listed.json()["keys"]] == [linked["id"]]
    # The tokens are the service's own: in no answer, encrypted at rest.
    stored = stack.postgres.fetch(
        "SELECT credentials_encrypted FROM trading.venue_keys WHERE id = $1::uuid", linked["id"]
    )[0]["credentials_encrypted"]
    for token in coinbase.access:
        assert token not in listed.text and token not in stored

    placed = place(stack, headers)
    assert placed.status_code == 201, placed.text
    # Coinbase's answer to an order says it was taken, not filled: a read looks it up.
    assert placed.json()["status"] == "open"
    read = httpx.get(f"{stack.gateway}{ORDERS}/{placed.json()['id']}", headers=headers)
    assert read.json()["status"] == "filled", read.text
    sent = [
        o
        for o in coinbase.orders.values()
        if o["client_order_id"] == placed.json()["client_order_id"]
    ]
    assert len(sent) == 1
    assert coinbase.bearers_seen[-1] in coinbase.access  # the link's token, not a key's JWT


def test_a_sign_in_links_once_and_only_for_the_user_who_started_it(stack, coinbase):
    headers = a_trader()
    came_back = sign_in(stack, headers)
    stranger = httpx.post(f"{stack.gateway}{LINKS}/complete", json=came_back, headers=a_trader())
    assert stranger.status_code == 409, stranger.text
    assert stranger.json()["type"].endswith("/venue-link-expired")
    # The stranger's attempt did not use the sign-in up: its owner finishes it, once.
    done = httpx.post(f"{stack.gateway}{LINKS}/complete", json=came_back, headers=headers)
    assert done.status_code == 201, done.text
    again = httpx.post(f"{stack.gateway}{LINKS}/complete", json=came_back, headers=headers)
    assert again.status_code == 409
    assert "already finished" in again.json()["detail"]


def test_a_declined_sign_in_links_nothing(stack, coinbase):
    headers = a_trader()
    state = sign_in(stack, headers)["state"]
    declined = httpx.post(
        f"{stack.gateway}{LINKS}/complete",
        json={"state": state, "error": "access_denied"},
        headers=headers,
    )
    assert declined.status_code == 422, declined.text
    assert declined.headers["content-type"] == "application/problem+json"
    assert "'access_denied'" in declined.json()["detail"]
    assert httpx.get(f"{stack.gateway}{KEYS}", headers=headers).json()["keys"] == []


def test_the_token_is_refreshed_before_it_expires_and_no_call_is_refused(
    stack, coinbase, short_lived_tokens
):
    headers = a_trader()
    link(stack, headers)
    assert place(stack, headers).status_code == 201
    first_bearer, refused = coinbase.bearers_seen[-1], len(coinbase.refusals)
    grants = len(coinbase.token_grants)
    time.sleep(3.2)  # inside the last quarter of the token's life: due for a refresh
    placed = place(stack, headers)
    assert placed.status_code == 201, placed.text
    assert coinbase.token_grants[grants:] == ["refresh_token"]
    assert coinbase.bearers_seen[-1] != first_bearer
    assert len(coinbase.refusals) == refused  # the old token was never sent past its time


def test_a_revoked_token_is_replaced_and_the_order_still_placed_once(stack, coinbase):
    headers = a_trader()
    link(stack, headers)
    coinbase.revoke_access()  # as if Coinbase ended the token early
    created, grants = coinbase.created, len(coinbase.token_grants)
    placed = place(stack, headers)
    assert placed.status_code == 201, placed.text
    assert coinbase.created == created + 1
    assert coinbase.token_grants[grants:] == ["refresh_token"]


def in_process(stack, key_id: str, scenario, client_secret: str = COINBASE_CLIENT_SECRET):
    """Run `scenario(instance)` where `instance()` is the link's tokens as another trading
    instance holds them (the same code, the stack's database and data keys)."""
    stored = stack.postgres.fetch(
        "SELECT credentials_encrypted FROM trading.venue_keys WHERE id = $1::uuid", key_id
    )[0]["credentials_encrypted"]
    keys = DataKeys(path=DATA_KEYS_FILE)
    client = OAuthClient(
        COINBASE_CLIENT_ID,
        client_secret,
        COINBASE_REDIRECT_URI,
        stack.env["GEKKO_COINBASE_OAUTH_URL"],
    )

    async def run():
        pool = await asyncpg.create_pool(stack.postgres.url, min_size=1, max_size=4)
        opened: list[StoredTokens] = []

        def instance() -> StoredTokens:
            opened.append(StoredTokens(pool, keys, key_id, unseal(keys, key_id, stored), client))
            return opened[-1]

        try:
            return await scenario(instance)
        finally:
            for tokens in opened:
                await tokens.close()
            await pool.close()

    return asyncio.run(run())


def stored_tokens(stack, key_id: str) -> dict:
    row = stack.postgres.fetch(
        "SELECT credentials_encrypted, broken_reason FROM trading.venue_keys WHERE id = $1::uuid",
        key_id,
    )[0]
    return {**unseal(DataKeys(path=DATA_KEYS_FILE), key_id, row["credentials_encrypted"]),
            "broken": row["broken_reason"]}  # fmt: skip


def test_a_refresh_made_by_another_instance_is_taken_not_repeated(stack, coinbase):
    headers = a_trader()
    key_id = link(stack, headers)["id"]
    assert place(stack, headers).status_code == 201  # this instance holds the first token

    async def another_instance_refreshes(instance) -> str:
        tokens = instance()
        return await tokens.after_refusal(await tokens.current())

    fresh = in_process(stack, key_id, another_instance_refreshes)
    coinbase.revoke_access()
    coinbase.access[fresh].revoked = False  # only the other instance's new token is good
    grants, refusals = len(coinbase.token_grants), len(coinbase.grant_refusals)
    placed = place(stack, headers)
    assert placed.status_code == 201, placed.text
    # This instance found the new pair in the row: no second refresh of a used refresh token
    # (which Coinbase refuses, and which would have broken the link).
    assert coinbase.token_grants[grants:] == []
    assert len(coinbase.grant_refusals) == refusals
    assert coinbase.bearers_seen[-1] == fresh


def test_a_link_the_venue_no_longer_honours_is_refused_clearly_and_renewed_in_place(
    stack, coinbase
):
    headers = a_trader()
    key_id = link(stack, headers)["id"]
    resting = {**BTC_BUY, "type": "limit", "limit_price": "30000.00"}
    opened = httpx.post(f"{stack.gateway}{ORDERS}", json=resting, headers=headers, timeout=15)
    assert opened.status_code == 201 and opened.json()["status"] == "open", opened.text
    coinbase.revoke_refresh_tokens()  # the user disconnected the app at Coinbase
    coinbase.revoke_access()
    created = coinbase.created
    refused = place(stack, headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/venue-link-broken")
    assert "sign in again to renew it" in refused.json()["detail"]
    assert coinbase.created == created
    listed = httpx.get(f"{stack.gateway}{KEYS}", headers=headers).json()["keys"]
    assert "invalid_grant" in listed[0]["broken"]
    # From the row now, without asking the venue again; the open order is out of reach.
    grant_refusals = len(coinbase.grant_refusals)
    cancel = f"{stack.gateway}{ORDERS}/{opened.json()['id']}"
    stuck = httpx.delete(cancel, headers=headers, timeout=15)
    assert stuck.status_code == 409 and f'"replaces": "{key_id}"' in stuck.json()["detail"]
    assert len(coinbase.grant_refusals) == grant_refusals
    # The user signs in again, renewing the same link: its order is theirs to cancel again.
    started = httpx.post(
        f"{stack.gateway}{LINKS}", json={"venue": "coinbase", "replaces": key_id}, headers=headers
    )
    assert started.status_code == 201, started.text
    consent = httpx.get(started.json()["authorize_url"], follow_redirects=False)
    back = parse_qs(urlsplit(consent.headers["Location"]).query)
    renewed = httpx.post(
        f"{stack.gateway}{LINKS}/complete",
        json={"state": back["state"][0], "code": back["code"][0]},
        headers=headers,
        timeout=15,
    )
    assert renewed.status_code == 201, renewed.text
    assert (renewed.json()["id"], renewed.json()["broken"]) == (key_id, None)
    cancelled = httpx.delete(cancel, headers=headers, timeout=15)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # Only one's own link is renewed.
    theirs = httpx.post(
        f"{stack.gateway}{LINKS}",
        json={"venue": "coinbase", "replaces": key_id},
        headers=a_trader(),
    )
    assert theirs.status_code == 404


def test_refreshes_of_one_link_by_two_instances_at_once_make_one_refresh(stack, coinbase):
    key_id = link(stack, a_trader())["id"]
    grants, refusals = len(coinbase.token_grants), len(coinbase.grant_refusals)

    async def both_refuse_the_same_token(instance) -> list[str]:
        first, second = instance(), instance()
        stale = await first.current()
        return await asyncio.gather(first.after_refusal(stale), second.after_refusal(stale))

    coinbase.token_delay_s = 0.5  # both are under way while the first is answered
    try:
        fresh = in_process(stack, key_id, both_refuse_the_same_token)
    finally:
        coinbase.token_delay_s = 0.0
    assert coinbase.token_grants[grants:] == ["refresh_token"]
    assert fresh[0] == fresh[1] == stored_tokens(stack, key_id)["access_token"]
    assert coinbase.grant_refusals[refusals:] == []


def test_a_refresh_whose_caller_gives_up_is_still_finished_and_kept(stack, coinbase):
    key_id = link(stack, a_trader())["id"]
    grants = len(coinbase.token_grants)
    coinbase.token_delay_s = 1.0
    try:

        async def give_up_then_ask_again(instance) -> tuple[str, str]:
            tokens = instance()
            stale = await tokens.current()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):  # an order's deadline, say
                    await tokens.after_refusal(stale)
            await asyncio.sleep(1.5)
            return stale, await tokens.current()

        stale, now = in_process(stack, key_id, give_up_then_ask_again)
    finally:
        coinbase.token_delay_s = 0.0
    assert coinbase.token_grants[grants:] == ["refresh_token"]
    assert now != stale and stored_tokens(stack, key_id)["access_token"] == now


def test_a_refusal_of_the_platforms_client_breaks_no_link(stack, coinbase):
    key_id = link(stack, a_trader())["id"]

    async def refresh_with_a_stale_secret(instance):
        tokens = instance()
        with pytest.raises(ExchangeError) as refused:
            await tokens.after_refusal(await tokens.current())
        return refused.value

    refused = in_process(stack, key_id, refresh_with_a_stale_secret, client_secret="stale")
    assert (refused.http_status, refused.code, refused.credential) == (502, "invalid_client", True)
    assert "operator must mend" in str(refused)
    assert stored_tokens(stack, key_id)["broken"] is None


def test_removing_a_link_revokes_its_token_at_the_venue(stack, coinbase):
    headers = a_trader()
    key_id = link(stack, headers)["id"]
    revoked = coinbase.revoked
    removed = httpx.delete(f"{stack.gateway}{KEYS}/{key_id}", headers=headers)
    assert removed.status_code == 204, removed.text
    # In the background: the refresh token (the grant) and the access token.
    deadline = time.monotonic() + 10
    while coinbase.revoked < revoked + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert coinbase.revoked == revoked + 2
