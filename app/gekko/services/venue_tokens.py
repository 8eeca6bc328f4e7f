"""trading: the tokens of an account a user linked by signing in at the venue (OAuth2), kept
encrypted in its venue key's row and refreshed before they expire.

A refresh token can be exchanged once only, and several trading instances use the same link:
- refreshes of one link are serialised across instances by a transaction-scoped advisory lock
  (not the key row's lock, which orders being placed share), and the row is read again under it:
  an instance that finds the tokens already refreshed by another takes them instead of spending
  the used refresh token, which would break the link;
- a refresh, once asked of the venue, is finished and kept whoever stops waiting for it (it runs
  as its own task): the venue has spent the old refresh token by then, and the new pair is the
  only one left. Its write is retried on a fresh connection if the first fails.
A refresh the venue refuses (`invalid_grant`: the user disconnected the app, or the token was
spent) marks the link broken: its orders are refused with a clear reason until the user links
the account again into the same key (gekko.services.venue_links). A refusal of the platform's
own client (its secret) breaks no link: it is the operator's to mend.
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

# How often the new pair's write is tried before it is given up (and logged).
STORE_ATTEMPTS = 3


class LinkBroken(ExchangeError):
    """The venue refused the link's grant: the user must link the account again."""


def link_fields(tokens: Tokens, portfolio_id: str) -> dict[str, Any]:
    """What is sealed in a linked account's row: its tokens and the portfolio it trades in."""
    return tokens.as_fields() | {"portfolio_id": portfolio_id}


