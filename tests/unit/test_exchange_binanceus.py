"""The Binance.US adapter: the docs' signing examples, and its calls against a double on
loopback that checks keys, signatures and timestamps as https://docs.binance.us describes."""

from __future__ import annotations

import asyncio
import base64
from decimal import Decimal

import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from doubles.binanceus import BinanceDouble
from doubles.serve import run_against
from gekko.exchanges.base import ExchangeError, OrderRequest, OrderStatus
from gekko.exchanges.binanceus import (
    BinanceUS,
    Credentials,
    Hosts,
    ed25519_signature,
    hmac_signature,
    total_params,
)

# The example of the docs' "SIGNED Endpoint Examples for POST /api/v3/order" (HMAC keys).
DOCS_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOCS_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOCS_PARAMS = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)


def test_the_docs_hmac_example_query_string_or_body():
    # Example 1 (all in the query string) and example 2 (all in the body) sign the same text.
    assert (
        hmac_signature(DOCS_SECRET, total_params(DOCS_PARAMS, ""))
        == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )
    assert total_params("", DOCS_PARAMS) == DOCS_PARAMS


def test_the_docs_hmac_example_mixed_query_and_body():
    # Example 3: the query string and the body are concatenated with nothing between them.
    query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
    body = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    assert total_params(query, body).startswith(
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTCquantity=1"
    )
    assert (
        hmac_signature(DOCS_SECRET, total_params(query, body))
        == "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
    )


