"""A Binance.US double on loopback that behaves as https://docs.binance.us documents it.

It checks what the venue checks, the documented way: the API key in X-MBX-APIKEY, the signature
over totalParams (query string + body, the `signature` parameter left out) by HMAC-SHA256 or
Ed25519, and the timestamp against recvWindow; it answers with the documented payloads and
error codes (-1021, -1022, -2010, -2011, -2013, -2015) and the X-MBX-USED-WEIGHT-1M header.
Faults for tests: answers dropped after the order is taken, and 429s with Retry-After.

Fills: a market order fills at once at `last_price`; a limit order rests until a test fills it
(`fill`), in parts if it likes. Each fill is a trade with its commission, charged as Binance.US
charges it without BNB: in the asset received (the base asset on a buy, the quote on a sell).
An order's answer lists its fills when asked for newOrderRespType FULL, and GET
/api/v3/myTrades lists an order's trades.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import time
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# The docs' error messages, verbatim.
INVALID_KEY = (-2015, "Invalid API-key, IP, or permissions for action.")
BAD_SIGNATURE = (-1022, "Signature for this request is not valid.")
OUTSIDE_WINDOW = (-1021, "Timestamp for this request is outside of the recvWindow.")
DUPLICATE = (-2010, "Duplicate order sent.")
NO_SUCH_ORDER = (-2013, "Order does not exist.")
UNKNOWN_ORDER = (-2011, "Unknown order sent.")

EXCHANGE_INFO = {
    "timezone": "UTC",
    "serverTime": 0,
    "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
    ],
    "symbols": [
        {
            "symbol": "BTCUSD",
            "status": "TRADING",
            "baseAsset": "BTC",
            "quoteAsset": "USD",
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.01000000",
                    "maxPrice": "1000000.00000000",
                    "tickSize": "0.01000000",
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": "0.00000100",
                    "maxQty": "9000.00000000",
                    "stepSize": "0.00000100",
                },
                {"filterType": "NOTIONAL", "minNotional": "1.00000000"},
            ],
        }
    ],
}


@dataclass
class BinanceDouble:
    api_key: str
    secret: str | None = None
    ed25519_public: Ed25519PublicKey | None = None
    # Faults: the next N order requests are taken but never answered (the connection drops);
    # 429 with Retry-After until this monotonic time.
    drop_answers: int = 0
    # The next N order requests are lost before the venue takes them (nothing placed).
    lose_requests: int = 0
    # The next N order look-ups get no answer either.
    drop_lookups: int = 0
    rate_limited_until: float = 0.0
    # A 429 storm: the next N signed requests are refused with Retry-After: 1.
    refuse_next: int = 0
    orders: dict[str, dict] = field(default_factory=dict)  # the latest by client order id
    placed: list[dict] = field(default_factory=list)  # every order taken, duplicates included
    posted: int = 0  # POST /api/v3/order requests received
    weight: int = 0
    last_price: Decimal = Decimal("30000.00")
    commission_rate: Decimal = Decimal("0.001")  # 0.1 %, a taker's base rate
    trades: list[dict] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1000))
    _trade_ids: itertools.count = field(default_factory=lambda: itertools.count(28457))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v3/exchangeInfo", self.exchange_info)
        app.router.add_post("/api/v3/order", self.new_order)
        app.router.add_get("/api/v3/order", self.query_order)
        app.router.add_delete("/api/v3/order", self.cancel_order)
        app.router.add_get("/api/v3/account", self.account)
        app.router.add_get("/api/v3/myTrades", self.my_trades)
        return app

    def fill(self, client_order_id: str, quantity: Decimal, price: Decimal) -> dict:
        """The venue matches (part of) a resting order: a trade, as myTrades lists it."""
        order = self.orders[client_order_id]
        executed = Decimal(order["executedQty"]) + quantity
        assert executed <= Decimal(order["origQty"]), "more than the order's quantity"
        base, quote_asset = _assets(order["symbol"])
        value = quantity * price
        buy = order["side"] == "BUY"
        trade = {
            "symbol": order["symbol"],
            "id": next(self._trade_ids),
            "orderId": order["orderId"],
            "orderListId": -1,
            "price": format(price, "f"),
            "qty": format(quantity, "f"),
            "quoteQty": format(value, "f"),
            "commission": format((quantity if buy else value) * self.commission_rate, "f"),
            "commissionAsset": base if buy else quote_asset,
            "time": time.time_ns() // 1_000_000,
            "isBuyer": buy,
            "isMaker": order["type"] == "LIMIT",
            "isBestMatch": True,
        }
        self.trades.append(trade)
        order["executedQty"] = format(executed, "f")
        order["cummulativeQuoteQty"] = format(Decimal(order["cummulativeQuoteQty"]) + value, "f")
        order["status"] = "FILLED" if executed == Decimal(order["origQty"]) else "PARTIALLY_FILLED"
        return trade

    # --- checks, as the docs describe them -------------------------------------------------

    def _answer(self, payload: object, status: int = 200, **headers: str) -> web.Response:
        return web.json_response(
            payload, status=status, headers={"X-MBX-USED-WEIGHT-1M": str(self.weight), **headers}
        )

    def _error(self, error: tuple[int, str], status: int = 400) -> web.Response:
        return self._answer({"code": error[0], "msg": error[1]}, status)

    async def _signed_params(self, request: web.Request) -> dict[str, str] | web.Response:
        self.weight += 1
        if time.monotonic() < self.rate_limited_until:
            wait = max(1, int(self.rate_limited_until - time.monotonic()) + 1)
            return self._answer(
                {"code": -1003, "msg": "Too much request weight used."},
                429,
                **{"Retry-After": str(wait)},
            )
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return self._answer(
                {"code": -1003, "msg": "Too much request weight used."}, 429, **{"Retry-After": "1"}
            )
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            return self._error(INVALID_KEY, 401)
        query, body = request.query_string, (await request.text())
        # totalParams without the signature parameter, wherever it was sent.
        signature = None
        parts = []
        for part_of in (query, body):
            kept = []
            for pair in part_of.split("&") if part_of else []:
                if pair.startswith("signature="):
                    signature = unquote(pair[len("signature=") :])
                else:
                    kept.append(pair)
            parts.append("&".join(kept))
        payload = parts[0] + parts[1]
        if signature is None or not self._valid(payload, signature):
            return self._error(BAD_SIGNATURE)
        params = dict(parse_qsl(query)) | dict(parse_qsl(body))
        params.pop("signature", None)
        now = time.time_ns() // 1_000_000
        stamp, window = int(params.get("timestamp", 0)), int(params.get("recvWindow", 5000))
        # The docs' server-side rule: timestamp < serverTime + 1000 and
        # serverTime - timestamp <= recvWindow.
        if not (stamp < now + 1000 and now - stamp <= window):
            return self._error(OUTSIDE_WINDOW)
        return params

    def _valid(self, payload: str, signature: str) -> bool:
        if self.ed25519_public is not None:
            try:
                self.ed25519_public.verify(base64.b64decode(signature), payload.encode())
            except (InvalidSignature, ValueError):
                return False
            return True
        assert self.secret is not None
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

    # --- endpoints -------------------------------------------------------------------------

    async def exchange_info(self, request: web.Request) -> web.Response:
        self.weight += 20
        return self._answer(EXCHANGE_INFO)

    async def new_order(self, request: web.Request) -> web.StreamResponse:
        params = await self._signed_params(request)
        if isinstance(params, web.Response):
            return params
        self.posted += 1
        if self.lose_requests > 0:
            self.lose_requests -= 1
            return self._hang_up(request)
        client_id = params["newClientOrderId"]
        existing = self.orders.get(client_id)
        if existing is not None and existing["status"] in ("NEW", "PARTIALLY_FILLED"):
            return self._error(DUPLICATE)
        market = params["type"] == "MARKET"
        order = {
            "symbol": params["symbol"],
            "orderId": next(self._ids),
            "orderListId": -1,
            "clientOrderId": client_id,
            "transactTime": time.time_ns() // 1_000_000,
            "price": params.get("price", "0.00000000"),
            "origQty": params["quantity"],
            "executedQty": "0.00000000",
            "cummulativeQuoteQty": "0.00000000",
            "status": "NEW",
            "timeInForce": params.get("timeInForce", "GTC"),
            "type": params["type"],
            "side": params["side"],
        }
        self.orders[client_id] = order
        self.placed.append(order)
        fills = []
        if market:
            trade = self.fill(client_id, Decimal(params["quantity"]), self.last_price)
            fills.append(
                {k: trade[k] for k in ("price", "qty", "commission", "commissionAsset")}
                | {"tradeId": trade["id"]}
            )
        if self.drop_answers > 0:
            # Taken, but the answer never leaves: the client cannot know.
            self.drop_answers -= 1
            return self._hang_up(request)
        if params.get("newOrderRespType") == "FULL":
            return self._answer({**order, "fills": fills})
        return self._answer(order)

    def _hang_up(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        raise web.HTTPException()  # aiohttp writes nothing on a closed transport

    async def query_order(self, request: web.Request) -> web.Response:
        params = await self._signed_params(request)
        if isinstance(params, web.Response):
            return params
        if self.drop_lookups > 0:
            self.drop_lookups -= 1
            return self._hang_up(request)
        order = self.orders.get(params.get("origClientOrderId", ""))
        if order is None or order["symbol"] != params["symbol"]:
            return self._error(NO_SUCH_ORDER)
        return self._answer(order)

    async def cancel_order(self, request: web.Request) -> web.Response:
        params = await self._signed_params(request)
        if isinstance(params, web.Response):
            return params
        order = self.orders.get(params.get("origClientOrderId", ""))
        if order is None or order["status"] not in ("NEW", "PARTIALLY_FILLED"):
            return self._error(UNKNOWN_ORDER)
        order["status"] = "CANCELED"
        # As the API answers a cancel: clientOrderId is the cancel's own (new) id.
        return self._answer(
            {**order, "origClientOrderId": order["clientOrderId"], "clientOrderId": "cancel-1"}
        )

    async def my_trades(self, request: web.Request) -> web.Response:
        params = await self._signed_params(request)
        if isinstance(params, web.Response):
            return params
        self.weight += 9  # 10 in all, as the docs weigh it
        found = [t for t in self.trades if t["symbol"] == params["symbol"]]
        if "orderId" in params:
            found = [t for t in found if str(t["orderId"]) == params["orderId"]]
        if "fromId" in params:
            found = [t for t in found if t["id"] >= int(params["fromId"])]
        return self._answer(found[: int(params.get("limit", 500))])

    async def account(self, request: web.Request) -> web.Response:
        params = await self._signed_params(request)
        if isinstance(params, web.Response):
            return params
        # 100000 USD to start with; each trade moves both assets, its commission taken from the
        # asset received.
        held = {"BTC": Decimal(0), "USD": Decimal(100000)}
        for trade in self.trades:
            base, quote_asset = _assets(trade["symbol"])
            sign = 1 if trade["isBuyer"] else -1
            held[base] += sign * Decimal(trade["qty"])
            held[quote_asset] -= sign * Decimal(trade["quoteQty"])
            held[trade["commissionAsset"]] -= Decimal(trade["commission"])
        return self._answer(
            {
                "canTrade": True,
                "balances": [
                    {"asset": asset, "free": format(amount, "f"), "locked": "0.00000000"}
                    for asset, amount in held.items()
                ],
            }
        )


def _assets(symbol: str) -> tuple[str, str]:
    described = next(s for s in EXCHANGE_INFO["symbols"] if s["symbol"] == symbol)
    return described["baseAsset"], described["quoteAsset"]
