"""Coinbase Advanced Trade API (https://docs.cdp.coinbase.com/advanced-trade/docs/welcome).

A CDP API key ("organizations/{org_id}/apiKeys/{key_id}" and its EC P-256 private key) signs a
short-lived JWT for every request, as the docs' example does: ES256, headers `kid` (the key
name) and `nonce` (random hex), claims `sub` (the key name), `iss` "cdp", `nbf` now, `exp` two
minutes later and `uri` "METHOD host/path" of that one request, sent as `Authorization: Bearer`.

An account a user linked by signing in at Coinbase (OAuth2, gekko.exchanges.oauth) sends its
access token as the bearer instead, refreshed before it expires; a 401 gets one newer token and
one more try (a refused request was not taken). Such an account's spot orders name the portfolio
it granted (`retail_portfolio_id`, required for OAuth connections since May 2025).

Every order carries `client_order_id`. An order whose answer was lost (a timeout, a dropped
connection, a 5xx) is looked up by that id among the product's orders and never sent again by
the adapter: a lost request may still be accepted while its JWT lives (two minutes), so an
order the venue does not list yet is reported as unsure, for the caller to look up later.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gekko.exchanges.base import (
    Balance,
    ExchangeError,
    ExchangeOrder,
    OrderRequest,
    OrderStatus,
    SymbolRules,
    VenueHttp,
    add_fee,
    error_payload,
    retry_after_s,
)
from gekko.exchanges.oauth import AccessTokens

VENUE = "coinbase"
# GET /accounts: 250 accounts a page (its largest), this many pages at most.
ACCOUNTS_PAGE = 250
ACCOUNT_PAGES = 20
LIVE_URL = "https://api.coinbase.com"
# The Advanced Trade static sandbox: the same paths, canned answers, no real orders.
SANDBOX_URL = "https://api-sandbox.coinbase.com"
PREFIX = "/api/v3/brokerage"
JWT_LIFETIME_S = 120
EXPLAINED = {
    401: "the JWT was refused: the key name or private key is wrong, the key was deleted, or "
    "this host's clock is off by more than the token's two minutes (check NTP)",
    403: "the API key lacks the permission (view/trade) or its IP allow-list refuses this host",
    429: "the key's rate limit is exceeded: back off",
}
# The same for an account linked by OAuth2.
EXPLAINED_LINKED = EXPLAINED | {
    401: "the account's access token was refused even after a refresh: the user revoked the "
    "link at Coinbase; link the account again",
    403: "the link lacks the scope this call needs, or the portfolio it names was not granted",
}
_STATUSES = {
    "PENDING": OrderStatus.NEW,
    "QUEUED": OrderStatus.NEW,
    "OPEN": OrderStatus.NEW,
    "CANCEL_QUEUED": OrderStatus.NEW,
    "FILLED": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELED,
    "EXPIRED": OrderStatus.EXPIRED,
    "FAILED": OrderStatus.REJECTED,
}


@dataclass(frozen=True, repr=False)
class Credentials:
    """A CDP API key: its name and its PEM EC private key."""

    key_name: str
    private_key_pem: str

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(self.private_key_pem.encode(), password=None)
        except TypeError:  # a passphrase-protected key
            raise ValueError("the private key is protected by a passphrase") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("a CDP API key's secret is an EC (P-256) private key")
        return key

    def __repr__(self) -> str:  # never the private key
        return f"Credentials(key_name={self.key_name})"


@dataclass(frozen=True)
class LinkedAccount:
    """A user's account linked by OAuth2: where its tokens come from, the portfolio it trades."""

    tokens: AccessTokens
    portfolio_id: str


def default_portfolio(answer: Mapping[str, Any]) -> str | None:
    """The portfolio an OAuth link trades in, from GET /portfolios: the default one if it was
    granted, else the only one; None when none (or several, none the default) was granted."""
    portfolios = [p for p in answer.get("portfolios", []) if not p.get("deleted")]
    default = [p for p in portfolios if p.get("type") == "DEFAULT"]
    chosen = default or (portfolios if len(portfolios) == 1 else [])
    return chosen[0]["uuid"] if chosen else None


def request_uri(method: str, base_url: str, path: str) -> str:
    """The `uri` claim: "METHOD host/path", without scheme or query string."""
    return f"{method} {urlsplit(base_url).netloc}{path}"


def build_jwt(credentials: Credentials, uri: str, now: int | None = None) -> str:
    issued = int(time.time()) if now is None else now
    claims = {
        "sub": credentials.key_name,
        "iss": "cdp",
        "nbf": issued,
        "exp": issued + JWT_LIFETIME_S,
        "uri": uri,
    }
    headers = {"kid": credentials.key_name, "nonce": secrets.token_hex()}
    return jwt.encode(claims, credentials.private_key(), algorithm="ES256", headers=headers)


