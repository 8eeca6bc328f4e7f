"""Coinbase OAuth2 on the client side (gekko.exchanges.oauth, the linked-account path of
gekko.exchanges.coinbase): PKCE as RFC 7636's own example computes it, the authorization URL the
Coinbase App OAuth2 reference asks for, the refresh margin, the token exchange and refresh
against the double's login host, and an adapter that sends the link's bearer token, names the
granted portfolio and gets one newer token after a 401."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec

from doubles.coinbase import PORTFOLIO_ID, CoinbaseDouble, OAuthGrant
from gekko.config import ConfigError, load_settings
from gekko.exchanges.base import ExchangeError, OrderRequest, VenueHttp
from gekko.exchanges.coinbase import Coinbase, LinkedAccount, default_portfolio, order_body
from gekko.exchanges.oauth import SCOPES, OAuthClient, Tokens, code_challenge, new_verifier

from .test_config import ENV

REDIRECT = "https://gekko.example/venue-links/coinbase"


def test_the_pkce_challenge_is_rfc_7636s_own_example():
    # RFC 7636 Appendix B: this verifier gives this S256 challenge.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    fresh = new_verifier()
    assert 43 <= len(fresh) <= 128 and fresh != new_verifier()


def test_the_authorization_url_asks_what_the_reference_lists():
    client = OAuthClient("client-1", "secret", REDIRECT)
    url = urlsplit(client.authorize_url("state-of-32-characters-or-more-xx", "v" * 43))
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://login.coinbase.com/oauth2/auth"
    query = parse_qs(url.query)
    assert query == {
        "response_type": ["code"],
        "client_id": ["client-1"],
        "redirect_uri": [REDIRECT],
        "scope": [" ".join(SCOPES)],
        "state": ["state-of-32-characters-or-more-xx"],
        "code_challenge": [code_challenge("v" * 43)],
        "code_challenge_method": ["S256"],
    }
    assert "offline_access" in SCOPES  # without it Coinbase gives no refresh token
    assert "secret" not in repr(client)


@pytest.mark.parametrize(
    ("lifetime", "left", "fresh"),
    [
        (3600, 301, True),  # an hour's token: refreshed in its last 5 minutes
        (3600, 299, False),
        (4, 1.1, True),  # a short one: in its last quarter
        (4, 0.9, False),
    ],
)
def test_a_token_is_refreshed_within_its_margin(lifetime, left, fresh):
    tokens = Tokens("a", "r", expires_at=1000 + left, lifetime_s=lifetime, scope="")
    assert tokens.fresh(1000) is fresh
    shown = repr(Tokens("access-xyz", "refresh-xyz", 0, 1, ""))
    assert "access-xyz" not in shown and "refresh-xyz" not in shown


def test_the_portfolio_of_a_link_is_the_default_or_the_only_one():
    default = {"uuid": "d", "type": "DEFAULT"}
    other = {"uuid": "o", "type": "CONSUMER"}
    assert default_portfolio({"portfolios": [other, default]}) == "d"
    assert default_portfolio({"portfolios": [other]}) == "o"
    assert default_portfolio({"portfolios": [other, {"uuid": "p", "type": "CONSUMER"}]}) is None
    assert default_portfolio({"portfolios": [{**default, "deleted": True}]}) is None
    order = OrderRequest("gk1", "BTC-USD", "buy", "market", Decimal("0.01"))
    assert "retail_portfolio_id" not in order_body(order)
    assert order_body(order, "d")["retail_portfolio_id"] == "d"


class _Refreshing:
    """An AccessTokens that hands out the next token after a refusal."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.refusals: list[str] = []

    async def current(self) -> str:
        return self.tokens[0]

    async def after_refusal(self, refused: str) -> str:
        self.refusals.append(refused)
        self.tokens.pop(0)
        return self.tokens[0]

    async def close(self) -> None:
        return None


def _double() -> CoinbaseDouble:
    key = ec.generate_private_key(ec.SECP256R1())
    return CoinbaseDouble(
        "organizations/o/apiKeys/k",
        key.public_key(),
        client_id="client-1",
        client_secret="client-secret",
        redirect_uri=REDIRECT,
    )


def _with_server(double: CoinbaseDouble, scenario):
    async def run():
        server = TestServer(double.app(), host="127.0.0.1")
        await server.start_server()
        try:
            return await scenario(str(server.make_url("")).rstrip("/"))
        finally:
            await server.close()

    return asyncio.run(run())


async def _consent(authorize_url: str) -> str:
    """The user's browser at the consent page: the code it is sent back with."""
    async with (
        aiohttp.ClientSession() as browser,
        browser.get(authorize_url, allow_redirects=False) as consent,
    ):
        assert consent.status == 302
        return parse_qs(urlsplit(consent.headers["Location"]).query)["code"][0]


