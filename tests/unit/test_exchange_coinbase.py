"""The Coinbase Advanced Trade adapter: the per-request JWT as the CDP docs build it, and its
calls against a double on loopback that verifies each JWT the documented way."""

from __future__ import annotations

from decimal import Decimal

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from doubles.coinbase import CoinbaseDouble
from doubles.serve import run_against
from gekko.exchanges.base import ExchangeError, OrderRequest, OrderStatus
from gekko.exchanges.coinbase import Coinbase, Credentials, build_jwt, order_body, request_uri

KEY_NAME = (
    "organizations/9c0d6b2e-0000-4000-8000-000000000001"
    "/apiKeys/5e1f7a3c-0000-4000-8000-000000000002"
)


def _key() -> tuple[ec.EllipticCurvePrivateKey, Credentials]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "BEGIN EC PRIVATE KEY", as CDP gives
        serialization.NoEncryption(),
    ).decode()
    return key, Credentials(KEY_NAME, pem)


def test_the_jwt_is_built_as_the_docs_example_builds_it():
    key, credentials = _key()
    uri = request_uri("GET", "https://api.coinbase.com", "/api/v3/brokerage/accounts")
    assert uri == "GET api.coinbase.com/api/v3/brokerage/accounts"
    token = build_jwt(credentials, uri, now=1_700_000_000)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == KEY_NAME
    assert len(header["nonce"]) == 64 and int(header["nonce"], 16) >= 0
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["ES256"],
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims == {
        "sub": KEY_NAME,
        "iss": "cdp",
        "nbf": 1_700_000_000,
        "exp": 1_700_000_120,
        "uri": uri,
    }
    # A fresh nonce each time: two tokens for the same request differ.
    assert build_jwt(credentials, uri, now=1_700_000_000) != token
    assert "PRIVATE" not in repr(credentials)


def test_order_bodies_follow_the_docs():
    limit = OrderRequest("gekko-c1", "BTC-USD", "sell", "limit", Decimal("0.01"), Decimal("50000"))
    assert order_body(limit) == {
        "client_order_id": "gekko-c1",
        "product_id": "BTC-USD",
        "side": "SELL",
        "order_configuration": {
            "limit_limit_gtc": {"base_size": "0.01", "limit_price": "50000", "post_only": False}
        },
    }
    market = order_body(OrderRequest("gekko-c2", "BTC-USD", "buy", "market", Decimal("0.5")))
    assert market["order_configuration"] == {"market_market_ioc": {"base_size": "0.5"}}


def _run(double: CoinbaseDouble, credentials: Credentials, scenario, **client_args):
    return run_against(
        double.app(), lambda url: Coinbase(credentials, url, **client_args), scenario
    )


LIMIT = OrderRequest("gekko-c1", "BTC-USD", "buy", "limit", Decimal("0.01"), Decimal("30000"))


def test_orders_balances_and_products_through_signed_requests():
    key, credentials = _key()
    double = CoinbaseDouble(KEY_NAME, key.public_key())

    async def scenario(client: Coinbase):
        placed = await client.place_order(LIMIT)
        found = await client.get_order("BTC-USD", "gekko-c1")
        canceled = await client.cancel_order("BTC-USD", "gekko-c1")
        missing = await client.get_order("BTC-USD", "never-sent")
        return placed, found, canceled, missing, await client.balances(), await client.symbols()

    placed, found, canceled, missing, balances, products = _run(double, credentials, scenario)
    assert double.refusals == []
    assert placed.status is OrderStatus.NEW and placed.price == Decimal("30000")
    assert found == placed and missing is None
    assert canceled.status is OrderStatus.CANCELED
    assert (balances[0].asset, balances[0].free, balances[0].locked) == (
        "USD",
        Decimal("1000.00"),
        Decimal("25.00"),
    )
    assert products["BTC-USD"].trading and products["BTC-USD"].min_notional == Decimal(1)


def test_a_lost_answer_is_looked_up_not_sent_twice():
    key, credentials = _key()
    double = CoinbaseDouble(KEY_NAME, key.public_key(), drop_answers=1)

    async def scenario(client: Coinbase):
        return await client.place_order(LIMIT)

    placed = _run(double, credentials, scenario)
    assert placed.client_order_id == "gekko-c1"
    assert (double.posted, double.created) == (1, 1)


def test_a_lost_order_the_venue_does_not_list_is_unsure_and_not_sent_again():
    # Its request may still arrive while its JWT lives: sending it again could place it twice.
    key, credentials = _key()
    double = CoinbaseDouble(KEY_NAME, key.public_key(), lose_requests=1)

    async def scenario(client: Coinbase):
        with pytest.raises(ExchangeError) as unsure:
            await client.place_order(LIMIT)
        return unsure.value

    unsure = _run(double, credentials, scenario)
    assert unsure.unsure and "look it up by its client order id" in str(unsure)
    assert (double.posted, double.created) == (1, 0)


def test_another_key_or_a_late_clock_is_refused_and_explained():
    key, credentials = _key()
    double = CoinbaseDouble(KEY_NAME, key.public_key())
    _, stranger = _key()

    async def scenario(client: Coinbase):
        with pytest.raises(ExchangeError) as refused:
            await client.balances()
        return refused.value

    refused = _run(double, stranger, scenario)
    assert refused.http_status == 401 and "NTP" in str(refused)
    assert "Signature verification failed" in double.refusals[-1]
    import time

    late = _run(double, credentials, scenario, clock=lambda: int(time.time()) - 600)
    assert late.http_status == 401 and "expired" in double.refusals[-1]
