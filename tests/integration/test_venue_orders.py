"""Orders sent to a venue with a linked key, through the gateway to the trading service in
sandbox mode, against an OANDA practice double: each order reaches the venue once (a replay, a
lost answer and its look-ups included), a limit order rests and is cancelled at the venue, what
the venue's rules forbid is refused before anything is sent, and a venue that keeps failing is
degraded so that orders to it are refused at once."""

from __future__ import annotations

import re
import secrets
import time
import uuid

import httpx
import pytest

from gekko.exchanges.credentials import seal
from gekko.security.crypto import DataKeys
from gekko.security.rbac import Role

from .conftest import DATA_KEYS_FILE, LOOPBACK, OANDA_ACCOUNT, OANDA_TOKEN, as_role

pytestmark = pytest.mark.integration

ORDERS = "/api/v1/trading/venue-orders"
KEYS = "/api/v1/trading/venue-keys"
MARKET_BUY = {"venue": "oanda", "symbol": "EUR-USD", "side": "buy", "quantity": "100"}


def trader_and_oanda_key(stack) -> tuple[dict[str, str], str]:
    user_id = 700_000 + secrets.randbelow(100_000)
    headers = as_role(Role.TRADER, user_id=user_id)
    key = {"venue": "oanda", "credentials": {"api_token": OANDA_TOKEN, "account_id": OANDA_ACCOUNT}}
    linked = httpx.post(f"{stack.gateway}{KEYS}", json=key, headers=headers, timeout=15)
    assert linked.status_code == 201, linked.text
    return headers, linked.json()["id"]


def trader_with_oanda_key(stack) -> dict[str, str]:
    return trader_and_oanda_key(stack)[0]


def at_venue(oanda, client_order_id: str) -> list[dict]:
    return [o for o in oanda.orders.values() if o["clientExtensions"]["id"] == client_order_id]


def test_an_order_reaches_the_venue_once_and_a_replay_returns_it(stack, oanda):
    headers = trader_with_oanda_key(stack)
    idem = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    posted = oanda.posted
    placed = httpx.post(f"{stack.gateway}{ORDERS}", json=MARKET_BUY, headers=idem, timeout=15)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "filled"
    assert (order["venue_symbol"], order["mode"]) == ("EUR_USD", "sandbox")
    assert re.fullmatch(r"gk[0-9a-f]{32}", order["client_order_id"])
    (venue_order,) = at_venue(oanda, order["client_order_id"])
    assert (venue_order["units"], venue_order["id"]) == ("100", order["venue_order_id"])

    replay = httpx.post(f"{stack.gateway}{ORDERS}", json=MARKET_BUY, headers=idem, timeout=15)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == order["id"]
    other = {**MARKET_BUY, "quantity": "200"}
    reused = httpx.post(f"{stack.gateway}{ORDERS}", json=other, headers=idem, timeout=15)
    assert reused.status_code == 422 and "different order" in reused.json()["detail"]
    assert oanda.posted == posted + 1

    read = httpx.get(f"{stack.gateway}{ORDERS}/{order['id']}", headers=headers, timeout=15)
    assert read.json()["status"] == "filled"
    listed = httpx.get(f"{stack.gateway}{ORDERS}", headers=headers).json()["orders"]
    assert [o["id"] for o in listed] == [order["id"]]
    # Another trader sees none of it.
    stranger = as_role(Role.TRADER, user_id=order["id"] + 5_000_000)
    assert httpx.get(f"{stack.gateway}{ORDERS}/{order['id']}", headers=stranger).status_code == 404


def test_a_limit_order_rests_at_the_venue_and_is_cancelled_there(stack, oanda):
    headers, key_id = trader_and_oanda_key(stack)
    limit = {**MARKET_BUY, "type": "limit", "limit_price": "1.05"}
    placed = httpx.post(f"{stack.gateway}{ORDERS}", json=limit, headers=headers, timeout=15)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "open"
    # The key reaches the order at the venue: it stays while the order is open.
    kept = httpx.delete(f"{stack.gateway}{KEYS}/{key_id}", headers=headers, timeout=15)
    assert kept.status_code == 409 and "open or not settled" in kept.json()["detail"]
    cancel = httpx.delete(f"{stack.gateway}{ORDERS}/{order['id']}", headers=headers, timeout=15)
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelled"
    (venue_order,) = at_venue(oanda, order["client_order_id"])
    assert venue_order["state"] == "CANCELLED"
    again = httpx.delete(f"{stack.gateway}{ORDERS}/{order['id']}", headers=headers, timeout=15)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    removed = httpx.delete(f"{stack.gateway}{KEYS}/{key_id}", headers=headers, timeout=15)
    assert removed.status_code == 204, removed.text


def test_an_order_whose_answer_is_lost_is_unknown_until_found_and_never_sent_again(stack, oanda):
    headers = trader_with_oanda_key(stack)
    posted = oanda.posted
    # The venue takes the order but its answer is lost, and so is the adapter's look-up.
    oanda.drop_answers, oanda.failing_lookups = 1, 1
    placed = httpx.post(f"{stack.gateway}{ORDERS}", json=MARKET_BUY, headers=headers, timeout=15)
    assert placed.status_code == 202, placed.text
    order = placed.json()
    assert order["status"] == "unknown"
    assert "look it up by its client id" in order["reason"]
    assert placed.headers["Location"] == f"{ORDERS}/{order['id']}"

    found = httpx.get(f"{stack.gateway}{placed.headers['Location']}", headers=headers, timeout=15)
    assert found.json()["status"] == "filled", found.text
    assert found.json()["venue_order_id"] == at_venue(oanda, order["client_order_id"])[0]["id"]
    assert oanda.posted == posted + 1


