import base64
import hashlib
import hmac
import json
import os
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gekko.security import keyfiles
from gekko.security.passwords import hash_password, verify_password
from gekko.security.sessions import new_refresh_token, refresh_token_hash
from gekko.security.tokens import (
    SigningKey,
    TokenError,
    VerifyKeys,
    bearer_token,
    decode_token,
    generate_key_files,
    public_jwk,
)


def _pem_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pem_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _replace(path, data: bytes) -> None:
    """As a deploy writes a file: a new file renamed over the old one."""
    tmp = f"{path}.new"
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _hs256_by_hand(header: dict, payload: dict, key: bytes) -> str:
    signing_input = _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(payload).encode())
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode()


@pytest.fixture
def keys(tmp_path):
    signing, verify = generate_key_files(str(tmp_path))
    return SigningKey(signing), VerifyKeys(verify), signing, verify


def test_a_token_carries_user_session_and_kid_and_verifies(keys):
    signer, verifier, _, _ = keys
    token = signer.issue(42, "s-1", ttl_s=60)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] == signer.kid
    claims = decode_token(token, verifier)
    assert (claims.user_id, claims.session_id) == (42, "s-1")
    assert claims.expires_at - time.time() == pytest.approx(60, abs=2)


def test_access_tokens_live_one_hour_by_default(keys):
    signer, verifier, _, _ = keys
    assert decode_token(signer.issue(1, "s"), verifier).expires_at - time.time() == pytest.approx(
        3600, abs=2
    )


def test_expired_token_is_rejected(keys):
    signer, verifier, _, _ = keys
    with pytest.raises(TokenError, match="expired"):
        decode_token(signer.issue(1, "s", ttl_s=60, now=1_000_000), verifier)


def test_a_token_signed_by_an_unpublished_key_is_rejected(keys, tmp_path):
    _, verifier, _, _ = keys
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    stranger = SigningKey(generate_key_files(str(other_dir))[0])
    with pytest.raises(TokenError, match="unknown key"):
        decode_token(stranger.issue(1, "s"), verifier)


def test_forged_algorithms_and_claims_are_rejected(keys):
    signer, verifier, signing_path, verify_path = keys
    kid = signer.kid
    base = {"sub": "1", "sid": "s", "iat": 1, "exp": 9_999_999_999, "iss": "gekko"}
    base["aud"] = "gekko-api"
    unsigned = jwt.encode(base, None, algorithm="none", headers={"kid": kid})
    # HS256 keyed with the public key's PEM: the classic algorithm-confusion attack.
    with open(verify_path, "rb") as handle:
        public_pem = handle.read()
    hs = _hs256_by_hand({"alg": "HS256", "typ": "JWT", "kid": kid}, base, public_pem)
    private = serialization.load_pem_private_key(open(signing_path, "rb").read(), None)
    wrong_audience = jwt.encode({**base, "aud": "other"}, private, "EdDSA", headers={"kid": kid})
    no_session = jwt.encode(
        {k: v for k, v in base.items() if k != "sid"}, private, "EdDSA", headers={"kid": kid}
    )
    no_kid = jwt.encode(base, private, "EdDSA")
    for token in (unsigned, hs, wrong_audience, no_session, no_kid, "not.a.jwt"):
        with pytest.raises(TokenError):
            decode_token(token, verifier)


def test_kid_is_the_rfc7638_thumbprint():
    # RFC 8037, appendix A.1 (the key) and A.3 (its RFC 7638 thumbprint).
    d = base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    key = Ed25519PrivateKey.from_private_bytes(d)
    jwk = public_jwk(key.public_key())
    assert (jwk["kty"], jwk["crv"], jwk["x"], jwk["alg"], jwk["use"]) == (
        "OKP",
        "Ed25519",
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        "EdDSA",
        "sig",
    )
    assert jwk["kid"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_a_rotation_is_picked_up_without_a_restart(keys, monkeypatch):
    """Publish the new key beside the old, then sign with it: old tokens keep working, new
    ones carry the new kid, and both verify without reloading anything by hand."""
    monkeypatch.setattr(keyfiles, "KEY_FILE_CHECK_S", 0.0)
    signer, verifier, signing_path, verify_path = keys
    old_token, old_kid = signer.issue(1, "s"), signer.kid
    new_key = Ed25519PrivateKey.generate()
    with open(verify_path, "rb") as handle:
        published = handle.read()
    _replace(verify_path, published + _pem_public(new_key))
    assert len(verifier.jwks()["keys"]) == 2
    _replace(signing_path, _pem_private(new_key))
    new_token = signer.issue(1, "s")
    assert signer.kid != old_kid
    assert jwt.get_unverified_header(new_token)["kid"] == signer.kid
    assert decode_token(old_token, verifier).user_id == 1
    assert decode_token(new_token, verifier).user_id == 1
    # The old key retired: its tokens are refused, the new ones still pass.
    _replace(verify_path, _pem_public(new_key))
    with pytest.raises(TokenError, match="unknown key"):
        decode_token(old_token, verifier)
    assert decode_token(new_token, verifier).user_id == 1


def test_a_broken_replacement_keeps_the_last_good_keys(keys, monkeypatch):
    monkeypatch.setattr(keyfiles, "KEY_FILE_CHECK_S", 0.0)
    signer, verifier, _, verify_path = keys
    token = signer.issue(3, "s")
    _replace(verify_path, b"garbage")
    assert decode_token(token, verifier).user_id == 3
    os.remove(verify_path)
    assert decode_token(token, verifier).user_id == 3


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "token"])
def test_bearer_header_must_be_well_formed(header):
    with pytest.raises(TokenError):
        bearer_token(header)


def test_bearer_header_is_parsed():
    assert bearer_token("bearer abc.def") == "abc.def"


def test_refresh_tokens_are_random_and_kept_only_as_a_hash():
    first, second = new_refresh_token(), new_refresh_token()
    assert first != second and len(first) >= 43  # 256 bits, base64url
    assert refresh_token_hash(first) == hashlib.sha256(first.encode()).digest()
    assert refresh_token_hash(first) != refresh_token_hash(second)


def test_password_hash_verifies_only_the_right_password():
    hashed = hash_password("correct-horse")
    assert hashed != "correct-horse"
    assert verify_password(hashed, "correct-horse")
    assert not verify_password(hashed, "wrong-horse")
    assert not verify_password("not-a-hash", "correct-horse")