def test_non_ascii_is_percent_encoded_before_signing_as_the_spot_docs_example():
    # Binance spot's rest-api.md (the Binance.US docs predate it): the full-width symbol
    # "１２３４５６" is signed percent-encoded.
    client = BinanceUS(Credentials(DOCS_KEY, secret=DOCS_SECRET))
    params = {"symbol": "１２３４５６", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
    params |= {"quantity": "1", "price": "0.1"}
    query, _ = client.signed_request("GET", params, 1499827319559)
    payload, signature = query.split("&signature=")
    assert payload == (
        "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT"
        "&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    )
    assert signature == "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"


def test_ed25519_signing_matches_rfc_8032():
    # Binance publishes no example Ed25519 private key; RFC 8032's first test vector (empty
    # message) pins the primitive, and the encoding is the docs' base64.
    key = Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )
    expected = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e"
        "39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert ed25519_signature(key, "") == base64.b64encode(expected).decode()


def test_signed_requests_put_the_signature_last_where_the_parameters_are():
    client = BinanceUS(Credentials(DOCS_KEY, secret=DOCS_SECRET), recv_window_ms=5000)
    params = {"symbol": "LTCBTC", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
    params |= {"quantity": "1", "price": "0.1"}
    query, body = client.signed_request("POST", params, 1499827319559)
    assert query == ""
    assert body == (
        DOCS_PARAMS + "&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )
    query, body = client.signed_request("GET", {"symbol": "LTCBTC"}, 1499827319559)
    assert body == "" and query.startswith(
        "symbol=LTCBTC&recvWindow=5000&timestamp=1499827319559&signature="
    )


def test_an_ed25519_signature_is_base64_and_url_encoded():
    key = Ed25519PrivateKey.generate()
    client = BinanceUS(Credentials("k", ed25519_key=key))
    query, _ = client.signed_request("GET", {"symbol": "BTCUSD"}, 1668481559918)
    payload, signature = query.split("&signature=")
    # Base64 uses + / =, which the query string must carry percent-encoded.
    assert "+" not in signature and "/" not in signature and "=" not in signature
    import base64
    from urllib.parse import unquote

    key.public_key().verify(base64.b64decode(unquote(signature)), payload.encode())


def test_a_credential_never_shows_its_secret():
    shown = repr(Credentials("ABCDEFGH", secret=DOCS_SECRET))
    assert DOCS_SECRET not in shown and "ABCDEFGH" not in shown
    with pytest.raises(ValueError):
        Credentials("k")
    with pytest.raises(ValueError):
        Credentials("k", secret="s", ed25519_key=Ed25519PrivateKey.generate())


@pytest.mark.parametrize(
    "fields",
    [
        {"client_order_id": "has space", "type": "market", "quantity": Decimal(1)},
        {"client_order_id": "x" * 37, "type": "market", "quantity": Decimal(1)},
        {"client_order_id": "ok", "type": "market", "quantity": Decimal(0)},
        {"client_order_id": "ok", "type": "limit", "quantity": Decimal(1)},
        {"client_order_id": "ok", "type": "market", "quantity": Decimal(1), "price": Decimal(1)},
    ],
)
def test_bad_orders_are_refused_before_any_request(fields):
    with pytest.raises(ValueError):
        OrderRequest(symbol="BTCUSD", side="buy", **fields)


# --- against the double ----------------------------------------------------------------------


def _run(double: BinanceDouble, scenario, credentials: Credentials | None = None, **client_args):
    credentials = credentials or Credentials(double.api_key, secret=double.secret)
    return run_against(
        double.app(), lambda url: BinanceUS(credentials, url, **client_args), scenario
    )


def _double(**faults) -> BinanceDouble:
    return BinanceDouble(api_key="test-key", secret="test-secret-" + "x" * 40, **faults)


LIMIT = OrderRequest(
    client_order_id="gekko-7f3a",
    symbol="BTCUSD",
    side="buy",
    type="limit",
    quantity=Decimal("0.5"),
    price=Decimal("25000.10"),
)


def test_an_order_is_placed_found_by_its_client_id_and_canceled():
    double = _double()

    async def scenario(client: BinanceUS):
        placed = await client.place_order(LIMIT)
        found = await client.get_order("BTCUSD", "gekko-7f3a")
        missing = await client.get_order("BTCUSD", "never-sent")
        canceled = await client.cancel_order("BTCUSD", "gekko-7f3a")
        return placed, found, missing, canceled

    placed, found, missing, canceled = _run(double, scenario)
    assert placed.client_order_id == "gekko-7f3a" and placed.status is OrderStatus.NEW
    assert (placed.quantity, placed.price) == (Decimal("0.5"), Decimal("25000.10"))
    assert found == placed and missing is None
    assert canceled.status is OrderStatus.CANCELED
    # What the venue received: the documented parameters, the client id on the order.
    sent = double.orders["gekko-7f3a"]
    assert (sent["type"], sent["side"], sent["timeInForce"]) == ("LIMIT", "BUY", "GTC")


def test_balances_and_trading_rules():
    double = _double()

    async def scenario(client: BinanceUS):
        await client.place_order(
            OrderRequest("gekko-m1", "BTCUSD", "buy", "market", Decimal("0.25"))
        )
        return await client.balances(), await client.symbols(), client.used_weight_1m

    balances, rules, weight = _run(double, scenario)
    # 0.25 BTC bought at 30000: the 0.1 % commission came off the BTC received.
    held = {b.asset: b.free for b in balances}
    assert held == {"BTC": Decimal("0.24975"), "USD": Decimal("92500")}
    btc = rules["BTCUSD"]
    assert btc.trading and (btc.base_asset, btc.quote_asset) == ("BTC", "USD")
    assert (btc.tick_size, btc.step_size, btc.min_notional) == (
        Decimal("0.01"),
        Decimal("0.000001"),
        Decimal("1"),
    )
    assert weight == double.weight  # read from X-MBX-USED-WEIGHT-1M


def test_an_order_whose_answer_was_lost_is_looked_up_not_sent_twice():
    double = _double(drop_answers=1)

    async def scenario(client: BinanceUS):
        return await client.place_order(LIMIT)

    placed = _run(double, scenario)
    assert placed.client_order_id == "gekko-7f3a" and placed.status is OrderStatus.NEW
    assert double.posted == 1, "the order reached the venue once"


MARKET = OrderRequest("gekko-m9", "BTCUSD", "buy", "market", Decimal("0.1"))


def test_a_lost_market_order_whose_lookup_fails_too_is_never_sent_again():
    # Filled at once, so Binance would take the same newClientOrderId again: the adapter must
    # not send it while it cannot tell whether the first one stands.
    double = _double(drop_answers=1, drop_lookups=2)

    async def scenario(client: BinanceUS):
        with pytest.raises(ExchangeError) as unsure:
            await client.place_order(MARKET)
        return unsure.value

    unsure = _run(double, scenario, recv_window_ms=1000)
    assert unsure.unsure and "look it up by its client order id" in str(unsure)
    assert double.posted == 1 and len(double.placed) == 1


def test_a_request_lost_before_the_venue_took_it_is_sent_again_after_its_window():
    double = _double(lose_requests=1)

    async def scenario(client: BinanceUS):
        import time

        started = time.monotonic()
        placed = await client.place_order(MARKET)
        return placed, time.monotonic() - started

    placed, took = _run(double, scenario, recv_window_ms=1000)
    assert placed.status is OrderStatus.FILLED and len(double.placed) == 1
    assert double.posted == 2
    # Not before the first request's recvWindow (and a second of clock offset) was over.
    assert took >= 2.0


def test_a_cancel_answer_names_the_orders_own_client_id():
    double = _double()

    async def scenario(client: BinanceUS):
        await client.place_order(LIMIT)
        return await client.cancel_order("BTCUSD", "gekko-7f3a")

    canceled = _run(double, scenario)
    assert canceled.client_order_id == "gekko-7f3a" and canceled.status is OrderStatus.CANCELED


def test_a_second_open_order_with_the_same_client_id_is_refused_by_the_venue():
    double = _double()

    async def scenario(client: BinanceUS):
        await client.place_order(LIMIT)
        with pytest.raises(ExchangeError) as refused:
            await client.place_order(LIMIT)
        return refused.value

    refused = _run(double, scenario)
    assert (refused.http_status, refused.code) == (400, -2010)
    assert "Duplicate order sent." in str(refused)


def test_a_wrong_secret_is_explained():
    double = _double()

    async def scenario(client: BinanceUS):
        with pytest.raises(ExchangeError) as refused:
            await client.balances()
        return refused.value

    refused = _run(double, scenario, Credentials("test-key", secret="not-the-secret"))
    assert refused.code == -1022 and not refused.unsure
    assert "Signature for this request is not valid." in str(refused)
    assert "does not belong to this API key" in str(refused)


def test_a_clock_outside_recv_window_is_explained():
    double = _double()

    async def scenario(client: BinanceUS):
        with pytest.raises(ExchangeError) as refused:
            await client.balances()
        return refused.value

    import time

    skewed = _run(double, scenario, clock_ms=lambda: time.time_ns() // 1_000_000 - 10_000)
    assert skewed.code == -1021 and "NTP" in str(skewed)
    ahead = _run(double, scenario, clock_ms=lambda: time.time_ns() // 1_000_000 + 5_000)
    assert ahead.code == -1021


def test_an_unknown_key_is_refused():
    double = _double()

    async def scenario(client: BinanceUS):
        with pytest.raises(ExchangeError) as refused:
            await client.balances()
        return refused.value

    refused = _run(double, scenario, Credentials("other-key", secret=double.secret))
    assert (refused.http_status, refused.code) == (401, -2015)


def test_a_429_carries_retry_after():
    import time

    double = _double(rate_limited_until=time.monotonic() + 30)

    async def scenario(client: BinanceUS):
        with pytest.raises(ExchangeError) as refused:
            await client.place_order(LIMIT)
        return refused.value

    refused = _run(double, scenario)
    assert refused.http_status == 429 and refused.retry_after_s and refused.retry_after_s >= 1
    assert "back off" in str(refused) and double.posted == 0


def test_ed25519_keys_sign_requests_the_double_accepts():
    key = Ed25519PrivateKey.generate()
    double = BinanceDouble(api_key="ed-key", ed25519_public=key.public_key())

    async def scenario(client: BinanceUS):
        return await client.place_order(LIMIT)

    placed = _run(double, scenario, Credentials("ed-key", ed25519_key=key))
    assert placed.client_order_id == "gekko-7f3a"
    other = Ed25519PrivateKey.generate()

    async def refused(client: BinanceUS):
        with pytest.raises(ExchangeError) as error:
            await client.balances()
        return error.value

    assert _run(double, refused, Credentials("ed-key", ed25519_key=other)).code == -1022


# --- alternate hosts -------------------------------------------------------------------------


def _with_hosts(double: BinanceDouble, scenario, *, down_first: bool = True, **client_args):
    """A client whose preferred host is down (nothing listens), or a second door to the same
    venue, and whose alternate is `double`."""

    async def run():
        alternate = TestServer(double.app(), host="127.0.0.1")
        await alternate.start_server()
        first = TestServer(double.app(), host="127.0.0.1")
        await first.start_server()
        preferred = str(first.make_url("")).rstrip("/")
        if down_first:
            await first.close()  # its port now refuses connections
        client = BinanceUS(
            Credentials(double.api_key, secret=double.secret),
            preferred,
            alternate_urls=[str(alternate.make_url("")).rstrip("/")],
            **client_args,
        )
        try:
            return await scenario(client, preferred)
        finally:
            await client.close()
            await alternate.close()
            await first.close()

    return asyncio.run(run())


def test_a_host_that_cannot_be_reached_is_passed_over_for_the_next_and_set_aside():
    double = _double()

    async def scenario(client: BinanceUS, preferred: str):
        placed = await client.place_order(LIMIT)
        after_order = client.hosts.in_turn()
        found = await client.get_order("BTCUSD", LIMIT.client_order_id)
        return placed, after_order, found, client.answered_by

    placed, in_turn, found, answered_by = _with_hosts(double, scenario)
    # The order never left for the first host: sent to the alternate, once.
    assert double.posted == 1 and placed.status is OrderStatus.NEW
    assert found is not None and found.venue_order_id == placed.venue_order_id
    # The unreachable host is asked last until its cool-off is over.
    assert answered_by == in_turn[0] != in_turn[1]


def test_a_read_answered_5xx_is_asked_of_the_next_host():
    double = _double()

    async def scenario(client: BinanceUS, preferred: str):
        await client.place_order(LIMIT)
        original = client.http.send
        asked = []

        async def first_host_fails(method, url, what, *, data, headers):
            asked.append(url.split("/api")[0])
            answer = await original(method, url, what, data=data, headers=headers)
            if url.startswith(preferred):
                return type(answer)(503, "", {})
            return answer

        client.http.send = first_host_fails
        found = await client.get_order("BTCUSD", LIMIT.client_order_id)
        return found, asked, preferred

    found, asked, preferred = _with_hosts(double, scenario, down_first=False)
    assert found is not None
    assert asked[0] == preferred and asked[1] != preferred


def test_an_order_that_may_have_reached_a_host_is_never_sent_to_another():
    # The first host takes the order and its answer is lost: the order is looked up (at the
    # alternate, the first being set aside), never sent again.
    double = _double(drop_answers=1)

    async def scenario(client: BinanceUS, preferred: str):
        return await client.place_order(LIMIT)

    placed = _with_hosts(double, scenario, down_first=False)
    assert double.posted == 1 and len(double.placed) == 1
    assert placed.client_order_id == LIMIT.client_order_id


def test_with_every_host_down_the_call_fails_as_not_answered():
    double = _double()

    async def run():
        hosts = []
        for _ in range(2):
            server = TestServer(double.app(), host="127.0.0.1")
            await server.start_server()
            hosts.append(str(server.make_url("")).rstrip("/"))
            await server.close()
        client = BinanceUS(
            Credentials(double.api_key, secret=double.secret), hosts[0], alternate_urls=hosts[1:]
        )
        try:
            with pytest.raises(ExchangeError) as failed:
                await client.balances()
            return failed.value
        finally:
            await client.close()

    failed = asyncio.run(run())
    # Nothing left the machine: not in doubt, so nothing to look up.
    assert failed.not_sent and not failed.unsure and "could not connect" in failed.message


def test_an_order_no_host_could_take_fails_at_once_as_not_sent():
    double = _double()

    async def scenario(client: BinanceUS, preferred: str):
        await client.close()
        client.hosts = Hosts([preferred])  # the dead one alone
        with pytest.raises(ExchangeError) as failed:
            await client.place_order(LIMIT)
        return failed.value

    failed = _with_hosts(double, scenario)
    assert failed.not_sent and not failed.unsure and double.posted == 0


def test_a_host_set_aside_is_asked_again_after_the_others_and_once_its_cool_off_ends():
    now = [0.0]
    hosts = Hosts(["https://a", "https://b", "https://c"], clock=lambda: now[0])
    hosts.failed("https://a")
    now[0] = 10.0
    hosts.failed("https://b")
    assert hosts.in_turn() == ["https://c", "https://a", "https://b"]
    now[0] = Hosts.COOL_OFF_S + 1  # a's cool-off is over, b's is not
    assert hosts.in_turn() == ["https://a", "https://c", "https://b"]
    hosts.answered("https://b")
    assert hosts.in_turn() == ["https://a", "https://b", "https://c"]