def test_a_code_becomes_tokens_once_and_a_refresh_token_is_spent_by_its_refresh():
    double = _double()

    async def scenario(url: str):
        client = OAuthClient("client-1", "client-secret", REDIRECT, url)
        http = VenueHttp("coinbase", 5)
        verifier = new_verifier()
        try:
            code = await _consent(client.authorize_url("s" * 32, verifier))
            granted = await client.exchange_code(http, code, verifier)
            with pytest.raises(ExchangeError) as reused:
                await client.exchange_code(http, code, verifier)
            refreshed = await client.refresh(http, granted.refresh_token)
            with pytest.raises(ExchangeError) as spent:
                await client.refresh(http, granted.refresh_token)
            return granted, refreshed, reused.value, spent.value
        finally:
            await http.close()

    granted, refreshed, reused, spent = _with_server(double, scenario)
    assert granted.lifetime_s == 3600 and "offline_access" in granted.scope
    assert refreshed.access_token != granted.access_token
    assert refreshed.refresh_token != granted.refresh_token
    for refused in (reused, spent):
        assert refused.code == "invalid_grant" and not refused.unsure
        assert "linked again" in str(refused)
    assert double.token_grants == ["authorization_code", "refresh_token"]


def test_a_wrong_verifier_or_client_secret_gets_no_tokens():
    double = _double()

    async def scenario(url: str):
        http = VenueHttp("coinbase", 5)
        try:
            verifier = new_verifier()
            client = OAuthClient("client-1", "client-secret", REDIRECT, url)
            code = await _consent(client.authorize_url("s" * 32, verifier))
            with pytest.raises(ExchangeError) as wrong_verifier:
                await client.exchange_code(http, code, new_verifier())
            impostor = OAuthClient("client-1", "not-the-secret", REDIRECT, url)
            with pytest.raises(ExchangeError) as wrong_secret:
                await impostor.refresh(http, "whatever")
            return wrong_verifier.value, wrong_secret.value
        finally:
            await http.close()

    wrong_verifier, wrong_secret = _with_server(double, scenario)
    assert wrong_verifier.code == "invalid_grant"
    assert (wrong_secret.code, wrong_secret.http_status) == ("invalid_client", 401)
    assert double.token_grants == []


def test_a_linked_account_orders_with_its_token_and_portfolio_and_retries_once_after_a_401():
    double = _double()
    good = "good-token"
    double.access["stale-token"] = _grant(revoked=True)
    double.access[good] = _grant()

    async def scenario(url: str):
        tokens = _Refreshing(["stale-token", good])
        adapter = Coinbase(LinkedAccount(tokens, PORTFOLIO_ID), url)
        try:
            placed = await adapter.place_order(
                OrderRequest("gk-linked-1", "BTC-USD", "buy", "market", Decimal("0.01"))
            )
            return placed, tokens.refusals
        finally:
            await adapter.close()

    placed, refusals = _with_server(double, scenario)
    assert placed.client_order_id == "gk-linked-1"
    assert refusals == ["stale-token"]
    # The refused request was not taken; the retry with the newer token was, once.
    assert double.refusals == ["access token revoked or expired"]
    assert (double.posted, double.created) == (1, 1)
    assert double.bearers_seen == [good]


def test_a_link_refused_twice_is_explained_as_revoked():
    double = _double()
    double.access["revoked"] = _grant(revoked=True)

    async def scenario(url: str):
        adapter = Coinbase(LinkedAccount(_Refreshing(["revoked", "revoked"]), PORTFOLIO_ID), url)
        try:
            with pytest.raises(ExchangeError) as refused:
                await adapter.balances()
            return refused.value
        finally:
            await adapter.close()

    refused = _with_server(double, scenario)
    assert refused.http_status == 401 and "link the account again" in str(refused)


def _grant(*, revoked: bool = False) -> OAuthGrant:
    scopes = {"wallet:accounts:read", "wallet:buys:create", "wallet:orders:read"}
    return OAuthGrant(scopes | {"wallet:user:read"}, expires_at=4e9, revoked=revoked)


def test_trading_links_coinbase_accounts_only_with_a_whole_oauth_client(tmp_path):
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret-from-coinbase\n")
    env = {
        **ENV,
        "GEKKO_COINBASE_OAUTH_CLIENT_ID": "client-1",
        "GEKKO_COINBASE_OAUTH_CLIENT_SECRET_FILE": str(secret),
        "GEKKO_COINBASE_OAUTH_REDIRECT_URI": REDIRECT,
    }
    oauth = load_settings("trading", env).coinbase_oauth
    assert oauth is not None
    assert (oauth.client_secret, oauth.login_url) == (
        "s3cret-from-coinbase",
        "https://login.coinbase.com",
    )
    assert "s3cret" not in repr(oauth)
    assert load_settings("trading", ENV).coinbase_oauth is None
    assert load_settings("portfolio", env).coinbase_oauth is None
    for change, message in [
        ({"GEKKO_COINBASE_OAUTH_REDIRECT_URI": ""}, "GEKKO_COINBASE_OAUTH_REDIRECT_URI not set"),
        ({"GEKKO_COINBASE_OAUTH_REDIRECT_URI": "http://x/cb"}, "must be an https:// URL"),
        ({"GEKKO_COINBASE_OAUTH_CLIENT_SECRET_FILE": str(tmp_path / "none")}, "No such file"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_settings("trading", {**env, **change})
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_settings("trading", env)
