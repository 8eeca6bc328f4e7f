"""OAuth2 for accounts a user links by signing in at the venue: Coinbase's authorization-code
flow (https://docs.cdp.coinbase.com/coinbase-app/oauth2-integration/), with PKCE.

The flow, as the docs give it:
  1. the user is sent to `GET {login}/oauth2/auth` with `response_type=code`, the client id, the
     redirect URI, the scopes, an unguessable `state` and a PKCE `code_challenge` (S256, RFC 7636);
  2. the venue sends them back to the redirect URI with `code` and `state`;
  3. `POST {login}/oauth2/token` (form: `grant_type=authorization_code`, code, client id and
     secret, redirect URI, `code_verifier`) answers `access_token`, `token_type` bearer,
     `expires_in` (3600: an access token lives one hour), `refresh_token` and `scope`;
  4. `grant_type=refresh_token` trades the refresh token for a new pair. A refresh token can be
     exchanged once only (and lives 1.5 years): whoever refreshes must keep the new one, and two
     processes must never both refresh the same one (gekko.services.venue_tokens);
  5. `POST {login}/oauth2/revoke` with `token` and the token as bearer ends the access; it
     answers 200 whether or not the token was valid.

The access token then authenticates Advanced Trade requests as `Authorization: Bearer`, in
place of the CDP key's JWT (gekko.exchanges.coinbase).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from gekko.exchanges.base import ExchangeError, VenueHttp, error_payload

LOGIN_URL = "https://login.coinbase.com"
# What the platform does with a linked account, per the Advanced Trade scope table: balances
# (GET /accounts), orders (POST /orders and batch_cancel: wallet:buys:create; GET
# /orders/historical: wallet:orders:read), products and portfolios (wallet:user:read), and a
# refresh token (offline_access).
SCOPES = (
    "wallet:accounts:read",
    "wallet:buys:create",
    "wallet:orders:read",
    "wallet:user:read",
    "offline_access",
)
# An access token is refreshed when this little of its life is left (or a quarter of it, for a
# short-lived one), so no call goes out with a token about to expire.
REFRESH_MARGIN_S = 300.0
# A refusal of the grant: the refresh token (or code) was used, revoked or expired. The user
# must link the account again.
GRANT_REFUSED = frozenset({"invalid_grant"})
# A refusal of the platform's own client (its id or secret): no user's link is at fault.
CLIENT_REFUSED = frozenset({"invalid_client", "unauthorized_client"})


def code_challenge(verifier: str) -> str:
    """PKCE S256: BASE64URL(SHA256(ASCII(verifier))), unpadded (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_verifier() -> str:
    """43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636 section 4.1): 64 here, 384 bits."""
    return secrets.token_urlsafe(48)


@dataclass(frozen=True, repr=False)
class Tokens:
    access_token: str
    refresh_token: str
    expires_at: float  # epoch seconds
    lifetime_s: float
    scope: str

    def fresh(self, now: float) -> bool:
        """Good for the next calls: more than the refresh margin of its life is left."""
        margin = min(REFRESH_MARGIN_S, self.lifetime_s / 4)
        return self.expires_at - now > margin

    def as_fields(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "lifetime_s": self.lifetime_s,
            "scope": self.scope,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Tokens:
        return cls(
            fields["access_token"],
            fields["refresh_token"],
            float(fields["expires_at"]),
            float(fields["lifetime_s"]),
            fields.get("scope", ""),
        )

    def __repr__(self) -> str:  # never a token
        return f"Tokens(expires_at={self.expires_at}, scope={self.scope!r})"


class AccessTokens(Protocol):
    """Where an adapter gets the bearer token of a linked account."""

    async def current(self) -> str:
        """A token with more than the refresh margin of its life left."""
        ...

    async def after_refusal(self, refused: str) -> str:
        """The token to use after the venue refused `refused` (401): a newer one."""
        ...

    async def close(self) -> None: ...


class FixedTokens:
    """Tokens just granted, used as they are (the check made before a link is kept)."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    async def current(self) -> str:
        return self.tokens.access_token

    async def after_refusal(self, refused: str) -> str:
        return self.tokens.access_token

    async def close(self) -> None:
        return None


@dataclass(frozen=True, repr=False)
class OAuthClient:
    """The platform's OAuth2 client registered with the venue."""

    client_id: str
    client_secret: str
    redirect_uri: str
    login_url: str = LOGIN_URL
    scopes: tuple[str, ...] = SCOPES
    venue: str = "coinbase"

    def authorize_url(self, state: str, verifier: str) -> str:
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(self.scopes),
            "state": state,
            "code_challenge": code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        return f"{self.login_url}/oauth2/auth?{urlencode(query)}"

    async def exchange_code(self, http: VenueHttp, code: str, verifier: str) -> Tokens:
        return await self._grant(
            http,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
            },
        )

    async def refresh(self, http: VenueHttp, refresh_token: str) -> Tokens:
        return await self._grant(
            http, {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )

    async def revoke(self, http: VenueHttp, token: str, access_token: str) -> None:
        """Revoke `token` (an access or refresh token: RFC 7009), authenticated with the
        access token, as the docs ask."""
        await http.send(
            "POST",
            f"{self.login_url}/oauth2/revoke",
            "POST /oauth2/revoke",
            data=urlencode({"token": token}).encode(),
            headers={
                "Authorization": f"Bearer {access_token}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )

    async def _grant(
        self, http: VenueHttp, form: dict[str, str], clock: Callable[[], float] = time.time
    ) -> Tokens:
        what = f"POST /oauth2/token ({form['grant_type']})"
        body = form | {"client_id": self.client_id, "client_secret": self.client_secret}
        asked_at = clock()
        answer = await http.send(
            "POST",
            f"{self.login_url}/oauth2/token",
            what,
            data=urlencode(body).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        if answer.status >= 300:
            payload = error_payload(answer.text)
            error = payload.get("error")
            raise ExchangeError(
                self.venue,
                f"{what}: {payload.get('error_description') or error or answer.text[:200]}",
                http_status=answer.status,
                code=error,
                # A refused grant is final; anything else (5xx, no answer) may pass.
                unsure=answer.status >= 500,
                explanation=(
                    "the grant was used, revoked or expired: the account must be linked again"
                    if error in GRANT_REFUSED
                    else "the platform's OAuth client (its id or secret) was refused: the "
                    "operator must mend gekko_coinbase_oauth_client_id or its secret"
                    if error in CLIENT_REFUSED
                    else ""
                ),
            )
        tokens = http.accepted(answer, what)
        try:
            lifetime = float(tokens["expires_in"])
            return Tokens(
                tokens["access_token"],
                tokens["refresh_token"],
                asked_at + lifetime,
                lifetime,
                tokens.get("scope", ""),
            )
        except (KeyError, TypeError, ValueError):
            raise ExchangeError(
                self.venue,
                f"{what}: the answer lacks access_token, refresh_token or expires_in "
                "(was offline_access granted?)",
                http_status=answer.status,
            ) from None


def grant_refused(error: ExchangeError) -> bool:
    return error.code in GRANT_REFUSED


def client_refused(error: ExchangeError) -> bool:
    return error.code in CLIENT_REFUSED
