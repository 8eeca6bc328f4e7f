"""Access tokens: JWT (HS256) issue and verification, and the bearer header."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

JWT_ALGORITHM = "HS256"
JWT_ISSUER = "gekko"
DEFAULT_TOKEN_TTL_S = 3600


class TokenError(Exception):
    """The bearer token is missing, malformed, expired or not signed by us."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    expires_at: int


def issue_token(
    user_id: int,
    secret: str,
    *,
    ttl_s: int = DEFAULT_TOKEN_TTL_S,
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    payload = {"sub": str(user_id), "iat": issued, "exp": issued + ttl_s, "iss": JWT_ISSUER}
    return jwt.encode(payload, secret, algorithm=JWT_ALGORITHM)


def decode_token(token: str, secret: str, *, leeway_s: int = 5) -> TokenClaims:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],  # pinned: never trust the token's own alg header
            issuer=JWT_ISSUER,
            leeway=leeway_s,
            options={"require": ["sub", "exp"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from exc
    try:
        user_id = int(claims["sub"])
    except (TypeError, ValueError) as exc:
        raise TokenError("invalid token: sub is not a user id") from exc
    return TokenClaims(user_id=user_id, expires_at=int(claims["exp"]))


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise TokenError("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("Authorization header must be 'Bearer <token>'")
    return token.strip()
