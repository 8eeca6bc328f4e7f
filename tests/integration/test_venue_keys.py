"""Venue keys a trader links, through the gateway to the trading service in sandbox mode, checked
against an OANDA practice double: a fresh second factor is needed, a key the venue refuses is not
kept, a kept key is encrypted at rest and never shown again, and removing it erases it."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from gekko.exchanges.credentials import unseal
from gekko.security.crypto import DataKeys
from gekko.security.rbac import Role

from .conftest import DATA_KEYS_FILE, OANDA_ACCOUNT, OANDA_TOKEN, as_role

pytestmark = pytest.mark.integration

PATH = "/api/v1/trading/venue-keys"
OANDA_KEY = {
    "venue": "oanda",
    "label": "practice",
    "credentials": {"api_token": OANDA_TOKEN, "account_id": OANDA_ACCOUNT},
}


def trader(*, mfa: bool = True) -> tuple[int, dict[str, str]]:
    user_id = 880_000 + secrets.randbelow(100_000)
    return user_id, as_role(Role.TRADER, user_id=user_id, mfa=mfa)


def stored(stack, user_id: int) -> list:
    return stack.postgres.fetch(
        "SELECT * FROM trading.venue_keys WHERE user_id = $1 ORDER BY created_at", user_id
    )


def audited(stack, user_id: int, event: str) -> list[dict]:
    rows = stack.postgres.fetch(
        "SELECT details FROM audit.events WHERE actor_user_id = $1 AND event = $2",
        user_id,
        event,
    )
    return [json.loads(row["details"]) for row in rows]


def test_a_key_the_venue_accepts_is_kept_encrypted_and_never_shown_again(stack):
    user_id, headers = trader()
    linked = httpx.post(f"{stack.gateway}{PATH}", json=OANDA_KEY, headers=headers, timeout=15)
    assert linked.status_code == 201, linked.text
    key = linked.json()
    assert (key["venue"], key["mode"], key["label"], key["hint"]) == (
        "oanda",
        "sandbox",
        "practice",
        "..." + OANDA_ACCOUNT[-4:],
    )
    assert OANDA_TOKEN not in linked.text
    listed = httpx.get(f"{stack.gateway}{PATH}", headers=headers)
    assert [k["id"] for k in listed.json()["keys"]] == [key["id"]]
    assert OANDA_TOKEN not in listed.text

    (row,) = stored(stack, user_id)
    assert row["credentials_encrypted"].startswith("gk1.")
    assert OANDA_TOKEN not in row["credentials_encrypted"]
    assert (
        unseal(DataKeys(path=DATA_KEYS_FILE), row["id"], row["credentials_encrypted"])
        == (OANDA_KEY["credentials"])
    )
    # Another row's id as associated data does not decrypt it.
    with pytest.raises(Exception, match="altered or moved"):
        unseal(DataKeys(path=DATA_KEYS_FILE), "another-row", row["credentials_encrypted"])
    (event,) = audited(stack, user_id, "venue-key-linked")
    assert event["venue"] == "oanda" and event["key"] == key["id"]
    assert OANDA_TOKEN not in json.dumps(event)
    for component in ("trading", "gateway"):
        assert OANDA_TOKEN not in (stack.root / f"{component}.log").read_text()


def test_linking_needs_a_second_factor_proved_just_now_and_a_trader(stack):
    user_id, stale = trader(mfa=False)
    refused = httpx.post(f"{stack.gateway}{PATH}", json=OANDA_KEY, headers=stale)
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    viewer = as_role(Role.VIEWER, user_id=user_id)
    assert httpx.post(f"{stack.gateway}{PATH}", json=OANDA_KEY, headers=viewer).status_code == 403
    assert httpx.get(f"{stack.gateway}{PATH}", headers=viewer).status_code == 403
    assert stored(stack, user_id) == []


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (
            {**OANDA_KEY, "credentials": {"api_token": "wrong-token", "account_id": OANDA_ACCOUNT}},
            422,
            "the venue refused this key: oanda: HTTP 401",
        ),
        (
            {**OANDA_KEY, "credentials": {"api_key": "k", "api_secret": "s"}},
            422,
            "the fields of a oanda key are api_token, account_id",
        ),
        (
            {"venue": "binanceus", "credentials": {"api_key": "k", "api_secret": "s" * 64}},
            502,
            "the venue did not answer the check; nothing was kept",
        ),
    ],
    ids=["refused-by-the-venue", "wrong-fields", "venue-unreachable"],
)
def test_a_key_that_cannot_be_checked_is_not_kept(stack, body, status, detail):
    user_id, headers = trader()
    answer = httpx.post(f"{stack.gateway}{PATH}", json=body, headers=headers, timeout=15)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert detail in answer.json()["detail"]
    assert "wrong-token" not in answer.text
    assert stored(stack, user_id) == []


def test_rotation_is_link_the_new_then_remove_the_old_which_erases_it(stack):
    user_id, headers = trader()
    old, new = (
        httpx.post(f"{stack.gateway}{PATH}", json=OANDA_KEY, headers=headers, timeout=15).json()
        for _ in range(2)
    )
    third = httpx.post(f"{stack.gateway}{PATH}", json=OANDA_KEY, headers=headers, timeout=15)
    assert third.status_code == 409, third.text
    assert "remove one first" in third.json()["detail"]

    # Someone else's key is not theirs to remove, nor to learn of.
    _, other = trader()
    assert httpx.delete(f"{stack.gateway}{PATH}/{old['id']}", headers=other).status_code == 404
    removed = httpx.delete(f"{stack.gateway}{PATH}/{old['id']}", headers=headers)
    assert removed.status_code == 204, removed.text
    assert httpx.delete(f"{stack.gateway}{PATH}/{old['id']}", headers=headers).status_code == 404
    listed = httpx.get(f"{stack.gateway}{PATH}", headers=headers).json()["keys"]
    assert [k["id"] for k in listed] == [new["id"]]
    rows = {str(row["id"]): row for row in stored(stack, user_id)}
    assert rows[old["id"]]["credentials_encrypted"] is None
    assert rows[old["id"]]["removed_at"] is not None
    assert rows[new["id"]]["credentials_encrypted"].startswith("gk1.")
    assert [e["key"] for e in audited(stack, user_id, "venue-key-removed")] == [old["id"]]