def order_body(order: OrderRequest, portfolio_id: str | None = None) -> dict[str, Any]:
    size = format(order.quantity, "f")
    if order.type == "market":
        configuration = {"market_market_ioc": {"base_size": size}}
    else:
        configuration = {
            "limit_limit_gtc": {
                "base_size": size,
                "limit_price": format(order.price, "f"),
                "post_only": False,
            }
        }
    body = {
        "client_order_id": order.client_order_id,
        "product_id": order.symbol,
        "side": order.side.upper(),
        "order_configuration": configuration,
    }
    if portfolio_id is not None:
        body["retail_portfolio_id"] = portfolio_id
    return body


def order_from(order: Mapping[str, Any]) -> ExchangeOrder:
    configuration = next(iter((order.get("order_configuration") or {}).values()), {})
    price = configuration.get("limit_price")
    filled = Decimal(order.get("filled_size") or "0")
    status = _STATUSES.get(order.get("status", ""), OrderStatus.NEW)
    if status is OrderStatus.NEW and filled > 0:
        status = OrderStatus.PARTIALLY_FILLED
    # The order's fill totals, as the Order object states them: filled_value in the quote
    # currency, total_fees too (Coinbase charges its fees in the product's quote currency).
    value = Decimal(order.get("filled_value") or "0")
    if not value and filled:
        value = filled * Decimal(order.get("average_filled_price") or "0")
    quote_currency = order["product_id"].rpartition("-")[2]
    fees: dict[str, Decimal] = {}
    add_fee(fees, quote_currency, Decimal(order.get("total_fees") or "0"))
    return ExchangeOrder(
        venue=VENUE,
        symbol=order["product_id"],
        venue_order_id=order["order_id"],
        client_order_id=order.get("client_order_id", ""),
        status=status,
        side="buy" if order.get("side") == "BUY" else "sell",
        quantity=Decimal(configuration.get("base_size") or "0"),
        filled_quantity=filled,
        price=Decimal(price) if price else None,
        filled_value=value,
        fees=fees,
    )


