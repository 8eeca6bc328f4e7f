"""OANDA v20 REST API (https://developer.oanda.com/rest-live-v20/introduction/).

Every request carries the account's personal access token as `Authorization: Bearer`; the
endpoints are scoped to one account (/v3/accounts/{accountID}/...). Practice and live accounts
live on different hosts. Every order carries `clientExtensions.id`, and OANDA accepts that id,
prefixed by "@", wherever an order is named, so a lost answer is settled by asking for it.
Units are signed: a sell is negative units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import orjson

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

VENUE = "oanda"
PRACTICE_URL = "https://api-fxpractice.oanda.com"
LIVE_URL = "https://api-fxtrade.oanda.com"
# The documented budget: 120 requests per second per connection/token, answered 429 beyond it.
REQUESTS_PER_SECOND = 120
EXPLAINED = {
    401: "the access token is not valid for this account (practice tokens work on the practice "
    "host only, live tokens on the live host)",
    403: "the token may not act on this account",
    404: "the account or the order does not exist",
    405: "the account does not allow this request",
    429: "more than 120 requests per second: back off",
}
_STATES = {
    "PENDING": OrderStatus.NEW,
    "TRIGGERED": OrderStatus.FILLED,
    "FILLED": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELED,
}


@dataclass(frozen=True, repr=False)
class Credentials:
    token: str
    account_id: str

    def __repr__(self) -> str:  # never the token
        return f"Credentials(account_id={self.account_id}, token=…)"


def order_body(order: OrderRequest) -> dict[str, Any]:
    """POST /v3/accounts/{id}/orders: a MarketOrderRequest (fill or kill) or a
    LimitOrderRequest (good till cancelled), units negative for a sell."""
    units = format(order.quantity if order.side == "buy" else -order.quantity, "f")
    body: dict[str, Any] = {
        "type": order.type.upper(),
        "instrument": order.symbol,
        "units": units,
        "timeInForce": "FOK" if order.type == "market" else "GTC",
        "positionFill": "DEFAULT",
        "clientExtensions": {"id": order.client_order_id, "tag": "gekko"},
    }
    if order.price is not None:
        body["price"] = format(order.price, "f")
    return {"order": body}


def charged(fill: Mapping[str, Any]) -> Decimal:
    """What an ORDER_FILL transaction charged, in the account's home currency."""
    return Decimal(fill.get("commission") or "0") + Decimal(
        fill.get("guaranteedExecutionFee") or "0"
    )


def order_from(
    order: Mapping[str, Any],
    fill: Mapping[str, Any] | None = None,
    home_currency: str | None = None,
) -> ExchangeOrder:
    """An order (or its create transaction), with the ORDER_FILL transaction that filled it:
    its units, its price (fullVWAP, the price all its units filled at) and its commission,
    which OANDA charges in the account's home currency, from the balance. A filled order
    without its fill, or a commission whose currency is not known, is incomplete: asked again."""
    units = Decimal(order.get("units", "0"))
    price = order.get("price")
    filled, value = Decimal(0), Decimal(0)
    fees: dict[str, Decimal] = {}
    complete = order.get("state") not in ("FILLED", "TRIGGERED")
    if fill is not None:
        filled = Decimal(fill.get("units", "0")).copy_abs()
        value = filled * Decimal(fill.get("fullVWAP") or fill.get("price") or "0")
        complete = home_currency is not None or not charged(fill)
        if home_currency is not None:
            add_fee(fees, home_currency, charged(fill))
    return ExchangeOrder(
        venue=VENUE,
        symbol=order.get("instrument", ""),
        venue_order_id=str(order["id"]),
        client_order_id=(order.get("clientExtensions") or {}).get("id", ""),
        status=_STATES.get(order.get("state", ""), OrderStatus.NEW),
        side="buy" if units > 0 else "sell",
        quantity=units.copy_abs(),
        filled_quantity=filled,
        price=Decimal(price) if price else None,
        filled_value=value,
        fees=fees,
        fills_complete=complete,
    )


