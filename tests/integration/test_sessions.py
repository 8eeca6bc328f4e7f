"""Sessions end to end against the real services, Redis and PostgreSQL: EdDSA access tokens
verified with the published keys, refresh token rotation with reuse detection, logout and
ending sessions (their access tokens refused at the gateway and at every service)."""

from __future__ import annotations

import json
import secrets

import httpx
import jwt
import pytest

from .conftest import LOOPBACK, eventually
from .test_login_abuse import registered, security_events

pytestmark = pytest.mark.integration

# Verifiers re-read the ended sessions at most once a second.
REVOCATION_DEADLINE_S = 3


def sign_in(stack, name: str, password: str, agent: str = "pytest") -> dict:
    resp = httpx.post(
        f"{stack.gateway}/api/v1/users/login",
        json={"username": name, "password": password},
        headers={"User-Agent": agent},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    return resp.json()


def refresh(stack, refresh_token: str) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway}/api/v1/users/token/refresh", json={"refresh_token": refresh_token}
    )


def bearer(pair: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


def portfolio(stack, pair: dict, *, direct: bool = False) -> int:
    base = f"http://{LOOPBACK}:{stack.ports['portfolio']}" if direct else stack.gateway
    return httpx.get(f"{base}/api/v1/portfolio", headers=bearer(pair)).status_code


def refused_everywhere(stack, pair: dict) -> bool:
    return portfolio(stack, pair) == 401 and portfolio(stack, pair, direct=True) == 401


def test_access_tokens_are_eddsa_signed_and_verify_with_the_published_jwks(stack):
    pair = sign_in(stack, *registered(stack))
    assert pair["token_type"] == "bearer" and pair["expires_in"] == 3600
    header = jwt.get_unverified_header(pair["access_token"])
    assert header["alg"] == "EdDSA"
    jwks = httpx.get(f"{stack.gateway}/api/v1/users/.well-known/jwks.json")
    assert jwks.status_code == 200
    published = {key["kid"]: key for key in jwks.json()["keys"]}
    assert header["kid"] in published
    assert "d" not in published[header["kid"]]  # public parts only
    # Anyone can verify a token with the JWKS document alone.
    key = jwt.PyJWK(published[header["kid"]]).key
    claims = jwt.decode(pair["access_token"], key, algorithms=["EdDSA"], audience="gekko-api")
    assert claims["exp"] - claims["iat"] == 3600 and claims["sid"]
    assert portfolio(stack, pair) == 200


def test_refresh_rotates_and_a_reused_refresh_token_ends_the_whole_session(stack):
    pair = sign_in(stack, *registered(stack))
    rotated = refresh(stack, pair["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != pair["refresh_token"]
    assert second["access_token"] != pair["access_token"]
    assert portfolio(stack, second) == 200
    reuse_before = security_events(stack).get("refresh-token-reuse", 0)

    # The first refresh token again: it can only be a copy, so the session ends.
    reused = refresh(stack, pair["refresh_token"])
    assert reused.status_code == 401
    assert reused.json()["type"].endswith("/invalid-refresh-token")
    assert "already used" in reused.json()["detail"]
    assert security_events(stack)["refresh-token-reuse"] == reuse_before + 1
    # The legitimate holder's newer token belongs to the same family: refused too.
    assert refresh(stack, second["refresh_token"]).status_code == 401
    # And every access token of the session stops working, at the gateway and behind it.
    eventually(lambda: refused_everywhere(stack, second), REVOCATION_DEADLINE_S)
    assert refused_everywhere(stack, pair)


def test_logout_ends_only_that_session(stack):
    name, password = registered(stack)
    laptop, phone = sign_in(stack, name, password), sign_in(stack, name, password)
    out = httpx.post(f"{stack.gateway}/api/v1/users/logout", headers=bearer(laptop))
    assert out.status_code == 204
    eventually(lambda: refused_everywhere(stack, laptop), REVOCATION_DEADLINE_S)
    assert refresh(stack, laptop["refresh_token"]).status_code == 401
    # The other device is still signed in.
    assert portfolio(stack, phone) == 200
    assert refresh(stack, phone["refresh_token"]).status_code == 200


def test_a_user_lists_and_ends_their_own_sessions_only(stack):
    name, password = registered(stack)
    first = sign_in(stack, name, password, agent="laptop")
    second = sign_in(stack, name, password, agent="phone")
    listed = httpx.get(f"{stack.gateway}/api/v1/users/sessions", headers=bearer(second))
    assert listed.status_code == 200, listed.text
    sessions = listed.json()
    assert [(s["user_agent"], s["current"]) for s in sessions] == [
        ("phone", True),
        ("laptop", False),
    ]
    laptop_id = sessions[1]["id"]

    # Another user cannot see or end them: the session is answered as unknown.
    stranger = sign_in(stack, *registered(stack))
    theirs = httpx.get(f"{stack.gateway}/api/v1/users/sessions", headers=bearer(stranger))
    assert laptop_id not in {s["id"] for s in theirs.json()}
    denied = httpx.delete(
        f"{stack.gateway}/api/v1/users/sessions/{laptop_id}", headers=bearer(stranger)
    )
    assert denied.status_code == 404
    assert portfolio(stack, first) == 200

    ended = httpx.delete(
        f"{stack.gateway}/api/v1/users/sessions/{laptop_id}", headers=bearer(second)
    )
    assert ended.status_code == 204
    eventually(lambda: refused_everywhere(stack, first), REVOCATION_DEADLINE_S)
    assert refresh(stack, first["refresh_token"]).status_code == 401
    left = httpx.get(f"{stack.gateway}/api/v1/users/sessions", headers=bearer(second)).json()
    assert [s["user_agent"] for s in left] == ["phone"]


def test_refresh_with_nonsense_is_a_clear_401_and_a_bad_body_a_422(stack):
    unknown = refresh(stack, secrets.token_urlsafe(32))
    assert unknown.status_code == 401
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["detail"] == "unknown refresh token"
    empty = httpx.post(f"{stack.gateway}/api/v1/users/token/refresh", json={})
    assert empty.status_code == 422


def test_the_gateway_refuses_a_forged_token_before_any_service(stack):
    pair = sign_in(stack, *registered(stack))
    header, payload, signature = pair["access_token"].split(".")
    # Another user's id in the payload, the original signature kept.
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    forged_payload = jwt.utils.base64url_encode(json.dumps({**claims, "sub": "1"}).encode())
    forged = {"access_token": f"{header}.{forged_payload.decode()}.{signature}"}
    assert portfolio(stack, forged) == 401
    assert portfolio(stack, forged, direct=True) == 401