class Coinbase:
    """One Coinbase Advanced Trade portfolio, through a CDP API key or a linked account."""

    venue = VENUE

    def __init__(
        self,
        credentials: Credentials | LinkedAccount,
        base_url: str = LIVE_URL,
        *,
        timeout_s: float = 10.0,
        attempts: int = 3,
        clock: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self.credentials = credentials
        self.base_url = base_url.rstrip("/")
        self.http = VenueHttp(VENUE, timeout_s)
        self.attempts = attempts
        self.clock = clock

    @property
    def last_latency_ms(self) -> float | None:
        return self.http.last_latency_ms

    async def close(self) -> None:
        await self.http.close()
        if isinstance(self.credentials, LinkedAccount):
            await self.credentials.tokens.close()

    async def place_order(self, order: OrderRequest) -> ExchangeOrder:
        linked = self.credentials if isinstance(self.credentials, LinkedAccount) else None
        body = order_body(order, linked.portfolio_id if linked else None)
        try:
            answer = await self._call("POST", "/orders", body=body)
        except ExchangeError as exc:
            if not exc.unsure:
                raise
            return await self._settle(order, exc)
        if not isinstance(answer, dict) or not answer.get("success"):
            failure = (answer.get("error_response") if isinstance(answer, dict) else None) or {}
            raise ExchangeError(
                VENUE,
                f"order {order.client_order_id} refused: "
                f"{failure.get('message') or failure.get('error') or 'no reason given'}",
                code=failure.get("error") or answer.get("failure_reason"),
            )
        # Placed: described from the request and the venue's ids, with no second call that
        # could fail and make a placed order look refused.
        placed = answer["success_response"]
        return order_from(
            {
                **body,
                "order_id": placed["order_id"],
                "status": "PENDING",
                "filled_size": "0",
            }
        )

    async def _settle(self, order: OrderRequest, lost: ExchangeError) -> ExchangeOrder:
        """After an order's answer was lost: the order as the venue lists it; else unsure."""
        for attempt in range(self.attempts):
            try:
                found = await self.get_order(order.symbol, order.client_order_id)
            except ExchangeError as exc:
                lost = exc
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if found is not None:
                return found
            break
        raise ExchangeError(
            VENUE,
            f"order {order.client_order_id}: its answer was lost ({lost.message}) and the venue "
            "does not list it yet; look it up by its client order id before sending it again",
            unsure=True,
        )

    async def get_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        """The order with this client id, among the product's orders (newest first)."""
        cursor = ""
        for _page in range(10):
            query = {"product_ids": symbol, "limit": 250} | ({"cursor": cursor} if cursor else {})
            answer = await self._call("GET", "/orders/historical/batch", query=query)
            for order in answer.get("orders", []):
                if order.get("client_order_id") == client_order_id:
                    return order_from(order)
            cursor = answer.get("cursor") or ""
            if not answer.get("has_next") or not cursor:
                return None
        return None

    async def cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder:
        found = await self.get_order(symbol, client_order_id)
        if found is None:
            raise ExchangeError(VENUE, f"no order {client_order_id} on {symbol}", http_status=404)
        answer = await self._call(
            "POST", "/orders/batch_cancel", body={"order_ids": [found.venue_order_id]}
        )
        result = (answer.get("results") or [{}])[0]
        if not result.get("success"):
            raise ExchangeError(
                VENUE,
                f"order {client_order_id} not cancelled: {result.get('failure_reason')}",
                code=result.get("failure_reason"),
            )
        order = await self._call("GET", f"/orders/historical/{found.venue_order_id}")
        return order_from(order["order"])

    async def balances(self) -> list[Balance]:
        """Every account (wallet) of the portfolio, page by page, following the cursor."""
        found: list[Balance] = []
        cursor = ""
        for _page in range(ACCOUNT_PAGES):
            query: dict[str, Any] = {"limit": ACCOUNTS_PAGE}
            if cursor:
                query["cursor"] = cursor
            answer = await self._call("GET", "/accounts", query=query)
            found.extend(
                Balance(
                    asset=a["currency"],
                    free=Decimal(a["available_balance"]["value"]),
                    locked=Decimal((a.get("hold") or {}).get("value", "0")),
                )
                for a in answer.get("accounts", [])
            )
            cursor = answer.get("cursor") or ""
            if not answer.get("has_next") or not cursor:
                return found
        raise ExchangeError(
            VENUE, f"more than {ACCOUNTS_PAGE * ACCOUNT_PAGES} accounts: not all read"
        )

    async def portfolios(self) -> Any:
        return await self._call("GET", "/portfolios")

    async def symbols(self) -> dict[str, SymbolRules]:
        answer = await self._call("GET", "/products")
        return {
            p["product_id"]: SymbolRules(
                symbol=p["product_id"],
                base_asset=p.get("base_currency_id") or p["product_id"].split("-")[0],
                quote_asset=p.get("quote_currency_id") or p["product_id"].split("-")[-1],
                trading=not p.get("trading_disabled", False) and p.get("status") == "online",
                tick_size=Decimal(p["price_increment"]) if p.get("price_increment") else None,
                step_size=Decimal(p["base_increment"]) if p.get("base_increment") else None,
                min_quantity=Decimal(p["base_min_size"]) if p.get("base_min_size") else None,
                min_notional=Decimal(p["quote_min_size"]) if p.get("quote_min_size") else None,
            )
            for p in answer.get("products", [])
        }

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        full_path = PREFIX + path
        data = None
        headers: dict[str, str] = {}
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        url = self.base_url + full_path + (f"?{urlencode(query)}" if query else "")
        what = f"{method} {full_path}"
        bearer = await self._bearer(method, full_path)
        answer = await self.http.send(method, url, what, data=data, headers=headers | _auth(bearer))
        if answer.status == 401 and isinstance(self.credentials, LinkedAccount):
            # Refused, so not taken: once more with a newer token (revoked early, or refreshed
            # by another instance).
            bearer = await self.credentials.tokens.after_refusal(bearer)
            answer = await self.http.send(
                method, url, what, data=data, headers=headers | _auth(bearer)
            )
        if answer.status < 300:
            return self.http.accepted(answer, what)
        payload = error_payload(answer.text)
        raise ExchangeError(
            VENUE,
            f"{what}: {payload.get('message') or answer.text.strip()[:300]}",
            http_status=answer.status,
            code=payload.get("error"),
            retry_after_s=retry_after_s(answer.headers.get("Retry-After")),
            unsure=answer.status >= 500,
            explanation=(
                EXPLAINED_LINKED if isinstance(self.credentials, LinkedAccount) else EXPLAINED
            ).get(answer.status, ""),
        )

    async def _bearer(self, method: str, full_path: str) -> str:
        if isinstance(self.credentials, LinkedAccount):
            return await self.credentials.tokens.current()
        return build_jwt(
            self.credentials, request_uri(method, self.base_url, full_path), self.clock()
        )


def _auth(bearer: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {bearer}"}
