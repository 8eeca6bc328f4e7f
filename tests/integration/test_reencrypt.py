"""`gekko reencrypt` against the running stack: a data key rotation moves every stored TOTP seed
and linked venue key to the newest key while the users and trading services keep working, and
the older key can then go."""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from gekko.exchanges.credentials import unseal
from gekko.security import keyfiles
from gekko.security.crypto import DataKeys

from .conftest import DATA_KEYS_FILE, gekko_cmd
from .test_mfa import code, code_step, enrolled_user, password_step
from .test_venue_keys import OANDA_KEY, PATH, trader

pytestmark = pytest.mark.integration


def reencrypt(stack, keys: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        gekko_cmd("reencrypt", *args),
        env=dict(stack.env, GEKKO_DATA_KEYS=keys),
        capture_output=True,
        text=True,
        timeout=60,
    )


def replace(path: Path, text: str) -> None:
    """As a deploy does: a new file moved into place, which the service re-reads."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    staged.replace(path)
    time.sleep(keyfiles.KEY_FILE_CHECK_S + 0.5)


def test_a_rotation_moves_every_seed_to_the_new_key_and_the_old_one_can_go(stack, step):
    path = Path(DATA_KEYS_FILE)
    old = path.read_text().strip().splitlines()[-1]
    name, user_id, seed, _ = enrolled_user(stack, step)
    trader_id, trader_headers = trader()
    linked = httpx.post(
        f"{stack.gateway}{PATH}", json=OANDA_KEY, headers=trader_headers, timeout=15
    )
    assert linked.status_code == 201, linked.text
    new = secrets.token_urlsafe(36)
    both = f"{old}\n{new}\n"
    try:
        replace(path, both)
        check = reencrypt(stack, both, "--check")
        assert check.returncode == 1 and "on an older data key" in check.stdout, check.stdout
        moved = reencrypt(stack, both)
        assert moved.returncode == 0, moved.stderr
        assert "0 left on older keys" in moved.stdout
        assert old not in moved.stdout + moved.stderr and new not in moved.stdout + moved.stderr
        stored = stack.postgres.fetch(
            "SELECT secret_encrypted FROM users.mfa WHERE user_id = $1", user_id
        )[0]["secret_encrypted"]
        assert DataKeys(text=new).decrypt(stored, f"users.mfa/{user_id}") == seed.encode()
        venue_key = stack.postgres.fetch(
            "SELECT id, credentials_encrypted FROM trading.venue_keys WHERE user_id = $1", trader_id
        )[0]
        assert (
            unseal(DataKeys(text=new), venue_key["id"], venue_key["credentials_encrypted"])
            == (OANDA_KEY["credentials"])
        )
        # The old key retired: the service still reads the seed.
        replace(path, new + "\n")
        signed_in = code_step(stack, password_step(stack, name), code(seed, step))
        assert signed_in.status_code == 200, signed_in.text
        # Trading encrypts under the new key alone now.
        rotated = httpx.post(
            f"{stack.gateway}{PATH}", json=OANDA_KEY, headers=trader_headers, timeout=15
        )
        assert rotated.status_code == 201, rotated.text
        again = reencrypt(stack, new)
        assert again.returncode == 0 and "moved 0" in again.stdout
    finally:
        replace(path, both)  # later tests' seeds and any left behind stay readable


def test_a_value_under_a_key_no_longer_held_is_reported(stack, step):
    enrolled_user(stack, step)
    unrelated = secrets.token_urlsafe(36)
    run = reencrypt(stack, unrelated)
    assert run.returncode == 1
    assert "cannot be decrypted" in run.stdout + run.stderr
