"""The controller derives the published keys from the signing keys without a module call."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.gekko.platform.plugins.filter.ed25519_public_key import (
    ed25519_public_key,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gekko.security.tokens import parse_public_keys


def pem(key, password: bytes | None = None) -> str:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def test_the_public_key_is_what_the_services_load_and_match():
    key = Ed25519PrivateKey.generate()
    public = ed25519_public_key(pem(key))
    assert public.startswith("-----BEGIN PUBLIC KEY-----")
    [loaded] = parse_public_keys(public.encode()).values()
    assert loaded.public_bytes_raw() == key.public_key().public_bytes_raw()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (pem(ec.generate_private_key(ec.SECP256R1())), "not an Ed25519 key"),
        (pem(Ed25519PrivateKey.generate(), b"secret-pass"), "is encrypted"),
        ("garbage", "not an unencrypted PEM private key"),
    ],
)
def test_other_keys_are_refused_with_the_fix_and_without_the_key(text, reason):
    with pytest.raises(AnsibleFilterError) as raised:
        ed25519_public_key(text)
    message = str(raised.value)
    assert reason in message and "openssl genpkey -algorithm ed25519" in message
    assert "PRIVATE KEY" not in message
