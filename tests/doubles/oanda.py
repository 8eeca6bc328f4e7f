"""An OANDA v20 double on loopback, as https://developer.oanda.com/rest-live-v20/ documents it.

Checks the bearer token and the account id in the path; orders are named by id or by "@" and
their clientExtensions id; a market order fills at once (orderFillTransaction, at `last_price`),
a limit order stays PENDING until a test fills it (`fill`); a filled order names its fill
(fillingTransactionID), which GET .../transactions/{id} returns, with its price (fullVWAP) and
the `commission` charged in the account's home currency; a client id already used is rejected
(CLIENT_ORDER_ID_ALREADY_EXISTS). Faults for tests: answers dropped after the order is taken, a
slow venue, and look-ups answered 503.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from aiohttp import web

UNAUTHORIZED = {"errorMessage": "Insufficient authorization to perform request."}
NO_SUCH_ORDER = {
    "errorCode": "ORDER_DOESNT_EXIST",
    "errorMessage": "The Order specified does not exist",
}


@dataclass
class OandaDouble:
    token: str
    account_id: str
    drop_answers: int = 0
    failing_lookups: int = 0  # the next look-ups of an order answered 503 (unavailable)
    slow_s: float = 0.0  # how long an order waits before the venue takes it
    orders: dict[str, dict] = field(default_factory=dict)  # by OANDA order id
    posted: int = 0
    last_price: str = "1.10000"
    commission: str = "0.0000"  # what each fill charges, in the home currency (USD)
    transactions: dict[str, dict] = field(default_factory=dict)  # by transaction id
    summaries: int = 0  # account summaries asked for
    failing_summaries: int = 0  # the next ones answered 503
    _ids: itertools.count = field(default_factory=lambda: itertools.count(6356))

    def fill(self, order_id: str, price: str) -> dict:
        """The order fills at `price`: its ORDER_FILL transaction (OANDA fills the units whole)."""
        order = self.orders[order_id]
        transaction = {
            "id": str(next(self._ids)),
            "type": "ORDER_FILL",
            "orderID": order_id,
            "clientOrderID": order["clientExtensions"]["id"],
            "instrument": order["instrument"],
            "units": order["units"],
            "price": price,
            "fullVWAP": price,
            "commission": self.commission,
            "financing": "0.0000",
            "reason": "MARKET_ORDER" if order["type"] == "MARKET" else "LIMIT_ORDER",
        }
        self.transactions[transaction["id"]] = transaction
        order["state"] = "FILLED"
        order["fillingTransactionID"] = transaction["id"]
        return transaction

    def app(self) -> web.Application:
        app = web.Application()
        base = "/v3/accounts/{account}"
        app.router.add_post(base + "/orders", self.create)
        app.router.add_get(base + "/orders/{spec}", self.get)
        app.router.add_put(base + "/orders/{spec}/cancel", self.cancel)
        app.router.add_get(base + "/summary", self.summary)
        app.router.add_get(base + "/instruments", self.instruments)
        app.router.add_get(base + "/transactions/{transaction}", self.transaction)
        return app

    async def transaction(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        found = self.transactions.get(request.match_info["transaction"])
        if found is None:
            return web.json_response(
                {"errorMessage": "The transaction ID specified does not exist"}, status=404
            )
        return web.json_response({"transaction": found, "lastTransactionID": found["id"]})

    def _refusal(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(UNAUTHORIZED, status=401)
        if request.match_info["account"] != self.account_id:
            return web.json_response(
                {"errorMessage": "Invalid value specified for 'accountID'"}, status=400
            )
        return None

    def _find(self, spec: str) -> dict | None:
        if spec.startswith("@"):
            wanted = spec[1:]
            return next(
                (o for o in self.orders.values() if o["clientExtensions"]["id"] == wanted), None
            )
        return self.orders.get(spec)

    async def create(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refusal(request)) is not None:
            return refused
        self.posted += 1
        await asyncio.sleep(self.slow_s)
        wanted = (await request.json())["order"]
        client_id = wanted["clientExtensions"]["id"]
        if self._find("@" + client_id) is not None:
            reject = {
                "type": "MARKET_ORDER_REJECT",
                "rejectReason": "CLIENT_ORDER_ID_ALREADY_EXISTS",
            }
            return web.json_response(
                {
                    "orderRejectTransaction": reject,
                    "errorCode": "CLIENT_ORDER_ID_ALREADY_EXISTS",
                    "errorMessage": "The client Order ID specified is already assigned",
                },
                status=400,
            )
        order_id = str(next(self._ids))
        market = wanted["type"] == "MARKET"
        order = {
            "id": order_id,
            "type": wanted["type"],
            "instrument": wanted["instrument"],
            "units": wanted["units"],
            "timeInForce": wanted["timeInForce"],
            "state": "PENDING",
            "clientExtensions": wanted["clientExtensions"],
            **({"price": wanted["price"]} if "price" in wanted else {}),
        }
        self.orders[order_id] = order
        created = {
            "id": order_id,
            "type": f"{wanted['type']}_ORDER",
            "instrument": wanted["instrument"],
            "units": wanted["units"],
            "clientExtensions": wanted["clientExtensions"],
            "reason": "CLIENT_ORDER",
            **({"price": wanted["price"]} if "price" in wanted else {}),
        }
        answer = {"orderCreateTransaction": created, "lastTransactionID": order_id}
        if market:
            answer["orderFillTransaction"] = self.fill(order_id, self.last_price)
        if self.drop_answers > 0:
            self.drop_answers -= 1
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPException()
        return web.json_response(answer, status=201)

    async def get(self, request: web.Request) -> web.Response:
        if self.failing_lookups > 0:
            self.failing_lookups -= 1
            return web.json_response({"errorMessage": "Service unavailable"}, status=503)
        if (refused := self._refusal(request)) is not None:
            return refused
        order = self._find(request.match_info["spec"])
        if order is None:
            return web.json_response(NO_SUCH_ORDER, status=404)
        return web.json_response({"order": order, "lastTransactionID": order["id"]})

    async def cancel(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        order = self._find(request.match_info["spec"])
        if order is None or order["state"] != "PENDING":
            return web.json_response(NO_SUCH_ORDER, status=404)
        order["state"] = "CANCELLED"
        return web.json_response(
            {
                "orderCancelTransaction": {
                    "type": "ORDER_CANCEL",
                    "orderID": order["id"],
                    "clientOrderID": order["clientExtensions"]["id"],
                    "reason": "CLIENT_REQUEST",
                }
            }
        )

    async def summary(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        self.summaries += 1
        if self.failing_summaries > 0:
            self.failing_summaries -= 1
            return web.json_response({"errorMessage": "Service unavailable"}, status=503)
        account = {
            "id": self.account_id,
            "currency": "USD",
            "balance": "100000.0000",
            "marginAvailable": "99000.0000",
        }
        return web.json_response({"account": account, "lastTransactionID": "1"})

    async def instruments(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        eur_usd = {
            "name": "EUR_USD",
            "type": "CURRENCY",
            "displayName": "EUR/USD",
            "pipLocation": -4,
            "displayPrecision": 5,
            "tradeUnitsPrecision": 0,
            "minimumTradeSize": "1",
        }
        return web.json_response({"instruments": [eur_usd], "lastTransactionID": "1"})
