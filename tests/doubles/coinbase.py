"""A Coinbase Advanced Trade double on loopback, as the CDP docs describe the API.

Each request's JWT is checked the documented way: ES256 under the key's public key, `kid` =
`sub` = the key name, `iss` "cdp", at most two minutes between `nbf` and `exp`, now inside
them, a `nonce` header never seen before, and `uri` = "METHOD host/path" of this very request.
Every order posted is created (the worst case for a client that sends one twice). Faults for
tests: answers dropped after the order is taken. A market order fills at once at `last_price`, a
limit order rests until a test fills it (`fill`, in parts if it likes); an order states its fills
as the Order object does (filled_size, average_filled_price, filled_value, total_fees in the
quote currency, at `fee_rate`).

It is also Coinbase's OAuth2 login host (login.coinbase.com), as the Coinbase App OAuth2 docs
describe it: `/oauth2/auth` consents at once for the user (a 302 to the registered redirect URI
with `code` and `state`; PKCE S256 challenge kept), `/oauth2/token` exchanges a code (once, with
the client secret, the same redirect URI and the PKCE verifier) or a refresh token (once: a used
one is refused `invalid_grant`) for an access token of `access_lifetime_s` and a new refresh
token, `/oauth2/revoke` ends an access token. The API takes those tokens as bearer in place of
a JWT, each endpoint with the OAuth scope the Advanced Trade scope table lists, and an OAuth
order must name the granted portfolio (`retail_portfolio_id`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import secrets
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

PREFIX = "/api/v3/brokerage"
UNAUTHORIZED = {"error": "UNAUTHENTICATED", "message": "Unauthorized"}
# The OAuth2 scope each endpoint needs (the Advanced Trade scope table).
SCOPE_OF = {
    ("POST", "/orders"): "wallet:buys:create",
    ("POST", "/orders/batch_cancel"): "wallet:buys:create",
    ("GET", "/orders/historical"): "wallet:orders:read",
    ("GET", "/accounts"): "wallet:accounts:read",
    ("GET", "/products"): "wallet:user:read",
    ("GET", "/portfolios"): "wallet:user:read",
}
PORTFOLIO_ID = "5d4bc5a1-3b0f-4c47-9a8e-3c1f0e2d9b7a"


def _scope_needed(method: str, path: str) -> str:
    rest = path.removeprefix(PREFIX)
    for (verb, prefix), scope in SCOPE_OF.items():
        if verb == method and rest.startswith(prefix):
            return scope
    return "wallet:user:read"


@dataclass
class OAuthGrant:
    scope: set[str]
    expires_at: float
    revoked: bool = False


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
    # OAuth2: the registered client, and what was granted.
    client_id: str = ""
    client_secret: str = ""
    redirect_uri: str = ""
    access_lifetime_s: float = 3600.0
    token_delay_s: float = 0.0  # the login host answers token requests this late
    token_grants: list[str] = field(default_factory=list)  # grant_type of each token granted
    grant_refusals: list[str] = field(default_factory=list)  # why each token request was refused
    revoked: int = 0
    access: dict[str, OAuthGrant] = field(default_factory=dict)  # by access token
    bearers_seen: list[str] = field(default_factory=list)  # the access tokens the API accepted
    _codes: dict[str, dict] = field(default_factory=dict)
    _refresh: dict[str, set[str] | None] = field(default_factory=dict)  # None once used
    _nonces: set[str] = field(default_factory=set)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    last_price: Decimal = Decimal("30000.00")
    fee_rate: Decimal = Decimal("0.006")  # 0.6 %, the lowest tier's taker fee
    extra_wallets: int = 0  # wallets beyond USD, for paging

    def fill(self, order_id: str, quantity: Decimal, price: Decimal) -> dict:
        """The venue matches (part of) an order; its totals as the Order object states them."""
        order = self.orders[order_id]
        configuration = next(iter(order["order_configuration"].values()))
        filled = Decimal(order["filled_size"]) + quantity
        assert filled <= Decimal(configuration["base_size"]), "more than the order's size"
        value = Decimal(order["filled_value"]) + quantity * price
        order["filled_size"] = format(filled, "f")
        order["filled_value"] = format(value, "f")
        order["average_filled_price"] = format(value / filled, "f")
        fee = quantity * price * self.fee_rate
        order["total_fees"] = format(Decimal(order["total_fees"]) + fee, "f")
        order["number_of_fills"] = str(int(order["number_of_fills"]) + 1)
        order["status"] = "FILLED" if filled == Decimal(configuration["base_size"]) else "OPEN"
        return order

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(PREFIX + "/orders", self.create)
        app.router.add_get(PREFIX + "/orders/historical/batch", self.list_orders)
        app.router.add_get(PREFIX + "/orders/historical/{order_id}", self.get)
        app.router.add_post(PREFIX + "/orders/batch_cancel", self.cancel)
        app.router.add_get(PREFIX + "/accounts", self.accounts)
        app.router.add_get(PREFIX + "/products", self.products)
        app.router.add_get(PREFIX + "/portfolios", self.portfolios)
        app.router.add_get("/oauth2/auth", self.authorize)
        app.router.add_post("/oauth2/token", self.token)
        app.router.add_post("/oauth2/revoke", self.revoke)
        return app

    def _refusal(self, request: web.Request) -> web.Response | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token in self.access:
            return self._oauth_refusal(request, token)
        reason = self._why_refused(request, token)
        if reason is None:
            return None
        self.refusals.append(reason)
        return web.json_response(UNAUTHORIZED, status=401)

    def _oauth_refusal(self, request: web.Request, token: str) -> web.Response | None:
        grant = self.access[token]
        if grant.revoked or time.time() >= grant.expires_at:
            self.refusals.append("access token revoked or expired")
            return web.json_response(UNAUTHORIZED, status=401)
        needed = _scope_needed(request.method, request.path)
        if needed not in grant.scope:
            self.refusals.append(f"scope {needed} not granted")
            return web.json_response(
                {"error": "PERMISSION_DENIED", "message": f"missing scope {needed}"}, status=403
            )
        self.bearers_seen.append(token)
        return None

    def revoke_access(self, token: str | None = None) -> None:
        """As the user revoking the app's access at Coinbase (every token, or one)."""
        for value, grant in self.access.items():
            if token is None or value == token:
                grant.revoked = True

    def revoke_refresh_tokens(self) -> None:
        """As the user disconnecting the app: no refresh token is good any more."""
        for value in self._refresh:
            self._refresh[value] = None

    # --- OAuth2 login host ---

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return web.json_response({"error": "invalid_request"}, status=400)
        if q.get("redirect_uri") != self.redirect_uri:
            return web.json_response({"error": "invalid_request", "error_description":
                                      "redirect_uri is not registered"}, status=400)  # fmt: skip
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.json_response({"error": "invalid_request"}, status=400)
        if len(q.get("state", "")) < 8:
            return web.json_response({"error": "invalid_state"}, status=400)
        code = secrets.token_urlsafe(24)
        self._codes[code] = {
            "challenge": q["code_challenge"],
            "scope": set(q.get("scope", "").split()),
            "expires_at": time.time() + 600,
        }
        location = f"{self.redirect_uri}?{urlencode({'code': code, 'state': q['state']})}"
        raise web.HTTPFound(location)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        await asyncio.sleep(self.token_delay_s)
        if (form.get("client_id"), form.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return self._grant_refused("invalid_client", 401)
        kind = form.get("grant_type")
        if kind == "authorization_code":
            code = self._codes.pop(str(form.get("code")), None)  # once only
            if code is None or time.time() > code["expires_at"]:
                return self._grant_refused("invalid_grant")
            if form.get("redirect_uri") != self.redirect_uri:
                return self._grant_refused("invalid_grant")
            verifier = str(form.get("code_verifier", "")).encode()
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
            if challenge.decode() != code["challenge"]:
                return self._grant_refused("invalid_grant")
            scope = code["scope"]
        elif kind == "refresh_token":
            scope = self._refresh.get(str(form.get("refresh_token")))
            if scope is None:  # unknown, or used already
                return self._grant_refused("invalid_grant")
            self._refresh[str(form.get("refresh_token"))] = None
        else:
            return self._grant_refused("unsupported_grant_type")
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.access[access] = OAuthGrant(set(scope), time.time() + self.access_lifetime_s)
        self._refresh[refresh] = set(scope)
        self.token_grants.append(str(kind))
        answer = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": self.access_lifetime_s,
            "scope": " ".join(sorted(scope)),
        }
        if "offline_access" in scope:
            answer["refresh_token"] = refresh
        return web.json_response(answer)

    def _grant_refused(self, error: str, status: int = 400) -> web.Response:
        self.grant_refusals.append(error)
        return web.json_response({"error": error, "error_description": error}, status=status)

    async def revoke(self, request: web.Request) -> web.Response:
        """An access token, or a refresh token (RFC 7009); 200 whatever the token was."""
        token = str((await request.post()).get("token"))
        if token in self.access and not self.access[token].revoked:
            self.access[token].revoked = True
            self.revoked += 1
        elif self._refresh.get(token) is not None:
            self._refresh[token] = None
            self.revoked += 1
        return web.json_response({})

    async def portfolios(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        default = {"name": "Default", "uuid": PORTFOLIO_ID, "type": "DEFAULT", "deleted": False}
        return web.json_response({"portfolios": [default]})

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
        oauth = request.headers.get("Authorization", "").removeprefix("Bearer ") in self.access
        if oauth and wanted.get("retail_portfolio_id") != PORTFOLIO_ID:
            return web.json_response({"success": False, "error_response": {
                "error": "INVALID_ARGUMENT",
                "message": "retail_portfolio_id must name a granted portfolio for OAuth",
            }})  # fmt: skip
        self.created += 1
        kind, configuration = next(iter(wanted["order_configuration"].items()))
        order = {
            "order_id": str(uuid.UUID(int=next(self._ids))),
            "product_id": wanted["product_id"],
            "side": wanted["side"],
            "client_order_id": wanted["client_order_id"],
            "status": "OPEN",
            "filled_size": "0",
            "filled_value": "0",
            "average_filled_price": "0",
            "total_fees": "0",
            "number_of_fills": "0",
            "order_configuration": {kind: configuration},
            "created_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.orders[order["order_id"]] = order
        if kind.startswith("market"):
            self.fill(order["order_id"], Decimal(configuration["base_size"]), self.last_price)
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
        wallets = [usd] + [
            {
                "uuid": str(uuid.UUID(int=100 + i)),
                "name": f"C{i} Wallet",
                "currency": f"C{i}",
                "available_balance": {"value": "1", "currency": f"C{i}"},
                "hold": {"value": "0", "currency": f"C{i}"},
            }
            for i in range(self.extra_wallets)
        ]
        # Paged as the API pages them: `limit` a page, `cursor` for the next.
        start = int(request.query.get("cursor") or 0)
        end = start + int(request.query.get("limit", 49))
        page = wallets[start:end]
        more = end < len(wallets)
        return web.json_response(
            {"accounts": page, "has_next": more, "cursor": str(end) if more else "",
             "size": len(page)}
        )  # fmt: skip

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
