"""Second factors against the running stack: enrolment with recovery codes, the two-step sign-in,
codes that work once, lockout on wrong codes, the second factor that operators and admins need,
step-up for role changes, and seeds that never sit in the database in the clear."""

from __future__ import annotations

import secrets
import time
import uuid

import httpx
import jwt
import pyotp
import pytest

from gekko.security.rbac import Role

from .conftest import as_role, new_user, signing_key
from .test_sessions import bearer, refresh, sign_in

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse"


def code(seed: str, step: int) -> str:
    return pyotp.TOTP(seed).generate_otp(step)


def problem(answer: httpx.Response) -> str:
    assert answer.headers["content-type"] == "application/problem+json", answer.text
    return answer.json()["type"].rsplit("/", 1)[-1]


def enrolled_user(stack, step: int, role: Role = Role.TRADER) -> tuple[str, int, str, dict]:
    """A user with MFA on: (name, id, TOTP seed, the confirm answer). The confirming code is
    one step back, so the test may still use this step's and the next one's."""
    name = f"m{secrets.token_hex(5)}"
    auth, user_id = new_user(stack.gateway, name=name, password=PASSWORD)
    if role != Role.TRADER:
        stack.postgres.fetch("UPDATE users.accounts SET role = $2 WHERE id = $1", user_id, role)
        auth = bearer(sign_in(stack, name, PASSWORD))
    enrolment = httpx.post(f"{stack.gateway}/api/v1/users/mfa/enroll", headers=auth)
    assert enrolment.status_code == 200, enrolment.text
    seed = enrolment.json()["secret"]
    confirmed = httpx.post(
        f"{stack.gateway}/api/v1/users/mfa/confirm",
        json={"code": code(seed, step - 1)},
        headers=auth,
    )
    assert confirmed.status_code == 200, confirmed.text
    return name, user_id, seed, confirmed.json()


