"""The local, staging and prod inventories against the schema check of the validate phase
(`playbooks/validate.yml --tags schema`: every role's argument spec, the catalogue and the
secrets policy). It runs on the controller only, so the example hosts are never contacted."""

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORD_ENV = (
    "GEKKO_POSTGRES_PASSWORD",
    "GEKKO_POSTGRES_APP_PASSWORD",
    "GEKKO_REDIS_PASSWORD",
    "GEKKO_ADMIN_PASSWORD",
    "GEKKO_MONITOR_PASSWORD",
    "GEKKO_BACKUP_CIPHER_PASS",
)
SECRET_ENV = (
    *PASSWORD_ENV,
    "GEKKO_ADMIN_TOTP_SECRET",
    "GEKKO_TOKEN_SIGNING_KEYS",
    "GEKKO_DATA_KEYS",
)
VAULT_PASSWORDS = (
    "gekko_vault_postgres_password",
    "gekko_vault_postgres_app_password",
    "gekko_vault_redis_password",
    "gekko_vault_admin_password",
    "gekko_vault_monitor_password",
    "gekko_vault_backup_cipher_pass",
)


def validate(inventory, *args, env=None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    # A memory fact cache keeps these runs apart from a deploy running beside them.
    base.update(
        {
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "PY_COLORS": "0",
            "ANSIBLE_CACHE_PLUGIN": "memory",
        }
    )
    base.update(env or {})
    return subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            str(REPO / "playbooks/validate.yml"),
            "--tags",
            "schema",
            "-i",
            str(inventory),
            *args,
        ],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=300,
    )


def output(run) -> str:
    return run.stdout + run.stderr


def strong() -> str:
    return secrets.token_urlsafe(36)


def pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def signing_key() -> str:
    return pem(Ed25519PrivateKey.generate())


def staging_secrets(**overrides: str) -> dict[str, str]:
    """Everything staging reads from the environment: passwords, the admin's TOTP seed, two
    signing keys and two data keys."""
    values = {name: strong() for name in PASSWORD_ENV}
    values["GEKKO_ADMIN_TOTP_SECRET"] = totp_seed()
    values["GEKKO_TOKEN_SIGNING_KEYS"] = signing_key() + signing_key()
    values["GEKKO_DATA_KEYS"] = f"{strong()} {strong()}"
    return values | overrides


def totp_seed() -> str:
    return base64.b32encode(secrets.token_bytes(20)).decode()


def vault_secrets() -> dict:
    return {name: strong() for name in VAULT_PASSWORDS} | {
        "gekko_vault_admin_totp_secret": totp_seed(),
        "gekko_vault_token_signing_keys": [signing_key()],
        "gekko_vault_data_keys": [strong()],
    }


@pytest.fixture
def prod(tmp_path) -> Path:
    """A copy of inventories/prod that a test may add a vault file to."""
    inventory = tmp_path / "prod"
    shutil.copytree(REPO / "inventories/prod", inventory)
    return inventory


def write_vault(inventory: Path, values: dict, password_file: Path | None) -> Path:
    path = inventory / "group_vars/all/vault.yml"
    path.write_text(yaml.safe_dump(values))
    if password_file:
        subprocess.run(
            [
                str(BIN / "ansible-vault"),
                "encrypt",
                "--vault-password-file",
                str(password_file),
                str(path),
            ],
            check=True,
            capture_output=True,
        )
    return path


def test_local_inventory_passes():
    run = validate(REPO / "inventories/local")
    assert run.returncode == 0, output(run)


def test_staging_needs_its_secrets_in_the_environment():
    run = validate(REPO / "inventories/staging")
    assert run.returncode != 0
    assert "Missing secrets for gekko_secrets_source=env" in output(run)
    for name in SECRET_ENV:
        assert name in output(run)

    run = validate(REPO / "inventories/staging", env=staging_secrets())
    assert run.returncode == 0, output(run)


def test_a_weak_secret_is_refused_without_showing_it():
    values = staging_secrets(GEKKO_REDIS_PASSWORD="changeme")
    run = validate(REPO / "inventories/staging", env=values)
    assert run.returncode != 0
    # The security policy gate's report: the rule, the name and the fix, and how to approve.
    assert "[secret-strength] GEKKO_REDIS_PASSWORD is shorter than 32 characters" in output(run)
    assert "openssl rand -base64 48" in output(run)
    assert "-e gekko_security_approval=<ticket>" in output(run)
    for value in values.values():
        assert value not in output(run)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        pytest.param("not a key at all", "must be one or more unencrypted Ed25519", id="no-pem"),
        pytest.param(
            pem(ec.generate_private_key(ec.SECP256R1())),
            "a token signing key is not an Ed25519 key",
            id="ecdsa",
        ),
    ],
)
def test_a_token_signing_key_that_is_not_ed25519_is_refused_before_anything_changes(keys, message):
    values = staging_secrets(GEKKO_TOKEN_SIGNING_KEYS=keys)
    run = validate(REPO / "inventories/staging", env=values)
    assert run.returncode != 0
    assert message in output(run)
    assert "openssl genpkey -algorithm ed25519" in output(run)
    assert "PRIVATE KEY-----" not in output(run)


def test_prod_accepts_secrets_from_an_encrypted_vault_file(prod, tmp_path):
    password = tmp_path / "vault-password"
    password.write_text(strong())
    write_vault(prod, vault_secrets(), password)
    run = validate(prod, "--vault-password-file", str(password))
    assert run.returncode == 0, output(run)


def test_prod_refuses_plaintext_secrets(prod):
    values = vault_secrets()
    path = write_vault(prod, values, password_file=None)
    run = validate(prod)
    assert run.returncode != 0
    assert f"[secret-plaintext] a secret is in plain text: {path}" in output(run)
    assert "ansible-vault encrypt" in output(run)
    for value in values.values():
        for secret in value if isinstance(value, list) else [value]:
            assert secret not in output(run)


def test_prod_refuses_generated_secrets_and_missing_vault_values(prod):
    run = validate(prod, "-e", "gekko_secrets_source=generated")
    assert run.returncode != 0
    assert "gekko_secrets_source=generated is for local, dev only, not prod" in output(run)

    run = validate(prod)
    assert run.returncode != 0
    assert "Missing secrets for gekko_secrets_source=vault" in output(run)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"gekko_environment": "production"}, "gekko_environment"),
        ({"gekko_gateway_port": 70000}, "must be a distinct number from 1 to 65535"),
        (
            {
                "gekko_services": [
                    {"name": "a", "port": 9901, "depends_on": ["b"]},
                    {"name": "b", "port": 9902, "depends_on": ["a"]},
                ]
            },
            "cycle",
        ),
    ],
)
def test_an_invalid_value_is_refused_with_its_name(extra, message):
    run = validate(REPO / "inventories/local", "-e", json.dumps(extra))
    assert run.returncode != 0
    assert message in output(run)
