"""Binance.US spot REST API (https://docs.binance.us), SIGNED endpoints per its documentation.

A SIGNED request carries `timestamp` (ms) and `recvWindow` among its parameters, the API key in
the `X-MBX-APIKEY` header, and `signature` = the signature of "totalParams": the query string
concatenated with the request body, as sent. HMAC keys sign it with HMAC-SHA256 (hex); Ed25519
keys sign its bytes and send the base64 signature (URL-encoded like any parameter).

Every order carries `newClientOrderId`. An order whose answer was lost (a timeout, a dropped
connection, a 5xx) is looked up by that id before it is sent again, and Binance itself refuses a
second open order with the same id, so an order is never placed twice.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gekko.exchanges.base import (
    Answer,
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

VENUE = "binanceus"
log = logging.getLogger("gekko.exchanges.binanceus")
LIVE_URL = "https://api.binance.us"
DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60000
# Codes from the docs' error list that an operator meets first, with what to do about them.
EXPLAINED = {
    -1021: "the request's timestamp is outside recvWindow: the host clock is off (check NTP) "
    "or the network is slow; a larger recvWindow (at most 60000) tolerates the latter",
    -1022: "the signature is not valid: the API secret or Ed25519 key does not belong to this "
    "API key, or the parameters were changed after signing",
    -2010: "the venue rejected the new order (see its message)",
    -2011: "the venue does not know the order to cancel",
    -2013: "the venue does not know this order",
    -2014: "the API key's format is invalid",
    -2015: "the API key, its IP allow-list or its permissions refuse this request",
}
_STATUSES = {
    "NEW": OrderStatus.NEW,
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELED,
    "PENDING_CANCEL": OrderStatus.CANCELED,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}
ORDER_NOT_FOUND = -2013
# GET /api/v3/myTrades answers at most this many trades a page (its `limit`); an order with more
# fills is read in pages by `fromId`, this many pages at most.
TRADES_PAGE = 1000
TRADES_PAGES = 20


def total_params(query: str, body: str) -> str:
    """What is signed: the query string, then the body, with nothing between them."""
    return query + body


def hmac_signature(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def ed25519_signature(key: Ed25519PrivateKey, payload: str) -> str:
    return base64.b64encode(key.sign(payload.encode("ascii"))).decode()


@dataclass(frozen=True, repr=False)
class Credentials:
    """An API key with its HMAC secret or its Ed25519 private key (one of the two)."""

    api_key: str
    secret: str | None = None
    ed25519_key: Ed25519PrivateKey | None = None

    def __post_init__(self) -> None:
        if (self.secret is None) == (self.ed25519_key is None):
            raise ValueError("a Binance.US credential has an HMAC secret or an Ed25519 key")

    def sign(self, payload: str) -> str:
        if self.ed25519_key is not None:
            return ed25519_signature(self.ed25519_key, payload)
        return hmac_signature(self.secret or "", payload)

    def __repr__(self) -> str:  # never the secret, in logs or tracebacks
        kind = "ed25519" if self.ed25519_key is not None else "hmac"
        return f"Credentials(api_key={self.api_key[:4]}…, {kind})"


def _decimal(value: Any) -> Decimal | None:
    number = Decimal(str(value))
    return None if number == 0 else number


def order_from(
    answer: Mapping[str, Any], trades: Sequence[Mapping[str, Any]] | None = None
) -> ExchangeOrder:
    """An order answer (POST, GET or DELETE /api/v3/order), with its fills when known: the
    `fills` of a FULL answer, or `trades` (GET /api/v3/myTrades), which carry the commissions.
    Without them, the totals are the answer's executedQty and cummulativeQuoteQty."""
    price = Decimal(answer.get("price") or "0")
    fills = answer.get("fills") if trades is None else trades
    filled = Decimal(answer.get("executedQty") or "0")
    value = Decimal(answer.get("cummulativeQuoteQty") or "0")
    fees: dict[str, Decimal] = {}
    if fills is not None:
        filled, value = Decimal(0), Decimal(0)
        for fill in fills:
            quantity = Decimal(fill["qty"])
            filled += quantity
            # myTrades states quoteQty; a FULL answer's fills only the price.
            value += (
                Decimal(fill["quoteQty"])
                if "quoteQty" in fill
                else quantity * Decimal(fill["price"])
            )
            add_fee(fees, fill["commissionAsset"], Decimal(fill["commission"]))
    status = _STATUSES.get(answer.get("status", ""), OrderStatus.NEW)
    if status is OrderStatus.NEW and filled > 0:  # trades read after the order answered
        status = OrderStatus.PARTIALLY_FILLED
    return ExchangeOrder(
        venue=VENUE,
        symbol=answer["symbol"],
        venue_order_id=str(answer["orderId"]),
        # A cancel's answer names the order's own id origClientOrderId (its clientOrderId is
        # the cancel's).
        client_order_id=answer.get("origClientOrderId") or answer.get("clientOrderId", ""),
        status=status,
        side="buy" if answer.get("side", "BUY") == "BUY" else "sell",
        quantity=Decimal(answer.get("origQty") or "0"),
        filled_quantity=filled,
        price=price if price > 0 else None,
        filled_value=value,
        fees=fees,
        fees_in_kind=True,
    )


