"""Sessions and their refresh tokens (OAuth 2.0 Security BCP, refresh token rotation).

A login starts a session. Its refresh token is an opaque random string, stored only as a
SHA-256 hash, and used once: a refresh answers with a new access token and a new refresh token,
and marks the old one used. Presenting a used refresh token again means it was copied, so the
whole session (the token's family) ends. A session also ends on logout, when its user ends it,
after `max_lifetime_s`, or when its latest refresh token goes unused for `refresh_ttl_s`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

DEFAULT_REFRESH_TOKEN_TTL_S = 14 * 86400
DEFAULT_SESSION_MAX_LIFETIME_S = 30 * 86400
_TOKEN_BYTES = 32


@dataclass(frozen=True)
class SessionPolicy:
    refresh_ttl_s: int = DEFAULT_REFRESH_TOKEN_TTL_S
    max_lifetime_s: int = DEFAULT_SESSION_MAX_LIFETIME_S


def new_refresh_token() -> str:
    return secrets.token_urlsafe(_TOKEN_BYTES)


def refresh_token_hash(token: str) -> bytes:
    """What the database keeps: a leaked table holds no usable token. The token is 256 random
    bits, so a plain hash is enough (no salt or slow hash needed, unlike a password)."""
    return hashlib.sha256(token.encode("utf-8")).digest()
