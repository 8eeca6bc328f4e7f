"""A Coinbase Advanced Trade double on loopback, as the CDP docs describe the API.

Each request's JWT is checked the documented way: ES256 under the key's public key, `kid` =
`sub` = the key name, `iss` "cdp", at most two minutes between `nbf` and `exp`, now inside
them, a `nonce` header never seen before, and `uri` = "METHOD host/path" of this very request.
Every order posted is created (the worst case for a client that sends one twice). Faults for
tests: answers dropped after the order is taken.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

PREFIX = "/api/v3/brokerage"
UNAUTHORIZED = {"error": "UNAUTHENTICATED", "message": "Unauthorized"}


@dataclass
class CoinbaseDouble:
    key_name: str
    public_key: ec.EllipticCurvePublicKey
    drop_answers: int = 0
    lose_requests: int = 0  # the next N order requests vanish before they are taken
    orders: dict[str, dict] = field(default_factory=dict)  # by order id
    posted: int = 0
    created: int = 0
    refusals: list[str] = field(default_factory=list)  # why each JWT was refused
    _nonces: set[str] = field(default_factory=set)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(PREFIX + "/orders", self.create)
        app.router.add_get(PREFIX + "/orders/historical/batch", self.list_orders)
        app.router.add_get(PREFIX + "/orders/historical/{order_id}", self.get)
        app.router.add_post(PREFIX + "/orders/batch_cancel", self.cancel)
        app.router.add_get(PREFIX + "/accounts", self.accounts)
        app.router.add_get(PREFIX + "/products", self.products)
        return app

    def _refusal(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        reason = self._why_refused(request, auth.removeprefix("Bearer "))
        if reason is None:
            return None
        self.refusals.append(reason)
        return web.json_response(UNAUTHORIZED, status=401)

    def _why_refused(self, request: web.Request, token: str) -> str | None:
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["ES256"],
                options={"require": ["sub", "iss", "nbf", "exp", "uri"], "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            return f"JWT: {exc}"
        if header.get("kid") != self.key_name or claims["sub"] != self.key_name:
            return "kid/sub is not the key name"
        if claims["iss"] != "cdp":
            return "iss is not cdp"
        if claims["exp"] - claims["nbf"] > 120:
            return "lives longer than two minutes"
        nonce = header.get("nonce")
        if not nonce or nonce in self._nonces:
            return "nonce missing or reused"
        self._nonces.add(nonce)
        expected = f"{request.method} {request.host}{request.path}"
        if claims["uri"] != expected:
            return f"uri {claims['uri']!r} is not {expected!r}"
        return None

    async def create(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refusal(request)) is not None:
            return refused
        self.posted += 1
        if self.lose_requests > 0:
            self.lose_requests -= 1
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPException()
        wanted = await request.json()
        self.created += 1
        kind, configuration = next(iter(wanted["order_configuration"].items()))
        order = {
            "order_id": str(uuid.UUID(int=next(self._ids))),
            "product_id": wanted["product_id"],
            "side": wanted["side"],
            "client_order_id": wanted["client_order_id"],
            "status": "FILLED" if kind.startswith("market") else "OPEN",
            "filled_size": configuration["base_size"] if kind.startswith("market") else "0",
            "order_configuration": {kind: configuration},
            "created_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.orders[order["order_id"]] = order
        answer = {
            "success": True,
            "success_response": {
                "order_id": order["order_id"],
                "product_id": order["product_id"],
                "side": order["side"],
                "client_order_id": order["client_order_id"],
            },
            "order_configuration": order["order_configuration"],
        }
        if self.drop_answers > 0:
            self.drop_answers -= 1
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPException()
        return web.json_response(answer)

    async def get(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        order = self.orders.get(request.match_info["order_id"])
        if order is None:
            return web.json_response(
                {"error": "NOT_FOUND", "message": "order not found"}, status=404
            )
        return web.json_response({"order": order})

    async def list_orders(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        products = request.query.getall("product_ids", [])
        orders = [o for o in self.orders.values() if not products or o["product_id"] in products]
        return web.json_response({"orders": orders[::-1], "has_next": False, "cursor": ""})

    async def cancel(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        results = []
        for order_id in (await request.json())["order_ids"]:
            order = self.orders.get(order_id)
            if order is None or order["status"] != "OPEN":
                results.append(
                    {
                        "success": False,
                        "failure_reason": "UNKNOWN_CANCEL_ORDER",
                        "order_id": order_id,
                    }
                )
                continue
            order["status"] = "CANCELLED"
            results.append(
                {
                    "success": True,
                    "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON",
                    "order_id": order_id,
                }
            )
        return web.json_response({"results": results})

    async def accounts(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        usd = {
            "uuid": str(uuid.UUID(int=99)),
            "name": "USD Wallet",
            "currency": "USD",
            "available_balance": {"value": "1000.00", "currency": "USD"},
            "hold": {"value": "25.00", "currency": "USD"},
        }
        return web.json_response({"accounts": [usd], "has_next": False, "cursor": "", "size": 1})

    async def products(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        btc = {
            "product_id": "BTC-USD",
            "base_currency_id": "BTC",
            "quote_currency_id": "USD",
            "base_increment": "0.00000001",
            "quote_increment": "0.01",
            "price_increment": "0.01",
            "base_min_size": "0.00000001",
            "quote_min_size": "1",
            "status": "online",
            "trading_disabled": False,
        }
        return web.json_response({"products": [btc], "num_products": 1})
