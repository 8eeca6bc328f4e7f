"""The Coinbase OAuth client's secret reaches a services host as the trading containers read it
(gekko.platform.app_config, tasks/venue_oauth.yml): a file only its owner reads, written once (a
second run changes nothing), shown in no output, and removed when the client is unset."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from .test_security_policy import BIN, REPO, recap

pytestmark = pytest.mark.integration

PLAY = """
- name: The Coinbase OAuth client's secret on this host
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Install or remove it
      ansible.builtin.include_role:
        name: gekko.platform.app_config
        tasks_from: venue_oauth
"""


def install(tmp_path, client_id: str, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    playbook = tmp_path / "venue-oauth.yml"
    playbook.write_text(PLAY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEKKO_")}
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        GEKKO_COINBASE_OAUTH_CLIENT_SECRET="the-client-secret-coinbase-issued",
    )
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), str(playbook), "-i", "localhost,", "-c", "local",
         "-e", f"gekko_config_dir={tmp_path / 'config'}",
         "-e", f"gekko_coinbase_oauth_client_id={client_id}",
         "-e", f"gekko_app_container_uid={os.getuid()}",
         "-e", f"ansible_python_interpreter={BIN / 'python'}", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return run, run.stdout + run.stderr


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