class Oanda:
    """One OANDA v20 account through one access token."""

    venue = VENUE

    def __init__(
        self, credentials: Credentials, base_url: str = PRACTICE_URL, *, timeout_s: float = 10.0
    ) -> None:
        self.credentials = credentials
        self.base_url = base_url.rstrip("/")
        self.http = VenueHttp(VENUE, timeout_s)
        self._home_currency: str | None = None

    @property
    def last_latency_ms(self) -> float | None:
        return self.http.last_latency_ms

    async def close(self) -> None:
        await self.http.close()

    @property
    def _account(self) -> str:
        return f"/v3/accounts/{quote(self.credentials.account_id, safe='')}"

    async def place_order(self, order: OrderRequest) -> ExchangeOrder:
        try:
            answer = await self._call("POST", f"{self._account}/orders", order_body(order))
        except ExchangeError as exc:
            if not exc.unsure:
                raise
            # The answer was lost: the order may stand. Ask for it by its client id; never
            # send it again here (a late request could still be taken).
            try:
                found = await self.get_order(order.symbol, order.client_order_id)
            except ExchangeError as lookup:
                raise ExchangeError(
                    VENUE,
                    f"order {order.client_order_id}: its answer was lost and looking it up "
                    f"failed ({lookup.message}); look it up by its client id before sending "
                    "it again",
                    unsure=True,
                ) from None
            if found is None:
                raise
            return found
        if "orderCancelTransaction" in answer:  # a fill-or-kill that could not fill
            reason = answer["orderCancelTransaction"].get("reason", "cancelled")
            raise ExchangeError(VENUE, f"order {order.client_order_id} not filled: {reason}")
        # The create transaction describes the order; a fill transaction beside it filled it.
        created = answer["orderCreateTransaction"]
        fill = answer.get("orderFillTransaction")
        order = {**created, "state": "FILLED" if fill else "PENDING"}
        return order_from(order, fill, await self._currency_of(fill))

    async def get_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        try:
            answer = await self._call(
                "GET", f"{self._account}/orders/@{quote(client_order_id, safe='')}", None
            )
        except ExchangeError as exc:
            if exc.http_status == 404:
                return None
            raise
        return await self._with_fill(answer["order"])

    async def _with_fill(self, order: Mapping[str, Any]) -> ExchangeOrder:
        """A filled order with the transaction that filled it (its price and commission)."""
        if order.get("state") not in ("FILLED", "TRIGGERED") or not order.get(
            "fillingTransactionID"
        ):
            return order_from(order)
        tx_id = quote(str(order["fillingTransactionID"]), safe="")
        fill = (await self._call("GET", f"{self._account}/transactions/{tx_id}", None))[
            "transaction"
        ]
        return order_from(order, fill, await self._currency_of(fill))

    async def _currency_of(self, fill: Mapping[str, Any] | None) -> str | None:
        """The account's home currency, asked once, when a fill charged something in it. Never
        fails: a placed order must not look refused because this could not be asked (its fee
        is then left out, and the order asked again for it)."""
        if self._home_currency is None and fill is not None and charged(fill):
            try:
                summary = await self._call("GET", f"{self._account}/summary", None)
            except ExchangeError:
                return None
            self._home_currency = summary["account"].get("currency")
        return self._home_currency

    async def cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder:
        await self._call(
            "PUT", f"{self._account}/orders/@{quote(client_order_id, safe='')}/cancel", None
        )
        found = await self.get_order(symbol, client_order_id)
        if found is None:  # pragma: no cover - it was just cancelled
            raise ExchangeError(VENUE, f"order @{client_order_id} vanished after its cancel")
        return found

    async def balances(self) -> list[Balance]:
        account = (await self._call("GET", f"{self._account}/summary", None))["account"]
        balance = Decimal(account["balance"])
        available = Decimal(account.get("marginAvailable", account["balance"]))
        return [
            Balance(
                asset=account.get("currency", "USD"),
                free=available,
                locked=max(Decimal(0), balance - available),
            )
        ]

    async def symbols(self) -> dict[str, SymbolRules]:
        answer = await self._call("GET", f"{self._account}/instruments", None)
        rules = {}
        for item in answer.get("instruments", []):
            base, _, quote_asset = item["name"].partition("_")
            rules[item["name"]] = SymbolRules(
                symbol=item["name"],
                base_asset=base,
                quote_asset=quote_asset,
                trading=True,
                tick_size=Decimal(1).scaleb(-int(item.get("displayPrecision", 5))),
                step_size=Decimal(1).scaleb(-int(item.get("tradeUnitsPrecision", 0))),
                min_quantity=Decimal(item.get("minimumTradeSize", "1")),
            )
        return rules

    async def _call(self, method: str, path: str, body: Any) -> Any:
        headers = {
            "Authorization": f"Bearer {self.credentials.token}",
            "Accept-Datetime-Format": "RFC3339",
        }
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        what = f"{method} {path}"
        answer = await self.http.send(
            method, self.base_url + path, what, data=data, headers=headers
        )
        if answer.status < 300:
            return self.http.accepted(answer, what)
        status, text = answer.status, answer.text
        payload = error_payload(text)
        reject = payload.get("orderRejectTransaction") or {}
        message = payload.get("errorMessage") or reject.get("rejectReason") or text[:300]
        code = payload.get("errorCode") or reject.get("rejectReason")
        raise ExchangeError(
            VENUE,
            f"{method} {path}: {message}",
            http_status=status,
            code=code,
            retry_after_s=retry_after_s(answer.headers.get("Retry-After")),
            unsure=status >= 500,
            explanation=EXPLAINED.get(status, ""),
        )
