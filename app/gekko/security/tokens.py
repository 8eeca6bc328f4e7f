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
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gekko.security.rbac import DEFAULT_ROLE, Role, parse_role

JWT_ALGORITHM = "EdDSA"
JWT_ISSUER = "gekko"
JWT_AUDIENCE = "gekko-api"
ACCESS_TOKEN_TTL_S = 3600
# How often a key file's metadata is looked at for a change, at most.
KEY_FILE_CHECK_S = 1.0

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)
T = TypeVar("T")


class TokenError(Exception):
    """The bearer token is missing, malformed, expired or not signed by a published key."""


class KeyFileError(Exception):
    """A key file is missing, unreadable or does not hold the Ed25519 key(s) it should."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    session_id: str
    expires_at: int
    role: Role = DEFAULT_ROLE


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


class _WatchedFile(Generic[T]):
    """A file parsed once and again whenever it is replaced (new inode, size or mtime)."""

    def __init__(self, path: str, parse: Callable[[bytes], T]) -> None:
        self.path = path
        self._parse = parse
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._value: T = self._load()  # a bad file at start is a configuration error

    def _read(self) -> tuple[tuple[int, int, int], bytes]:
        try:
            with open(self.path, "rb") as handle:
                st = os.fstat(handle.fileno())
                return (st.st_ino, st.st_size, st.st_mtime_ns), handle.read()
        except OSError as exc:
            raise KeyFileError(f"{self.path} cannot be read: {exc.strerror}") from None

    def _load(self) -> T:
        stamp, data = self._read()
        try:
            value = self._parse(data)
        except KeyFileError as exc:
            raise KeyFileError(f"{self.path}: {exc}") from None
        self._stamp = stamp
        self._checked_at = time.monotonic()
        return value

    def get(self) -> T:
        """The parsed file, re-read if it was replaced (looked at once a second at most, so a
        flood of tokens with unknown key ids costs nothing). A replacement that does not parse
        is ignored: the last good keys stay in force."""
        now = time.monotonic()
        if now - self._checked_at < KEY_FILE_CHECK_S:
            return self._value
        with self._lock:
            if now - self._checked_at < KEY_FILE_CHECK_S:
                return self._value
            self._checked_at = now
            try:
                st = os.stat(self.path)
                if (st.st_ino, st.st_size, st.st_mtime_ns) != self._stamp:
                    self._value = self._load()
            except (OSError, KeyFileError):
                pass
            return self._value


class VerifyKeys:
    """The published public keys (GEKKO_JWT_VERIFY_KEYS_FILE)."""

    def __init__(self, path: str) -> None:
        self._file = _WatchedFile(path, parse_public_keys)

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
        self._file = _WatchedFile(path, parse_private_key)

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
    ) -> str:
        key = self._file.get()
        issued = int(time.time() if now is None else now)
        payload = {
            "iss": JWT_ISSUER,
            "aud": JWT_AUDIENCE,
            "sub": str(user_id),
            "sid": session_id,
            "role": str(role),
            "iat": issued,
            "exp": issued + ttl_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            payload, key, algorithm=JWT_ALGORITHM, headers={"kid": key_id(key.public_key())}
        )


def decode_token(token: str, keys: VerifyKeys, *, leeway_s: int = 5) -> TokenClaims:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    if not isinstance(kid, str):
        raise TokenError("invalid token: no key id (kid) in its header")
    try:
        claims = jwt.decode(
            token,
            keys.key(kid),
            algorithms=[JWT_ALGORITHM],  # pinned: never trust the token's own alg header
            issuer=JWT_ISSUER,
            audience=JWT_AUDIENCE,
            leeway=leeway_s,
            options={"require": ["sub", "sid", "role", "exp", "iat"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    try:
        user_id = int(claims["sub"])
        role = parse_role(claims["role"])
    except (TypeError, ValueError) as exc:
        raise TokenError(f"invalid token: {exc}") from None
    return TokenClaims(
        user_id=user_id, session_id=str(claims["sid"]), expires_at=int(claims["exp"]), role=role
    )


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
