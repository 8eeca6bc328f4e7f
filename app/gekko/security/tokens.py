"""Access tokens: EdDSA (Ed25519) JWTs that only the users service signs and everyone verifies.

The keys live in PEM files a deploy (or `playbooks/rotate-secrets.yml`) writes on each host:
the published public keys for every component, the one private key for the users service. Each
key's `kid` is its RFC 7638 thumbprint, so both sides agree on it without being told. Both sides
re-read their file when it changes (checked at most once a second), so a rotation needs no
restart: the new public key is published everywhere first, then the users service signs with it,
and tokens signed with the previous key stay valid while it is still published.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gekko.security.keyfiles import KeyFileError, WatchedFile
from gekko.security.rbac import DEFAULT_ROLE, Role, parse_role

JWT_ALGORITHM = "EdDSA"
JWT_ISSUER = "gekko"
JWT_AUDIENCE = "gekko-api"
ACCESS_TOKEN_TTL_S = 3600
# The token a password sign-in gets when the account has MFA: good only for
# POST /api/v1/users/login/mfa, for a few minutes.
MFA_CHALLENGE_AUDIENCE = "gekko-mfa"
MFA_CHALLENGE_TTL_S = 300

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


class TokenError(Exception):
    """The bearer token is missing, malformed, expired or not signed by a published key."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    session_id: str
    expires_at: int
    role: Role = DEFAULT_ROLE
    # When this session last proved a second factor (epoch seconds); None without MFA.
    mfa_at: int | None = None


@dataclass(frozen=True)
class MfaChallenge:
    user_id: int
    challenge_id: str
    expires_at: int


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The key as a JWK (RFC 8037), with its RFC 7638 thumbprint as `kid`."""
    x = _b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    # RFC 7638: the required members only, sorted, no whitespace.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    kid = _b64url(hashlib.sha256(canonical.encode("ascii")).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": JWT_ALGORITHM}


def key_id(public_key: Ed25519PublicKey) -> str:
    return public_jwk(public_key)["kid"]


def parse_public_keys(pem: bytes) -> dict[str, Ed25519PublicKey]:
    """Every Ed25519 public key in a file of concatenated PEM blocks, by `kid`."""
    keys: dict[str, Ed25519PublicKey] = {}
    for block in _PEM_BLOCK.finditer(pem):
        if b"PRIVATE" in block.group(1):
            raise KeyFileError("holds a private key; publish public keys only (BEGIN PUBLIC KEY)")
        try:
            key = serialization.load_pem_public_key(block.group(0))
        except ValueError as exc:
            raise KeyFileError(f"a PEM block is not a public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"only Ed25519 keys are accepted, found {type(key).__name__}")
        keys[key_id(key)] = key
    if not keys:
        raise KeyFileError("no public key (-----BEGIN PUBLIC KEY-----) found")
    return keys


def parse_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"only Ed25519 keys are accepted, found {type(key).__name__}")
    return key


class VerifyKeys:
    """The published public keys (GEKKO_JWT_VERIFY_KEYS_FILE)."""

    def __init__(self, path: str) -> None:
        self._file = WatchedFile(path, parse_public_keys)

    def key(self, kid: str) -> Ed25519PublicKey:
        key = self._file.get().get(kid)
        if key is None:
            raise TokenError("invalid token: signed by an unknown key")
        return key

    def kids(self) -> list[str]:
        return list(self._file.get())

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (RFC 7517) of every published key."""
        return {"keys": [public_jwk(key) for key in self._file.get().values()]}


class SigningKey:
    """The users service's private key (GEKKO_JWT_SIGNING_KEY_FILE)."""

    def __init__(self, path: str) -> None:
        self._file = WatchedFile(path, parse_private_key)

    @property
    def kid(self) -> str:
        return key_id(self._file.get().public_key())

    def issue(
        self,
        user_id: int,
        session_id: str,
        *,
        role: Role = DEFAULT_ROLE,
        ttl_s: int = ACCESS_TOKEN_TTL_S,
        now: float | None = None,
        mfa_at: int | None = None,
    ) -> str:
        issued = int(time.time() if now is None else now)
        payload: dict[str, Any] = {
            "iss": JWT_ISSUER,
            "aud": JWT_AUDIENCE,
            "sub": str(user_id),
            "sid": session_id,
            "role": str(role),
            "iat": issued,
            "exp": issued + ttl_s,
            "jti": uuid.uuid4().hex,
            # RFC 8176 authentication methods; mfa_at dates the second factor for step-up.
            "amr": ["pwd", "otp"] if mfa_at is not None else ["pwd"],
        }
        if mfa_at is not None:
            payload["mfa_at"] = int(mfa_at)
        return self._sign(payload)

    def issue_mfa_challenge(self, user_id: int, *, now: float | None = None) -> str:
        """Proof that this user's password was right, to be completed with a second factor."""
        issued = int(time.time() if now is None else now)
        return self._sign(
            {
                "iss": JWT_ISSUER,
                "aud": MFA_CHALLENGE_AUDIENCE,
                "sub": str(user_id),
                "iat": issued,
                "exp": issued + MFA_CHALLENGE_TTL_S,
                "jti": uuid.uuid4().hex,
            }
        )

    def _sign(self, payload: dict[str, Any]) -> str:
        key = self._file.get()
        return jwt.encode(
            payload, key, algorithm=JWT_ALGORITHM, headers={"kid": key_id(key.public_key())}
        )


def _verified(
    token: str, keys: VerifyKeys, audience: str, required: list[str], leeway_s: int
) -> dict[str, Any]:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    if not isinstance(kid, str):
        raise TokenError("invalid token: no key id (kid) in its header")
    try:
        return jwt.decode(
            token,
            keys.key(kid),
            algorithms=[JWT_ALGORITHM],  # pinned: never trust the token's own alg header
            issuer=JWT_ISSUER,
            audience=audience,
            leeway=leeway_s,
            options={"require": required},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from None


def decode_token(token: str, keys: VerifyKeys, *, leeway_s: int = 5) -> TokenClaims:
    claims = _verified(token, keys, JWT_AUDIENCE, ["sub", "sid", "role", "exp", "iat"], leeway_s)
    try:
        user_id = int(claims["sub"])
        role = parse_role(claims["role"])
        mfa_at = int(claims["mfa_at"]) if claims.get("mfa_at") is not None else None
    except (TypeError, ValueError) as exc:
        raise TokenError(f"invalid token: {exc}") from None
    return TokenClaims(
        user_id=user_id,
        session_id=str(claims["sid"]),
        expires_at=int(claims["exp"]),
        role=role,
        mfa_at=mfa_at,
    )


def decode_mfa_challenge(token: str, keys: VerifyKeys) -> MfaChallenge:
    claims = _verified(token, keys, MFA_CHALLENGE_AUDIENCE, ["sub", "exp", "iat", "jti"], 0)
    try:
        return MfaChallenge(int(claims["sub"]), str(claims["jti"]), int(claims["exp"]))
    except (TypeError, ValueError) as exc:
        raise TokenError(f"invalid token: {exc}") from None


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise TokenError("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("Authorization header must be 'Bearer <token>'")
    return token.strip()


def generate_key_files(directory: str) -> tuple[str, str]:
    """A fresh signing key and its published key in `directory` (tests and local tools)."""
    key = Ed25519PrivateKey.generate()
    private_path = os.path.join(directory, "signing-key.pem")
    public_path = os.path.join(directory, "verify-keys.pem")
    with open(os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(public_path, "wb") as out:
        out.write(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private_path, public_path
