"""Venue secrets on a services host (gekko.platform.app_config): the Coinbase OAuth client's
secret (tasks/venue_oauth.yml) and the platform's OANDA key for market_data's stream, sealed
under the data keys (tasks/platform_keys.yml). Each is a file only its owner reads, written once
(a second run changes nothing) and shown in no output; the OAuth secret is removed with its
client."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from gekko.exchanges import platform_keys
from gekko.security.crypto import DataKeys

from .test_security_policy import BIN, REPO, recap

pytestmark = pytest.mark.integration

PLAY = """
- name: A venue secret on this host
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Install or remove it
      ansible.builtin.include_role:
        name: gekko.platform.app_config
        tasks_from: {tasks}
"""


def play(tmp_path, tasks: str, *args: str, env: dict[str, str] | None = None):
    playbook = tmp_path / f"{tasks}.yml"
    playbook.write_text(PLAY.format(tasks=tasks))
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("GEKKO_")}
    run_env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", **(env or {}))
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), str(playbook), "-i", "localhost,", "-c", "local",
         "-e", f"gekko_config_dir={tmp_path / 'config'}",
         "-e", f"gekko_app_container_uid={os.getuid()}",
         "-e", f"ansible_python_interpreter={BIN / 'python'}", *args],
        cwd=REPO, env=run_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return run, run.stdout + run.stderr


def install(tmp_path, client_id: str, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    secret = {"GEKKO_COINBASE_OAUTH_CLIENT_SECRET": "the-client-secret-coinbase-issued"}
    return play(
        tmp_path, "venue_oauth", "-e", f"gekko_coinbase_oauth_client_id={client_id}", *args,
        env=secret,
    )  # fmt: skip


def test_the_secret_is_a_private_file_written_once_and_removed_with_the_client(tmp_path):
    run, output = install(tmp_path, "client-1", "-v")
    assert run.returncode == 0, output
    secret = tmp_path / "config/venue-oauth/coinbase-client-secret"
    assert secret.read_text() == "the-client-secret-coinbase-issued\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o400
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o500
    assert "the-client-secret-coinbase-issued" not in output
    assert recap(output) == {"localhost": (1, 0)}

    again, output = install(tmp_path, "client-1")
    assert again.returncode == 0 and recap(output) == {"localhost": (0, 0)}, output

    unset, output = install(tmp_path, "")
    assert unset.returncode == 0, output
    assert not secret.parent.exists()


DATA_KEYS = ["d" * 22 + "k" * 22]


def test_the_platforms_oanda_key_is_sealed_under_a_derived_key_and_sealed_once(tmp_path):
    env = {"GEKKO_OANDA_API_TOKEN": "platform-oanda-token-123", "GEKKO_OANDA_ACCOUNT_ID": "101-1"}
    args = ("-e", json.dumps({"gekko_data_keys": DATA_KEYS, "gekko_source_dir": str(REPO)}))
    run, output = play(tmp_path, "platform_keys", *args, "-v", env=env)
    assert run.returncode == 0, output
    sealed = tmp_path / "config/venue-keys/platform-keys"
    key = tmp_path / "config/venue-keys/platform-key"
    assert sealed.read_text().startswith("gk1.")
    assert stat.S_IMODE(sealed.stat().st_mode) == stat.S_IMODE(key.stat().st_mode) == 0o400
    # The key on the host is derived from the newest data key, not the data key itself.
    assert key.read_text().strip() == platform_keys.derived_key(DATA_KEYS) != DATA_KEYS[-1]
    keys = DataKeys(path=str(key))
    assert platform_keys.unseal(keys, sealed.read_text()) == {
        "oanda": {"api_token": "platform-oanda-token-123", "account_id": "101-1"}
    }
    assert "platform-oanda-token-123" not in output and "platform-oanda-token-123" not in (
        sealed.read_text()
    )
    first = sealed.read_text()
    again, output = play(tmp_path, "platform_keys", *args, env=env)
    assert again.returncode == 0 and recap(output) == {"localhost": (0, 0)}, output
    assert sealed.read_text() == first
    rotated = {**env, "GEKKO_OANDA_API_TOKEN": "rotated-token"}
    changed, output = play(tmp_path, "platform_keys", *args, env=rotated)
    assert changed.returncode == 0 and recap(output) == {"localhost": (1, 0)}, output
    assert platform_keys.unseal(keys, sealed.read_text())["oanda"]["api_token"] == "rotated-token"