def _unavailable(venue: str, why: str) -> ExchangeError:
    """Nothing was asked of the venue: not an unsure answer for any order, nor its health's."""
    return ExchangeError(
        venue, f"the link's access token could not be had: {why}", http_status=503, credential=True
    )


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("venue link refresh failed: %r", task.exception())


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
        self._refreshing: asyncio.Task[None] | None = None
        self._http = VenueHttp(client.venue, 10.0)
        # When a refresh went unanswered: the venue may have spent the refresh token.
        self._in_doubt_since: float | None = None
        self.refreshes = 0

    async def current(self) -> str:
        if not self._tokens.fresh(self.clock()):
            await self._refreshed(self._tokens.access_token)
        return self._tokens.access_token

    async def after_refusal(self, refused: str) -> str:
        if self._tokens.access_token == refused:
            await self._refreshed(refused)
        return self._tokens.access_token

    async def _refreshed(self, seen: str) -> None:
        """Wait for the one refresh of `seen` (started now if none runs); shielded, so a
        caller's deadline or cancellation never cuts it short."""
        if self._refreshing is None or self._refreshing.done():
            if self._tokens.access_token != seen:
                return  # replaced meanwhile
            self._refreshing = asyncio.create_task(self._refresh(seen), name="venue-link-refresh")
            # Its error is its waiters'; with none left (all gave up), it is only logged.
            self._refreshing.add_done_callback(_retrieved)
        try:
            await asyncio.shield(self._refreshing)
        except ExchangeError:
            raise
        except Exception as exc:  # the database or the keys: nothing was sent with the token
            log.warning("venue link %s: no token: %r", self.key_id, exc)
            raise _unavailable(self.client.venue, type(exc).__name__) from None

    async def _refresh(self, seen: str) -> None:
        """New tokens for the link, unless another instance already replaced `seen`."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                f"venue-link-refresh/{self.key_id}",
            )
            row = await conn.fetchrow(
                "SELECT credentials_encrypted, broken_reason FROM trading.venue_keys WHERE id = $1",
                self.key_id,
            )
            if row is None or row["credentials_encrypted"] is None:
                raise LinkBroken(
                    self.client.venue, "the linked account was removed", credential=True
                )
            if row["broken_reason"] is not None:
                raise LinkBroken(self.client.venue, row["broken_reason"], credential=True)
            stored = Tokens.from_fields(
                unseal(self.keys, self.key_id, row["credentials_encrypted"])
            )
            if stored.access_token != seen and stored.fresh(self.clock()):
                self._tokens = stored  # refreshed by another instance meanwhile
                return
            try:
                tokens = await self.client.refresh(self._http, stored.refresh_token)
            except ExchangeError as exc:
                if exc.unsure:
                    self._in_doubt_since = self.clock()
                if not grant_refused(exc):
                    raise ExchangeError(
                        exc.venue,
                        f"the link's access token could not be refreshed: {exc.message}",
                        http_status=502,
                        code=exc.code,
                        retry_after_s=exc.retry_after_s,
                        explanation=exc.explanation,
                        credential=True,
                    ) from None
                broken = f"the venue refused the link's refresh ({exc.code}): link it again"
                if self._in_doubt_since is not None:
                    broken += " (a refresh whose answer was lost may have used its token)"
                # Kept (the transaction commits): every instance refuses its orders from now.
                await conn.execute(
                    "UPDATE trading.venue_keys SET broken_reason = $2 WHERE id = $1",
                    self.key_id,
                    broken,
                )
            else:
                broken = None
                # Kept here first: the venue has spent the old refresh token.
                self._tokens = tokens
                self._in_doubt_since = None
                await self._store(conn, tokens)
        if broken is not None:
            log.warning("venue link %s broken: %s", self.key_id, broken)
            raise LinkBroken(self.client.venue, broken, http_status=401, credential=True)
        self.refreshes += 1
        log.info("venue link %s: tokens refreshed", self.key_id)

    async def _store(self, conn: asyncpg.Connection, tokens: Tokens) -> None:
        sealed = seal(self.keys, self.key_id, link_fields(tokens, self.portfolio_id))
        update = (
            "UPDATE trading.venue_keys SET credentials_encrypted = $2"
            " WHERE id = $1 AND removed_at IS NULL"
        )
        try:
            await conn.execute(update, self.key_id, sealed)
            return
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning(
                "venue link %s: storing the new tokens failed (%r); retrying", self.key_id, exc
            )
        for attempt in range(1, STORE_ATTEMPTS):
            await asyncio.sleep(0.2 * attempt)
            try:
                await self.pool.execute(update, self.key_id, sealed)
                return
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("venue link %s: storing the new tokens failed (%r)", self.key_id, exc)
        log.error(
            "venue link %s: the new tokens are held by this instance only; other instances "
            "will find the link broken once their token expires",
            self.key_id,
        )

    async def close(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            await asyncio.wait({self._refreshing}, timeout=15)
        await self._http.close()


# Revoking a removed link's tokens is a courtesy to the user: bounded, in the background.
REVOKE_WITHIN_S = 10.0


async def revoke(client: OAuthClient, tokens: Tokens) -> None:
    """End the grant at the venue: its refresh token (RFC 7009), then its access token."""
    http = VenueHttp(client.venue, REVOKE_WITHIN_S)
    try:
        async with asyncio.timeout(REVOKE_WITHIN_S):
            await client.revoke(http, tokens.refresh_token, tokens.access_token)
            await client.revoke(http, tokens.access_token, tokens.access_token)
    except (ExchangeError, TimeoutError) as exc:
        log.warning("could not revoke a %s link's tokens: %s", client.venue, exc)
    finally:
        await http.close()


def revoke_in_background(app: FastAPI, venue_name: str, fields: dict[str, Any]) -> None:
    """A removed or replaced link's grant ended at the venue too, without holding up the answer
    (its refresh token is erased with the row anyway)."""
    client = app.state.venue_oauth.get(venue_name)
    if client is None:
        return
    task = asyncio.create_task(revoke(client, Tokens.from_fields(fields)), name="venue-link-revoke")
    app.state.venue_revocations.add(task)
    task.add_done_callback(app.state.venue_revocations.discard)
