"""trading: the tokens of an account a user linked by signing in at the venue (OAuth2), kept
encrypted in its venue key's row and refreshed before they expire.

A refresh token can be exchanged once only, and several trading instances use the same link:
a refresh is made under the key row's lock, after reading the row again. An instance that finds
the tokens already refreshed by another takes them instead of spending the (now used) refresh
token, which would break the link. A refresh the venue refuses (the grant was revoked, used or
expired) marks the link broken: its orders are then refused with a clear reason until the user
links the account again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from fastapi import FastAPI

from gekko.exchanges.base import ExchangeError, VenueHttp
from gekko.exchanges.credentials import seal, unseal
from gekko.exchanges.oauth import OAuthClient, Tokens, grant_refused
from gekko.security.crypto import DataKeys

log = logging.getLogger(__name__)


class LinkBroken(ExchangeError):
    """The venue refused the link's grant: the user must link the account again."""


def link_fields(tokens: Tokens, portfolio_id: str) -> dict[str, Any]:
    """What is sealed in a linked account's row: its tokens and the portfolio it trades in."""
    return tokens.as_fields() | {"portfolio_id": portfolio_id}


class StoredTokens:
    """The access token of one linked account, for gekko.exchanges.coinbase.LinkedAccount."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        keys: DataKeys,
        key_id: object,
        fields: dict[str, Any],
        client: OAuthClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.keys = keys
        self.key_id = key_id
        self.client = client
        self.clock = clock
        self.portfolio_id: str = fields["portfolio_id"]
        self._tokens = Tokens.from_fields(fields)
        self._lock = asyncio.Lock()
        self._http = VenueHttp(client.venue, 10.0)
        self.refreshes = 0

    async def current(self) -> str:
        if not self._tokens.fresh(self.clock()):
            async with self._lock:  # one refresh for the calls waiting on it
                if not self._tokens.fresh(self.clock()):
                    await self._refresh(self._tokens.access_token)
        return self._tokens.access_token

    async def after_refusal(self, refused: str) -> str:
        async with self._lock:
            if self._tokens.access_token == refused:
                await self._refresh(refused)
        return self._tokens.access_token

    async def _refresh(self, seen: str) -> None:
        """New tokens for the row, unless another instance already replaced `seen`."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT credentials_encrypted, broken_reason FROM trading.venue_keys"
                " WHERE id = $1 FOR UPDATE",
                self.key_id,
            )
            if row is None or row["credentials_encrypted"] is None:
                raise LinkBroken(self.client.venue, "the linked account was removed")
            if row["broken_reason"] is not None:
                raise LinkBroken(self.client.venue, row["broken_reason"])
            stored = Tokens.from_fields(
                unseal(self.keys, self.key_id, row["credentials_encrypted"])
            )
            if stored.access_token != seen and stored.fresh(self.clock()):
                self._tokens = stored  # refreshed by another instance meanwhile
                return
            try:
                tokens = await self.client.refresh(self._http, stored.refresh_token)
            except ExchangeError as exc:
                if not grant_refused(exc):
                    # Nothing was sent with the token: not an unsure answer for any order.
                    raise ExchangeError(
                        exc.venue,
                        f"the link's access token could not be refreshed: {exc.message}",
                        http_status=exc.http_status or 502,
                        code=exc.code,
                        retry_after_s=exc.retry_after_s,
                    ) from None
                broken = f"the venue refused the link's refresh ({exc.code}): link it again"
                # Kept (the transaction commits): every instance refuses its orders from now.
                await conn.execute(
                    "UPDATE trading.venue_keys SET broken_reason = $2 WHERE id = $1",
                    self.key_id,
                    broken,
                )
            else:
                broken = None
                await conn.execute(
                    "UPDATE trading.venue_keys SET credentials_encrypted = $2 WHERE id = $1",
                    self.key_id,
                    seal(self.keys, self.key_id, link_fields(tokens, self.portfolio_id)),
                )
        if broken is not None:
            log.warning("venue link %s broken: %s", self.key_id, broken)
            raise LinkBroken(self.client.venue, broken, http_status=401)
        self._tokens = tokens
        self.refreshes += 1
        log.info("venue link %s: tokens refreshed", self.key_id)

    async def close(self) -> None:
        await self._http.close()


# The revocation when a link is removed is a courtesy to the user: bounded, never in the way.
REVOKE_WITHIN_S = 5.0


async def revoke(client: OAuthClient, access_token: str) -> None:
    http = VenueHttp(client.venue, REVOKE_WITHIN_S)
    try:
        async with asyncio.timeout(REVOKE_WITHIN_S):
            await client.revoke(http, access_token)
    except (ExchangeError, TimeoutError) as exc:
        log.warning("could not revoke a %s access token: %s", client.venue, exc)
    finally:
        await http.close()


async def revoke_removed(app: FastAPI, venue_name: str, fields: dict[str, Any]) -> None:
    """A removed link's access ended at the venue too (best effort: it lapses within the hour
    anyway, and its refresh token is erased with the row)."""
    client = app.state.venue_oauth.get(venue_name)
    if client is not None:
        await revoke(client, fields["access_token"])