def test_a_slow_venue_gets_the_trader_an_answer_in_time_and_the_order_still_once(stack, oanda):
    headers = trader_with_oanda_key(stack)
    posted = oanda.posted
    oanda.slow_s = 5  # beyond the gateway's 5 s upstream timeout with what precedes it
    try:
        started = time.monotonic()
        placed = httpx.post(
            f"{stack.gateway}{ORDERS}", json=MARKET_BUY, headers=headers, timeout=15
        )
        answered_s = time.monotonic() - started
    finally:
        oanda.slow_s = 0
    assert placed.status_code == 202, placed.text
    assert placed.json()["status"] == "pending"
    assert answered_s < 4.5
    deadline = time.monotonic() + 10  # the placement goes on and records the venue's answer
    while time.monotonic() < deadline:
        read = httpx.get(f"{stack.gateway}{placed.headers['Location']}", headers=headers)
        if read.json()["status"] != "pending":
            break
        time.sleep(0.3)
    assert read.json()["status"] == "filled", read.text
    assert oanda.posted == posted + 1


def test_an_unknown_order_nobody_reads_is_settled_in_the_background(stack, oanda):
    headers = trader_with_oanda_key(stack)
    oanda.drop_answers, oanda.failing_lookups = 1, 1
    placed = httpx.post(f"{stack.gateway}{ORDERS}", json=MARKET_BUY, headers=headers, timeout=15)
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]

    def status() -> str:
        (row,) = stack.postgres.fetch(
            "SELECT status FROM trading.venue_orders WHERE id = $1", order_id
        )
        return row["status"]

    deadline = time.monotonic() + 15  # looked up every second once a second old
    while status() != "filled" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status() == "filled"


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"quantity": "0.5"}, "EUR_USD: the smallest quantity is 1"),
        ({"symbol": "BTC-USD"}, "the venue does not trade BTC-USD; it trades EUR-USD"),
        ({"venue": "coinbase"}, "you have no Coinbase Advanced Trade key for sandbox trading"),
    ],
    ids=["below-the-venue-minimum", "not-traded-there", "no-key-for-the-venue"],
)
def test_what_cannot_be_placed_is_refused_before_anything_is_sent(stack, oanda, change, detail):
    headers = trader_with_oanda_key(stack)
    posted = oanda.posted
    refused = httpx.post(
        f"{stack.gateway}{ORDERS}", json={**MARKET_BUY, **change}, headers=headers, timeout=15
    )
    assert refused.status_code in (409, 422), refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert detail in refused.json()["detail"]
    assert oanda.posted == posted
    assert httpx.get(f"{stack.gateway}{ORDERS}", headers=headers).json()["orders"] == []


def degraded_series(stack, venue: str) -> str | None:
    metrics = httpx.get(f"http://{LOOPBACK}:{stack.ports['trading']}/metrics").text
    found = re.search(rf'^gekko_venue_degraded\{{venue="{venue}"\}} (\S+)$', metrics, re.M)
    return found.group(1) if found else None


def gateway_sample(stack, name: str, labels: str) -> float:
    metrics = httpx.get(f"{stack.gateway}/metrics").text
    found = re.search(rf"^{name}\{{{labels}\}} (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_venue_that_keeps_failing_is_degraded_and_orders_to_it_are_refused_at_once(stack):
    # Binance.US points at a closed port in this stack: a key is stored as linking would store
    # it (linking checks it against the venue, which is down).
    user_id = 600_000 + secrets.randbelow(100_000)
    headers = as_role(Role.TRADER, user_id=user_id)
    key_id = uuid.uuid4()
    fields = {"api_key": "k" * 64, "api_secret": "s" * 64}
    stack.postgres.fetch(
        "INSERT INTO trading.venue_keys (id, user_id, venue, mode, hint, credentials_encrypted)"
        " VALUES ($1, $2, 'binanceus', 'sandbox', '...kkkk', $3) RETURNING id",
        key_id,
        user_id,
        seal(DataKeys(path=DATA_KEYS_FILE), key_id, fields),
    )
    assert degraded_series(stack, "binanceus") == "0.0"
    assert httpx.get(f"{stack.gateway}{ORDERS}", headers=headers).status_code == 200
    failures = 'outcome="5xx",service="trading"'
    assert gateway_sample(
        stack, "gekko_upstream_request_duration_seconds_count", 'outcome="ok",service="trading"'
    )
    trading_5xx = gateway_sample(stack, "gekko_upstream_request_duration_seconds_count", failures)
    order = {**MARKET_BUY, "venue": "binanceus", "symbol": "BTC-USD", "quantity": "0.01"}
    for _ in range(3):
        failed = httpx.post(f"{stack.gateway}{ORDERS}", json=order, headers=headers, timeout=15)
        assert failed.status_code == 502, failed.text
        # Nothing reached it (a closed port): the trader may simply try again.
        assert "the venue could not be reached" in failed.json()["detail"]
        assert "nothing was sent" in failed.json()["detail"]
    refused = httpx.post(f"{stack.gateway}{ORDERS}", json=order, headers=headers, timeout=15)
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/venue-degraded")
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert degraded_series(stack, "binanceus") == "1.0"
    assert degraded_series(stack, "oanda") == "0.0"
    # The venue failed, not the trading instance: the gateway did not count it as a failed
    # attempt (which feeds the instance's ejection and the service's breaker).
    after = gateway_sample(stack, "gekko_upstream_request_duration_seconds_count", failures)
    assert after == trading_5xx
    assert refused.headers["Gekko-Fault-Elsewhere"] == "venue:binanceus"
