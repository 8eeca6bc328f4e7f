# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The deploy's verify steps for the platform_check module, over an injected HTTP function.

`request(method, path, body=None, headers=None)` returns a Response; the module gives one over
Ansible's open_url, the unit tests a fake gateway. Each failed step raises CheckFailed with what
was seen and what to do.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import collections
import json
import time

Response = collections.namedtuple("Response", "status json text content_type error")

SIGNALS = ("buy", "hold", "sell")


class CheckFailed(Exception):
    pass


def describe(response):
    if response.error:
        return "no answer (%s)" % response.error
    return "HTTP %s: %s" % (response.status, (response.text or "")[:300])


def token_kid(token):
    """The `kid` in an access token's header (read, not verified: the gateway verifies)."""
    try:
        header = token.split(".", 1)[0]
        return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))).get("kid")
    except (ValueError, AttributeError):
        return None


def wait_until(probe, timeout, interval, clock=time.monotonic, sleep=time.sleep):
    """Call probe() until it returns (True, value) or timeout passes; returns the last value."""
    deadline = clock() + timeout
    while True:
        done, value = probe()
        if done or clock() >= deadline:
            return done, value
        sleep(interval)


def unhealthy_services(listing, expected):
    """Expected services with no instance that registered itself (Redis) and reports ok."""
    services = (listing or {}).get("services") or {}
    missing = []
    for name in expected:
        healthy = [
            i
            for i in services.get(name) or []
            if i.get("source") == "redis" and i.get("health") == "ok"
        ]
        if not healthy:
            missing.append(name)
    return missing


