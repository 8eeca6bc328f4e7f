"""Rotating the access-token signing key and the data key on the deployed stack
(playbooks/rotate-secrets.yml): under steady traffic with orders, nobody is signed out, nothing
restarts, new tokens carry the new key, and the stored TOTP seeds move to the new data key. Runs
with the redeploying modules (it changes the keyring); the containers it finds are the ones it
leaves."""

from pathlib import Path

import jwt
import pytest

from .conftest import SECRETS, ansible_playbook, register_users, wait_until
from .rollout import SteadyTraffic, orders_kept, running_containers

KEYRING = SECRETS / "token-signing-keys"
DATA_KEYS = SECRETS / "data-keys"
HOST_DATA_KEYS = Path("/etc/gekko/data-keys/data-keys")


def kid(headers: dict) -> str:
    return jwt.get_unverified_header(headers["Authorization"].split(" ", 1)[1])["kid"]


def published(gateway) -> list[str]:
    answer = gateway.get("/api/v1/users/.well-known/jwks.json")
    assert answer.status_code == 200, answer.text
    return sorted(key["kid"] for key in answer.json()["keys"])


@pytest.fixture(scope="module")
def rotated(gateway):
    """Two rotations, the second retiring the first key at once: what each one left."""
    users = register_users(gateway, 3, "rotate")
    before = {
        "kid": kid(users[0]["headers"]),
        "containers": running_containers(),
        "data_keys": sorted(DATA_KEYS.glob("*.key")),
    }
    # A fresh deploy has one key, which any rotation may follow; on a stack rotated before (a
    # re-run) the key it retires signed none of these users' tokens, so the wait is skipped.
    again = len(list(KEYRING.glob("*.pem"))) > 1
    args = ["-e", "gekko_token_key_overlap_seconds=0"] if again else []
    with SteadyTraffic(users) as traffic:
        first = ansible_playbook("rotate-secrets.yml", *args)
    return users, before, traffic, first


def test_a_rotation_publishes_a_new_key_and_signs_with_it_without_a_restart(gateway, rotated):
    users, before, traffic, run = rotated
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "signing with" in run.stdout
    # Nobody was signed out and no order failed or got lost while it ran.
    traffic.assert_clean("rotate-secrets.yml")
    assert orders_kept(gateway, users) > 0
    # Nothing restarted: the same containers, started at the same time.
    after = running_containers()
    assert {n: c["started"] for n, c in after.items()} == {
        n: c["started"] for n, c in before["containers"].items()
    }
    assert len(sorted(KEYRING.glob("*.pem"))) == 2
    kids = published(gateway)
    assert len(kids) == 2 and before["kid"] in kids
    fresh = register_users(gateway, 1, "rotated")[0]
    assert kid(fresh["headers"]) in kids and kid(fresh["headers"]) != before["kid"]
    # A token signed before the rotation still works, so does one signed after.
    for user in (users[0], fresh):
        assert gateway.get("/api/v1/portfolio", headers=user["headers"]).status_code == 200


def test_a_rotation_moves_the_stored_secrets_to_a_new_data_key(gateway, rotated, admin):
    _, before, _, run = rotated
    assert run.returncode == 0, run.stdout[-3000:]
    assert "gekko-reencrypt: moved" in run.stdout and "0 left on older keys" in run.stdout
    # One key is left, a new one, on the controller and on the host.
    keys = sorted(DATA_KEYS.glob("*.key"))
    assert len(keys) == 1 and keys[0] not in before["data_keys"]
    assert HOST_DATA_KEYS.read_text().split() == keys[0].read_text().split()[:1]
    # The admin's seed was re-encrypted: the second factor still works with the old key gone
    # (the admin fixture signed in with password and TOTP after the rotation).
    status = gateway.get("/api/v1/users/mfa", headers=admin)
    assert status.status_code == 200 and status.json()["enabled"] is True


def test_a_second_rotation_is_refused_until_the_old_key_has_retired(gateway, rotated):
    users, before, _, _ = rotated
    early = ansible_playbook("rotate-secrets.yml")
    assert early.returncode != 0
    assert "may still sign live access tokens" in early.stdout
    assert len(sorted(KEYRING.glob("*.pem"))) == 2
    assert len(sorted(DATA_KEYS.glob("*.key"))) == 1  # refused before any key was made

    # Forced: the first key leaves the keyring; its tokens are refused and its sessions refresh.
    forced = ansible_playbook("rotate-secrets.yml", "-e", "gekko_token_key_overlap_seconds=0")
    assert forced.returncode == 0, forced.stdout[-3000:] + forced.stderr[-2000:]
    assert before["kid"] not in published(gateway)
    wait_until(
        lambda: gateway.get("/api/v1/portfolio", headers=users[0]["headers"]).status_code == 401,
        "a token of the retired key to be refused",
        timeout=5,
    )
    refreshed = gateway.post(
        "/api/v1/users/token/refresh", json={"refresh_token": users[0]["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    again = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    assert kid(again) in published(gateway) and kid(again) != before["kid"]
    assert gateway.get("/api/v1/portfolio", headers=again).status_code == 200