def rules_from(symbol: Mapping[str, Any]) -> SymbolRules:
    filters = {f["filterType"]: f for f in symbol.get("filters", [])}
    price, lot = filters.get("PRICE_FILTER", {}), filters.get("LOT_SIZE", {})
    notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
    return SymbolRules(
        symbol=symbol["symbol"],
        base_asset=symbol["baseAsset"],
        quote_asset=symbol["quoteAsset"],
        trading=symbol.get("status") == "TRADING",
        tick_size=_decimal(price["tickSize"]) if "tickSize" in price else None,
        step_size=_decimal(lot["stepSize"]) if "stepSize" in lot else None,
        min_quantity=_decimal(lot["minQty"]) if "minQty" in lot else None,
        min_notional=_decimal(notional["minNotional"]) if "minNotional" in notional else None,
    )


def _unsigned() -> tuple[str, str]:
    """exchangeInfo is public: no parameters, no signature."""
    return "", ""


class Hosts:
    """A venue's API hosts, the preferred first. Calls go to the first host not set aside; a host
    that did not answer is set aside for COOL_OFF_S and asked again after the others (and at
    once when it is the last one left)."""

    COOL_OFF_S = 30.0

    def __init__(self, urls: Sequence[str], clock: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("a venue needs at least one host")
        self.urls = [url.rstrip("/") for url in urls]
        self.clock = clock
        self._aside: dict[str, float] = {}  # host -> until when

    def in_turn(self) -> list[str]:
        now = self.clock()
        ready = [u for u in self.urls if self._aside.get(u, 0.0) <= now]
        aside = sorted((u for u in self.urls if u not in ready), key=self._aside.__getitem__)
        return ready + aside

    def failed(self, url: str) -> None:
        self._aside[url] = self.clock() + self.COOL_OFF_S

    def answered(self, url: str) -> None:
        self._aside.pop(url, None)


class BinanceUS:
    """One Binance.US account through one credential. With alternate hosts, a host that cannot
    be reached is passed over for the next (any request: it never left), and so is one that
    does not answer a read; a write that may have reached a host is never sent to another (its
    order is looked up instead)."""

    venue = VENUE

    def __init__(
        self,
        credentials: Credentials,
        base_url: str = LIVE_URL,
        *,
        alternate_urls: Sequence[str] = (),
        recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
        timeout_s: float = 10.0,
        attempts: int = 3,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        if not 0 < recv_window_ms <= MAX_RECV_WINDOW_MS:
            raise ValueError(f"recvWindow must be 1..{MAX_RECV_WINDOW_MS} ms")
        self.credentials = credentials
        self.hosts = Hosts([base_url, *alternate_urls])
        # The host that answered last (`gekko exchange check` names it).
        self.answered_by: str | None = None
        self.recv_window_ms = recv_window_ms
        self.http = VenueHttp(VENUE, timeout_s)
        self.attempts = attempts
        self.clock_ms = clock_ms
        # From X-MBX-USED-WEIGHT-1M of the last answer: the request weight used this minute.
        self.used_weight_1m: int | None = None

    async def close(self) -> None:
        await self.http.close()

    # --- the venue's calls -----------------------------------------------------------------

    async def place_order(self, order: OrderRequest) -> ExchangeOrder:
        params: dict[str, Any] = {
            "symbol": order.symbol,
            "side": order.side.upper(),
            "type": order.type.upper(),
            "quantity": format(order.quantity, "f"),
            "newClientOrderId": order.client_order_id,
            # FULL: the answer lists the fills, with their commissions.
            "newOrderRespType": "FULL",
        }
        if order.type == "limit":
            params |= {"timeInForce": "GTC", "price": format(order.price, "f")}
        lost: ExchangeError | None = None
        for _attempt in range(self.attempts):
            sent_ms = self.clock_ms()
            try:
                return order_from(await self._signed("POST", "/api/v3/order", params, sent_ms))
            except ExchangeError as exc:
                if not exc.unsure:
                    raise
                lost = exc
            found = await self._settle(order, sent_ms)
            if found is not None:
                return found
        assert lost is not None  # noqa: S101 - attempts >= 1
        raise lost

    async def _settle(self, order: OrderRequest, sent_ms: int) -> ExchangeOrder | None:
        """After an order's answer was lost: the order as the venue has it, or None once the
        lost request can no longer be accepted (its recvWindow is over, a second of clock
        offset allowed) and the venue still does not have it. Binance refuses a repeated
        newClientOrderId only while the first order is open, so sending again any earlier
        could place a filled order twice."""
        found = await self._look_up(order)
        if found is not None:
            return found
        wait_ms = sent_ms + self.recv_window_ms + 1000 - self.clock_ms()
        if wait_ms > 0:
            await asyncio.sleep(wait_ms / 1000)
        return await self._look_up(order)

    async def _look_up(self, order: OrderRequest) -> ExchangeOrder | None:
        try:
            return await self.get_order(order.symbol, order.client_order_id)
        except ExchangeError as exc:
            raise ExchangeError(
                VENUE,
                f"order {order.client_order_id}: its answer was lost and looking it up failed "
                f"({exc.message}); look it up by its client order id before sending it again",
                http_status=exc.http_status,
                code=exc.code,
                retry_after_s=exc.retry_after_s,
                unsure=True,
            ) from None

    async def get_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        try:
            answer = await self._signed(
                "GET", "/api/v3/order", {"symbol": symbol, "origClientOrderId": client_order_id}
            )
        except ExchangeError as exc:
            if exc.code == ORDER_NOT_FOUND:
                return None
            raise
        return await self._with_fills(answer)

    async def cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder:
        answer = await self._signed(
            "DELETE", "/api/v3/order", {"symbol": symbol, "origClientOrderId": client_order_id}
        )
        return await self._with_fills(answer)

    async def _with_fills(self, answer: Mapping[str, Any]) -> ExchangeOrder:
        """An order answer without fills, completed by the order's trades once it has any."""
        executed = Decimal(answer.get("executedQty") or "0")
        if executed <= 0:
            return order_from(answer)
        trades, listed = await self.trades(answer["symbol"], answer["orderId"])
        order = order_from(answer, trades)
        if not listed or order.filled_quantity < executed:
            # The trades list lags the order (or is longer than is read at once): the fills
            # listed are taken, and the order is asked again for the rest.
            return replace(order, fills_complete=False)
        return order

    async def trades(self, symbol: str, order_id: int | str) -> tuple[list[dict[str, Any]], bool]:
        """The order's trades (GET /api/v3/myTrades with orderId), and whether they are all
        there. Without fromId the venue answers the most recent ones: an order with a full page
        of them is read again from fromId 0, page by page."""
        params: dict[str, Any] = {"symbol": symbol, "orderId": order_id, "limit": TRADES_PAGE}
        page = await self._signed("GET", "/api/v3/myTrades", params)
        if len(page) < TRADES_PAGE:
            return page, True
        found: dict[int, dict[str, Any]] = {}
        params["fromId"] = 0
        for _page in range(TRADES_PAGES):
            page = await self._signed("GET", "/api/v3/myTrades", params)
            found.update((int(t["id"]), t) for t in page)
            if len(page) < TRADES_PAGE:
                return [found[i] for i in sorted(found)], True
            params["fromId"] = int(page[-1]["id"]) + 1
        return [found[i] for i in sorted(found)], False

    async def balances(self) -> list[Balance]:
        answer = await self._signed("GET", "/api/v3/account", {})
        return [
            Balance(asset=b["asset"], free=Decimal(b["free"]), locked=Decimal(b["locked"]))
            for b in answer.get("balances", [])
        ]

    async def symbols(self) -> dict[str, SymbolRules]:
        answer = await self._request("GET", "/api/v3/exchangeInfo", _unsigned)
        return {s["symbol"]: rules_from(s) for s in answer.get("symbols", [])}

    async def weight_limit_1m(self) -> int | None:
        """The REQUEST_WEIGHT budget per minute, as exchangeInfo's rateLimits state it."""
        answer = await self._request("GET", "/api/v3/exchangeInfo", _unsigned)
        for limit in answer.get("rateLimits", []):
            if (
                limit.get("rateLimitType") == "REQUEST_WEIGHT"
                and limit.get("interval") == "MINUTE"
                and limit.get("intervalNum") == 1
            ):
                return int(limit["limit"])
        return None

    # --- signing and transport -------------------------------------------------------------

    def signed_request(
        self, method: str, params: Mapping[str, Any], timestamp_ms: int
    ) -> tuple[str, str]:
        """(query, body) of a SIGNED request: a POST sends its parameters as the form body,
        other methods in the query string; the signature is appended to whichever holds them."""
        encoded = urlencode(
            {**params, "recvWindow": self.recv_window_ms, "timestamp": timestamp_ms}
        )
        query, body = ("", encoded) if method == "POST" else (encoded, "")
        signature = urlencode({"signature": self.credentials.sign(total_params(query, body))})
        if method == "POST":
            return query, f"{body}&{signature}"
        return f"{query}&{signature}", body

    async def _signed(
        self, method: str, path: str, params: Mapping[str, Any], timestamp_ms: int | None = None
    ) -> Any:
        def signed() -> tuple[str, str]:
            # A read asked of another host is signed anew (its timestamp is fresh); a write
            # keeps the timestamp its caller knows it by.
            stamp = self.clock_ms() if timestamp_ms is None else timestamp_ms
            return self.signed_request(method, params, stamp)

        return await self._request(
            method, path, signed, headers={"X-MBX-APIKEY": self.credentials.api_key}
        )

    async def _request(
        self,
        method: str,
        path: str,
        make: Callable[[], tuple[str, str]],
        headers: Mapping[str, str] = {},
    ) -> Any:
        """Ask the hosts in turn: the next one after a host that cannot be reached, and for a
        read, after one that does not answer or answers 5xx."""
        hosts = self.hosts.in_turn()
        what = f"{method} {path}"
        for turn, host in enumerate(hosts, start=1):
            query, body = make()
            url = f"{host}{path}" + (f"?{query}" if query else "")
            sent_headers = dict(headers)
            if body:
                sent_headers["Content-Type"] = "application/x-www-form-urlencoded"
            last = turn == len(hosts)
            try:
                answer = await self.http.send(
                    method, url, what, data=body.encode() if body else None, headers=sent_headers
                )
            except ExchangeError as exc:
                if not last:
                    self.hosts.failed(host)
                if last or not (exc.not_sent or method == "GET"):
                    raise
                log.warning("%s at %s: %s; asking %s", what, host, exc.message, hosts[turn])
                continue
            if answer.status >= 500 and method == "GET" and not last:
                self.hosts.failed(host)
                log.warning("%s at %s: HTTP %s; asking %s", what, host, answer.status, hosts[turn])
                continue
            self.hosts.answered(host)
            self.answered_by = host
            return self._read(method, path, answer)
        raise AssertionError("unreachable: the last host answers or raises")  # pragma: no cover

    def _read(self, method: str, path: str, answer: Answer) -> Any:
        what = f"{method} {path}"
        if "X-MBX-USED-WEIGHT-1M" in answer.headers:
            self.used_weight_1m = int(answer.headers["X-MBX-USED-WEIGHT-1M"])
        if answer.status < 300:
            return self.http.accepted(answer, what)
        raise _error(method, path, answer.status, answer.text, answer.headers.get("Retry-After"))


def _error(
    method: str, path: str, status: int, text: str, retry_after: str | None
) -> ExchangeError:
    payload = error_payload(text)
    code = payload.get("code")
    message = payload.get("msg") or text.strip()[:300] or "no message"
    if status in (418, 429):
        hint = (
            "rate limit exceeded: back off for Retry-After"
            if status == 429
            else "the IP is banned for ignoring 429s: wait Retry-After"
        )
    else:
        hint = EXPLAINED.get(code, "") if isinstance(code, int) else ""
    return ExchangeError(
        VENUE,
        f"{method} {path}: {message}",
        http_status=status,
        code=code,
        retry_after_s=retry_after_s(retry_after),
        # A 5xx from Binance means the outcome is unknown (its docs: "the execution status is
        # UNKNOWN and could have been a success").
        unsure=status >= 500,
        explanation=hint,
    )
