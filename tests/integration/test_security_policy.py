"""The security policy gate in the validate phase, run as an operator runs it: ansible-playbook
playbooks/validate.yml in check mode, on the controller only (`--tags schema` runs the schema
checks and the gate, never connecting to the example hosts). A violation stops the run with the
report of each one and its fix, and nothing changes; `-e gekko_security_approval=<ticket>` lets
it go on, with the waived violations in a warning."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_inventories import SECRET_ENV, vault_secrets, write_vault

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)", re.M)


def validate(
    tmp_path, inventory, *args: str, playbook: str = "validate.yml", tags: str = "schema"
) -> tuple[subprocess.CompletedProcess, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_CACHE_PLUGIN="memory",
        # The deploy summary's report goes here, not over the last deploy's.
        GEKKO_REPORT_DIR=str(tmp_path / "reports"),
    )
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), str(REPO / "playbooks" / playbook),
         "--tags", tags, "--check", "-i", str(inventory), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return run, run.stdout + run.stderr


def recap(output: str) -> dict[str, tuple[int, int]]:
    """Host -> (changed, failed) from the play recap."""
    return {host: (int(changed), int(failed)) for host, changed, failed in RECAP.findall(output)}


def assert_refused(run, output: str, *lines: str) -> None:
    assert run.returncode != 0, output
    assert "The security policy refuses this deploy" in output
    for line in lines:
        assert line in output
    assert "-e gekko_security_approval=<ticket>" in output
    # Nothing changed on any host, and the run stopped at the gate.
    assert recap(output) and all(changed == 0 for changed, _ in recap(output).values()), output


def test_local_with_a_wildcard_bind_and_no_tls_is_refused_unless_approved(tmp_path):
    local = REPO / "inventories/local"
    run, output = validate(tmp_path, local, "-e", "gekko_bind_address=0.0.0.0")
    assert_refused(
        run,
        output,
        "[bind-without-tls] gekko_bind_address is 0.0.0.0 (every interface) while TLS is off",
        "Fix: turn TLS on (gekko_tls_enabled: true) or bind to loopback",
    )

    run, output = validate(
        tmp_path, local, "-e", "gekko_bind_address=0.0.0.0", "-e", "gekko_security_approval=SEC-123"
    )
    assert run.returncode == 0, output
    assert "approval SEC-123 waives 1 violation(s)" in output
    assert "[bind-without-tls]" in output
    assert recap(output) == {"localhost": (0, 0)}


@pytest.fixture
def prod(tmp_path) -> tuple[Path, Path]:
    """A copy of inventories/prod with its secrets in a vault-encrypted file."""
    inventory = tmp_path / "prod"
    subprocess.run(["cp", "-r", str(REPO / "inventories/prod"), str(inventory)], check=True)
    password = tmp_path / "vault-password"
    password.write_text("vault-password-of-the-test-0123456789")
    write_vault(inventory, vault_secrets(), password)
    return inventory, password


def test_debug_logging_in_prod_is_refused_unless_approved(tmp_path, prod):
    inventory, password = prod
    vault = ("--vault-password-file", str(password))
    run, output = validate(tmp_path, inventory, *vault, "-e", "gekko_log_level=DEBUG")
    assert_refused(
        run,
        output,
        "[debug-logging] gekko_log_level is DEBUG in prod",
        "Fix: set gekko_log_level to INFO or WARNING",
    )
    assert set(recap(output)) == {
        "gekko-prod-db-1.example.internal",
        "gekko-prod-svc-1.example.internal",
        "gekko-prod-svc-2.example.internal",
        "gekko-prod-gw-1.example.internal",
    }

    run, output = validate(
        tmp_path, inventory, *vault, "-e", "gekko_log_level=DEBUG",
        "-e", "gekko_security_approval=SEC-123",
    )  # fmt: skip
    assert run.returncode == 0, output
    assert "approval SEC-123 waives 1 violation(s)" in output
    assert all(result == (0, 0) for result in recap(output).values()), output


def test_runtime_settings_pass_the_gate_before_they_reach_a_host(tmp_path, prod):
    """DEBUG logging cannot reach prod live either: runtime.yml stops at the gate, before it
    connects to any host (the example hosts do not exist)."""
    inventory, password = prod
    run, output = validate(
        tmp_path, inventory, "--vault-password-file", str(password),
        "-e", '{"gekko_dynamic_config": {"log_level": "DEBUG"}}',
        playbook="runtime.yml", tags="all",
    )  # fmt: skip
    assert_refused(run, output, "[debug-logging] gekko_dynamic_config.log_level is DEBUG in prod")
    assert "UNREACHABLE" not in output


@pytest.mark.parametrize(
    ("playbook", "args"),
    [("scale.yml", ["-e", "service=trading", "-e", "instances=2"]), ("rotate-secrets.yml", [])],
)
def test_the_playbooks_that_change_a_running_platform_pass_the_gate_first(tmp_path, playbook, args):
    run, output = validate(
        tmp_path, REPO / "inventories/local", "-e", "gekko_bind_address=0.0.0.0", *args,
        playbook=playbook, tags="all",
    )  # fmt: skip
    assert_refused(run, output, "[bind-without-tls] gekko_bind_address is 0.0.0.0")
    assert "Rotate: make the next" not in output and "Activate: scale" not in output


def test_live_trading_is_refused_unless_approved(tmp_path):
    local = REPO / "inventories/local"
    run, output = validate(tmp_path, local, "-e", "gekko_exchange_mode=live")
    assert_refused(run, output, "[exchange-live] gekko_exchange_mode is live in local")
    run, output = validate(
        tmp_path, local, "-e", "gekko_exchange_mode=live", "-e", "gekko_security_approval=SEC-9"
    )
    assert run.returncode == 0, output
    assert "approval SEC-9 waives 1 violation(s)" in output


def test_an_approval_must_name_a_ticket(tmp_path):
    run, output = validate(
        tmp_path, REPO / "inventories/local",
        "-e", "gekko_bind_address=0.0.0.0", "-e", "gekko_security_approval=yes",
    )  # fmt: skip
    assert run.returncode != 0
    assert "gekko_security_approval must be the approval's ticket id" in output


def test_a_catalogue_image_of_unknown_user_needs_a_user_of_its_own(tmp_path):
    catalogue = (
        '{"gekko_services": [{"name": "users", "port": 8101}, '
        '{"name": "trading", "port": 8102, "image": "gekko/base:bookworm"%s}]}'
    )
    run, output = validate(tmp_path, REPO / "inventories/local", "-e", catalogue % "")
    assert_refused(
        run,
        output,
        "[container-root] gekko-trading runs as its image's default user (gekko/base:bookworm)",
        "user: '65534:65534' in its gekko_services entry",
    )
    run, output = validate(
        tmp_path, REPO / "inventories/local", "-e", catalogue % ', "user": "65534:65534"'
    )
    assert run.returncode == 0, output