class PlatformCheck:
    def __init__(self, request, timeout=90, interval=0.5, clock=time.monotonic, sleep=time.sleep):
        self.request = request
        self.timeout = timeout
        self.interval = interval
        self.clock = clock
        self.sleep = sleep

    def wait(self, probe):
        return wait_until(probe, self.timeout, self.interval, self.clock, self.sleep)

    def health(self):
        def probe():
            response = self.request("GET", "/health")
            body = response.json or {}
            return response.status == 200 and body.get("status") == "ok", response

        ok, response = self.wait(probe)
        if not ok:
            raise CheckFailed(
                "the gateway did not report every dependency healthy within %ss: %s. "
                "Fix: read its 'checks' (GET /health) and the logs of what is down."
                % (self.timeout, describe(response))
            )
        return response.json

    def services(self, expected, ops_user=None):
        """Every expected service registered and healthy; /services needs a viewer, operator or
        admin, so `ops_user` signs in first (without one the listing is refused: 401)."""
        auth = self.login(ops_user) if ops_user else None
        try:
            return self._services(expected, auth)
        finally:
            if auth:
                self.logout(auth)

    def _services(self, expected, auth):
        def probe():
            response = self.request("GET", "/services", headers=auth)
            if response.status != 200:
                return False, (response, list(expected))
            missing = unhealthy_services(response.json, expected)
            return not missing, (response, missing)

        ok, (response, missing) = self.wait(probe)
        if not ok:
            raise CheckFailed(
                "services not registered and healthy within %ss: %s (%s). Fix: check those "
                "containers' health and logs (docker ps, docker logs)."
                % (self.timeout, ", ".join(missing) or "-", describe(response))
            )
        listing = response.json["services"]
        return dict(
            (name, sum(1 for i in listing.get(name) or [] if i.get("health") == "ok"))
            for name in expected
        )

    def metrics(self):
        response = self.request("GET", "/metrics")
        if (
            response.status != 200
            or not response.content_type.startswith("text/plain")
            or "# TYPE" not in (response.text or "")
        ):
            raise CheckFailed(
                "/metrics does not serve Prometheus text: %s (Content-Type %r)"
                % (describe(response), response.content_type)
            )

    def refuses_anonymous_orders(self, symbol):
        response = self.request("POST", "/api/v1/trading/execute", self.order(symbol))
        if response.status != 401:
            raise CheckFailed(
                "an order without a token was not refused with 401: %s. Fix: the gateway or "
                "the trading service accepts unauthenticated orders; do not expose it."
                % describe(response)
            )

    @staticmethod
    def order(symbol):
        return dict(symbol=symbol, side="buy", quantity=0.001, type="market")

    def login(self, user):
        login = self.request(
            "POST",
            "/api/v1/users/login",
            dict(username=user["username"], password=user["password"]),
        )
        token = (login.json or {}).get("access_token") if login.status == 200 else None
        if not token:
            raise CheckFailed(
                "the user '%s' cannot log in: %s. Fix: if its password changed, set the stored "
                "one in the secrets (smoke_password or admin_password) or remove the user."
                % (user["username"], describe(login))
            )
        return {"Authorization": "Bearer " + token}

    def logout(self, auth):
        """Ends the smoke user's session, so checks leave none behind."""
        self.request("POST", "/api/v1/users/logout", headers=auth)

    def token_keys(self, user, auth, expected_kid=None):
        """The smoke user's access token names a published key, and during a rotation the new
        one: the users service takes a new key up within a second or two, so this waits."""
        sessions = []

        def probe():
            # The smoke trade's token first, then a new sign-in each time.
            sessions.append(self.login(user) if sessions else auth)
            return self._published(sessions[-1], expected_kid)

        try:
            ok, seen = self.wait(probe)
        finally:
            for extra in sessions[1:]:
                self.logout(extra)
        if not ok:
            raise CheckFailed(
                "access tokens are not signed by %s within %ss: token key %s, published %s. "
                "Fix: check that gekko_config_dir/token-keys and token-signing on the hosts hold "
                "the keys the controller has, and the users service's logs."
                % (
                    expected_kid or "a published key",
                    self.timeout,
                    seen["signing_kid"],
                    ", ".join(seen["published_kids"]) or "none",
                )
            )
        return seen

    def _published(self, auth, expected_kid):
        kid = token_kid(auth["Authorization"][len("Bearer ") :])
        jwks = self.request("GET", "/api/v1/users/.well-known/jwks.json")
        kids = sorted(k.get("kid") for k in (jwks.json or {}).get("keys") or [])
        done = kid in kids and (expected_kid is None or kid == expected_kid)
        return done, dict(signing_kid=kid, published_kids=kids)

    def smoke_trade(self, user, symbol, idempotency_key):
        """register (or already registered) -> log in -> market order -> in the history."""
        registered = self.request(
            "POST",
            "/api/v1/users/register",
            dict(username=user["username"], email=user["email"], password=user["password"]),
        )
        if registered.status not in (201, 409):
            raise CheckFailed("registering the smoke user failed: %s" % describe(registered))
        auth = self.login(user)
        placed = self.request(
            "POST",
            "/api/v1/trading/execute",
            self.order(symbol),
            dict(auth, **{"Idempotency-Key": idempotency_key}),
        )
        if placed.status != 201:
            raise CheckFailed("the smoke order failed: %s" % describe(placed))
        order = placed.json
        history = self.request("GET", "/api/v1/trading/orders", headers=auth)
        ids = [o.get("id") for o in (history.json or {}).get("orders", [])]
        if history.status != 200 or order.get("id") not in ids:
            raise CheckFailed(
                "the smoke order %s is not in the order history: %s"
                % (order.get("id"), describe(history))
            )
        return auth, dict(
            (k, order.get(k)) for k in ("id", "side", "quantity", "symbol", "price", "status")
        )

    def signal(self, auth, symbol):
        model = self.request("GET", "/api/v1/signals/model", headers=auth)
        window = (model.json or {}).get("window") if model.status == 200 else None
        if not isinstance(window, int) or window < 1:
            raise CheckFailed("cannot read the signal model's window: %s" % describe(model))
        prices = [float(100 + i) for i in range(window)]
        predicted = self.request(
            "POST", "/api/v1/signals/predict", dict(symbol=symbol, prices=prices), auth
        )
        body = predicted.json or {}
        if predicted.status != 200 or body.get("signal") not in SIGNALS:
            raise CheckFailed("the smoke prediction failed: %s" % describe(predicted))
        return dict((k, body.get(k)) for k in ("symbol", "signal", "model_version", "device"))
