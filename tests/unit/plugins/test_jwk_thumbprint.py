"""The controller's kid for a signing key must be the one the users service puts in tokens."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.gekko.platform.plugins.filter.jwk_thumbprint import jwk_thumbprint
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gekko.security.tokens import key_id


def pem(public_key) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_the_filter_and_the_users_service_agree_on_the_kid():
    key = Ed25519PrivateKey.generate().public_key()
    assert jwk_thumbprint(pem(key)) == key_id(key)


def test_rfc8037_appendix_a_key_has_its_published_thumbprint():
    # RFC 8037 A.1-A.3: the Ed25519 example key and its RFC 7638 thumbprint.
    x = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    key = Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    ).public_key()
    assert key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == x
    assert jwk_thumbprint(pem(key)) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_other_keys_and_garbage_are_clear_errors():
    with pytest.raises(AnsibleFilterError, match="only Ed25519"):
        jwk_thumbprint(pem(ec.generate_private_key(ec.SECP256R1()).public_key()))
    with pytest.raises(AnsibleFilterError, match="not a PEM public key"):
        jwk_thumbprint("nope")