def password_step(stack, name: str, client: httpx.Client | None = None) -> str:
    answer = (client or httpx).post(
        f"{stack.gateway}/api/v1/users/login", json={"username": name, "password": PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["mfa_required"] is True and "access_token" not in body
    return body["mfa_token"]


def code_step(stack, mfa_token: str, value: str, client=None) -> httpx.Response:
    return (client or httpx).post(
        f"{stack.gateway}/api/v1/users/login/mfa", json={"mfa_token": mfa_token, "code": value}
    )


def claims(access_token: str) -> dict:
    return jwt.decode(access_token, options={"verify_signature": False})


def test_enrolment_then_a_two_step_sign_in_where_every_code_works_once(stack, step):
    name = f"m{secrets.token_hex(5)}"
    auth, user_id = new_user(stack.gateway, name=name, password=PASSWORD)
    url = f"{stack.gateway}/api/v1/users/mfa"
    assert httpx.get(url, headers=auth).json()["enabled"] is False
    enrolment = httpx.post(f"{url}/enroll", headers=auth)
    assert enrolment.headers["cache-control"] == "no-store"
    seed = enrolment.json()["secret"]
    assert enrolment.json()["otpauth_uri"].startswith(f"otpauth://totp/Gekko:{name}?secret={seed}")
    # The seed is stored encrypted, bound to its row.
    stored = stack.postgres.fetch(
        "SELECT secret_encrypted FROM users.mfa WHERE user_id = $1", user_id
    )
    assert (
        stored[0]["secret_encrypted"].startswith("gk1.")
        and seed not in stored[0]["secret_encrypted"]
    )
    # Not on until a code from the app proves it was set up.
    wrong = httpx.post(f"{url}/confirm", json={"code": "000000"}, headers=auth)
    assert wrong.status_code == 400 and problem(wrong) == "invalid-mfa-code"
    assert password_step_is_plain(stack, name)

    confirmed = httpx.post(f"{url}/confirm", json={"code": code(seed, step - 1)}, headers=auth)
    assert confirmed.status_code == 200, confirmed.text
    recovery = confirmed.json()["recovery_codes"]
    assert len(recovery) == 10 and len(set(recovery)) == 10
    assert claims(confirmed.json()["access_token"])["amr"] == ["pwd", "otp"]
    hashes = stack.postgres.fetch(
        "SELECT code_hash FROM users.recovery_codes WHERE user_id = $1", user_id
    )
    assert len(hashes) == 10 and all(
        r["code_hash"] not in [c.encode() for c in recovery] for r in hashes
    )

    # The password alone now only starts a sign-in.
    pending = password_step(stack, name)
    replayed = code_step(stack, pending, code(seed, step - 1))  # used for the confirmation
    assert replayed.status_code == 401 and problem(replayed) == "invalid-mfa-code"
    done = code_step(stack, pending, code(seed, step))
    assert done.status_code == 200, done.text
    assert claims(done.json()["access_token"])["amr"] == ["pwd", "otp"]
    assert (
        httpx.get(f"{stack.gateway}/api/v1/users/me", headers=bearer(done.json())).status_code
        == 200
    )
    # A completed sign-in cannot be completed again, even with a fresh code.
    again = code_step(stack, pending, code(seed, step + 1))
    assert again.status_code == 401 and problem(again) == "invalid-mfa-token"

    # A recovery code works once, typed in any case.
    by_recovery = code_step(stack, password_step(stack, name), recovery[0].upper())
    assert by_recovery.status_code == 200, by_recovery.text
    reused = code_step(stack, password_step(stack, name), recovery[0])
    assert reused.status_code == 401
    assert httpx.get(url, headers=bearer(done.json())).json()["recovery_codes_left"] == 9

    # The session keeps its second factor through refreshes.
    renewed = refresh(stack, done.json()["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert claims(renewed.json()["access_token"])["amr"] == ["pwd", "otp"]


def password_step_is_plain(stack, name: str) -> bool:
    """Before MFA is confirmed, a password sign-in still gives tokens at once."""
    return "access_token" in sign_in(stack, name, PASSWORD)


def test_wrong_codes_lock_the_account_like_wrong_passwords(stack, step):
    name, _, seed, _ = enrolled_user(stack, step)
    # A source of its own, so the source count of other tests' failures plays no part.
    client = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.88"), timeout=10)
    with client:
        pending = password_step(stack, name, client)
        answers = [code_step(stack, pending, f"{n:06d}", client) for n in range(5)]
        assert [a.status_code for a in answers] == [401, 401, 401, 401, 423]
        assert int(answers[-1].headers["retry-after"]) > 0
        # Locked: the right code is refused too, and so is the password step.
        right = code_step(stack, pending, code(seed, step), client)
        assert right.status_code == 423 and problem(right) == "account-locked"


def test_operators_need_a_second_factor_and_role_changes_a_fresh_one(stack, step):
    name = f"o{secrets.token_hex(5)}"
    _, user_id = new_user(stack.gateway, name=name, password=PASSWORD)
    stack.postgres.fetch("UPDATE users.accounts SET role = 'operator' WHERE id = $1", user_id)
    without = bearer(sign_in(stack, name, PASSWORD))
    refused = httpx.get(f"{stack.gateway}/services", headers=without)
    assert refused.status_code == 403 and problem(refused) == "mfa-required"
    assert "/api/v1/users/mfa/enroll" in refused.json()["detail"]
    # Enough to enrol, and the confirmation's token has the operator's reach.
    assert httpx.get(f"{stack.gateway}/api/v1/users/me", headers=without).status_code == 200
    seed = httpx.post(f"{stack.gateway}/api/v1/users/mfa/enroll", headers=without).json()["secret"]
    confirmed = httpx.post(
        f"{stack.gateway}/api/v1/users/mfa/confirm",
        json={"code": code(seed, step - 1)},
        headers=without,
    ).json()
    operator = bearer(confirmed)
    assert httpx.get(f"{stack.gateway}/services", headers=operator).status_code == 200
    off = httpx.delete(f"{stack.gateway}/api/v1/users/mfa", headers=operator)
    assert off.status_code == 409 and problem(off) == "mfa-required-for-role"
    # Step-up: a fresh code makes a token dated now; the same code cannot do it twice.
    up = httpx.post(
        f"{stack.gateway}/api/v1/users/mfa/step-up",
        json={"code": code(seed, step)},
        headers=operator,
    )
    assert up.status_code == 200, up.text
    assert claims(up.json()["access_token"])["mfa_at"] >= int(time.time()) - 5
    twice = httpx.post(
        f"{stack.gateway}/api/v1/users/mfa/step-up",
        json={"code": code(seed, step)},
        headers=operator,
    )
    assert twice.status_code == 401

    # A role change wants the admin's second factor from the last five minutes.
    target = f"{stack.gateway}/api/v1/users/{user_id}/role"
    stale = signing_key.issue(
        990_300, str(uuid.uuid4()), role=Role.ADMIN, mfa_at=int(time.time()) - 600
    )
    late = httpx.put(target, json={"role": "viewer"}, headers={"Authorization": f"Bearer {stale}"})
    assert late.status_code == 403 and problem(late) == "step-up-required"
    no_mfa = httpx.put(
        target, json={"role": "viewer"}, headers=as_role(Role.ADMIN, 990_301, mfa=False)
    )
    assert no_mfa.status_code == 403 and problem(no_mfa) == "mfa-required"
    fresh = httpx.put(target, json={"role": "viewer"}, headers=as_role(Role.ADMIN, 990_302))
    assert fresh.status_code == 200, fresh.text


def test_a_trader_may_turn_mfa_off_with_a_fresh_code_only(stack, step):
    name, user_id, seed, confirmed = enrolled_user(stack, step)
    session = bearer(confirmed)  # proved a factor just now
    stale = signing_key.issue(
        user_id, str(uuid.uuid4()), role=Role.TRADER, mfa_at=int(time.time()) - 600
    )
    late = httpx.delete(
        f"{stack.gateway}/api/v1/users/mfa", headers={"Authorization": f"Bearer {stale}"}
    )
    assert late.status_code == 403 and problem(late) == "step-up-required"
    assert httpx.delete(f"{stack.gateway}/api/v1/users/mfa", headers=session).status_code == 204
    assert password_step_is_plain(stack, name)
    left = stack.postgres.fetch(
        "SELECT count(*) AS n FROM users.recovery_codes WHERE user_id = $1", user_id
    )
    assert left[0]["n"] == 0
