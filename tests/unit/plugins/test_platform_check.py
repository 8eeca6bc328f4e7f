"""The deploy's verify phase (platform_check): each step against a fake gateway, and the HTTP
client against a real local server."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible_collections.gekko.platform.plugins.module_utils._platform_check import (
    CheckFailed,
    PlatformCheck,
    Response,
    token_kid,
)
from ansible_collections.gekko.platform.plugins.modules.platform_check import http_client

JWKS = "/api/v1/users/.well-known/jwks.json"
OPS = {"username": "admin", "password": "admin-pw"}
USER = {"username": "gekko-smoke", "email": "smoke@gekko.example.com", "password": "pw"}


def ok(body, status=200):
    return Response(status, body, json.dumps(body), "application/json", None)


class FakeGateway:
    """Answers by (method, path); a list of answers is served in turn, the last one repeating."""

    def __init__(self, **overrides):
        self.orders = []
        self.calls = []
        self.routes = {
            ("GET", "/health"): ok({"status": "ok"}),
            ("GET", "/services"): ok(
                {"services": {"users": [{"source": "redis", "health": "ok"}]}}
            ),
            ("GET", "/metrics"): Response(200, None, "# TYPE x counter\n", "text/plain", None),
            ("POST", "/api/v1/users/register"): ok({}, 201),
            ("POST", "/api/v1/users/login"): ok({"access_token": "t"}),
            ("POST", "/api/v1/users/logout"): ok({}, 204),
            ("GET", "/api/v1/signals/model"): ok({"window": 3}),
        }
        self.routes.update(overrides)

    def __call__(self, method, path, body=None, headers=None):
        self.calls.append((method, path, body, headers))
        if (method, path) == ("POST", "/api/v1/trading/execute"):
            if not (headers or {}).get("Authorization"):
                return self.routes.get(("anon", "execute"), ok({"detail": "no"}, 401))
            order = dict(body, id=f"o-{len(self.orders)}", price=1.0, status="filled")
            self.orders.append(order)
            return self.routes.get(("POST", "/api/v1/trading/execute"), ok(order, 201))
        if (method, path) == ("GET", "/services") and not (headers or {}).get("Authorization"):
            return ok({"detail": "sign in"}, 401)  # viewers, operators and admins only
        if (method, path) == ("GET", "/api/v1/trading/orders"):
            return self.routes.get((method, path), ok({"orders": self.orders}))
        if (method, path) == ("POST", "/api/v1/signals/predict"):
            assert body["prices"] == [100.0, 101.0, 102.0]
            return self.routes.get((method, path), ok({"signal": "buy", "symbol": "BTC-USD"}))
        answer = self.routes[(method, path)]
        if isinstance(answer, list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer


class Clock:
    def __init__(self):
        self.now = 0.0

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def checker(gateway, timeout=10):
    clock = Clock()
    return PlatformCheck(
        gateway, timeout=timeout, interval=0.5, clock=clock.time, sleep=clock.sleep
    )


def test_a_healthy_platform_passes_every_step_and_the_smoke_order_is_read_back():
    gateway = FakeGateway()
    check = checker(gateway)
    assert check.health() == {"status": "ok"}
    assert check.services(["users"], OPS) == {"users": 1}
    listing = [c for c in gateway.calls if c[1] == "/services"]
    assert listing[0][3] == {"Authorization": "Bearer t"}  # read as the signed-in admin
    assert [c[1] for c in gateway.calls][-1] == "/api/v1/users/logout"  # and signed out again
    check.metrics()
    check.refuses_anonymous_orders("BTC-USD")
    auth, order = check.smoke_trade(USER, "BTC-USD", "deploy-smoke-1")
    assert order == {
        "id": "o-0",
        "side": "buy",
        "quantity": 0.001,
        "symbol": "BTC-USD",
        "price": 1.0,
        "status": "filled",
    }
    placed = [c for c in gateway.calls if c[1] == "/api/v1/trading/execute" and c[3]]
    assert placed[0][3] == {"Authorization": "Bearer t", "Idempotency-Key": "deploy-smoke-1"}
    assert check.signal(auth, "BTC-USD")["signal"] == "buy"


def token(kid):
    header = base64.urlsafe_b64encode(json.dumps({"alg": "EdDSA", "kid": kid}).encode())
    return header.decode().rstrip("=") + ".payload.signature"


def jwks(*kids):
    return ok({"keys": [{"kid": kid} for kid in kids]})


def test_the_token_key_id_is_read_from_the_header():
    assert token_kid(token("k-1")) == "k-1"
    assert token_kid("garbage") is None


def test_the_smoke_token_must_be_signed_by_a_published_key():
    gateway = FakeGateway()
    gateway.routes[("GET", JWKS)] = jwks("k-1", "k-2")
    auth = {"Authorization": "Bearer " + token("k-2")}
    seen = checker(gateway).token_keys(USER, auth)
    assert seen == {"signing_kid": "k-2", "published_kids": ["k-1", "k-2"]}
    gateway.routes[("GET", JWKS)] = jwks("k-1")
    gateway.routes[("POST", "/api/v1/users/login")] = ok({"access_token": token("k-2")})
    with pytest.raises(CheckFailed, match="not signed by a published key.*token key k-2"):
        checker(gateway).token_keys(USER, auth)


def test_after_a_rotation_the_check_signs_in_again_until_the_new_key_signs():
    gateway = FakeGateway()
    gateway.routes[("GET", JWKS)] = jwks("k-1", "k-2")
    gateway.routes[("POST", "/api/v1/users/login")] = [
        ok({"access_token": token("k-1")}),
        ok({"access_token": token("k-2")}),
    ]
    old = {"Authorization": "Bearer " + token("k-1")}
    seen = checker(gateway).token_keys(USER, old, expected_kid="k-2")
    assert seen["signing_kid"] == "k-2"
    logins = [c for c in gateway.calls if c[1] == "/api/v1/users/login"]
    logouts = [c for c in gateway.calls if c[1] == "/api/v1/users/logout"]
    assert len(logins) == 2 and len(logouts) == 2  # every extra session is ended


def test_health_is_waited_for_until_the_dependencies_are_ok():
    degraded = ok({"status": "degraded"}, 503)
    gateway = FakeGateway()
    gateway.routes[("GET", "/health")] = [degraded, degraded, ok({"status": "ok"})]
    assert checker(gateway).health() == {"status": "ok"}
    assert [c[1] for c in gateway.calls] == ["/health"] * 3


def test_health_that_never_recovers_fails_with_the_answer_and_a_fix():
    gateway = FakeGateway()
    gateway.routes[("GET", "/health")] = ok(
        {"status": "degraded", "checks": {"redis": "down"}}, 503
    )
    with pytest.raises(CheckFailed, match=r"within 10s: HTTP 503: .*redis.*Fix: "):
        checker(gateway).health()
    assert len(gateway.calls) == 21  # every half second for ten seconds, then once at the end


def test_a_gateway_that_does_not_answer_is_reported_as_such():
    gateway = FakeGateway()
    gateway.routes[("GET", "/health")] = Response(None, None, "", "", "Connection refused")
    with pytest.raises(CheckFailed, match=r"no answer \(Connection refused\)"):
        checker(gateway, timeout=1).health()


def test_a_service_with_only_a_static_or_unhealthy_instance_is_named():
    gateway = FakeGateway()
    gateway.routes[("GET", "/services")] = ok(
        {
            "services": {
                "users": [{"source": "redis", "health": "ok"}],
                "trading": [
                    {"source": "static", "health": "ok"},
                    {"source": "redis", "health": "down"},
                ],
            }
        }
    )
    with pytest.raises(CheckFailed, match=r"registered and healthy within 10s: trading, signals "):
        checker(gateway).services(["users", "trading", "signals"], OPS)


def test_without_an_ops_user_the_listing_is_refused_and_said_so():
    with pytest.raises(CheckFailed, match="HTTP 401"):
        checker(FakeGateway(), timeout=1).services(["users"])


def test_metrics_must_be_prometheus_text():
    gateway = FakeGateway()
    gateway.routes[("GET", "/metrics")] = ok({"metrics": []})
    with pytest.raises(CheckFailed, match="does not serve Prometheus text"):
        checker(gateway).metrics()


def test_an_order_without_a_token_that_is_accepted_fails_the_check():
    gateway = FakeGateway()
    gateway.routes[("anon", "execute")] = ok({"id": "x"}, 201)
    with pytest.raises(CheckFailed, match="without a token was not refused"):
        checker(gateway).refuses_anonymous_orders("BTC-USD")


def test_an_existing_smoke_user_is_fine_but_a_wrong_password_says_what_to_do():
    gateway = FakeGateway()
    gateway.routes[("POST", "/api/v1/users/register")] = ok({"detail": "exists"}, 409)
    checker(gateway).smoke_trade(USER, "BTC-USD", "k")
    gateway.routes[("POST", "/api/v1/users/login")] = ok({"detail": "bad credentials"}, 401)
    with pytest.raises(
        CheckFailed, match="user 'gekko-smoke' cannot log in: HTTP 401.*smoke_password"
    ):
        checker(gateway).smoke_trade(USER, "BTC-USD", "k")


def test_an_order_missing_from_the_history_fails_the_smoke_trade():
    gateway = FakeGateway()
    gateway.routes[("GET", "/api/v1/trading/orders")] = ok({"orders": []})
    with pytest.raises(CheckFailed, match="o-0 is not in the order history"):
        checker(gateway).smoke_trade(USER, "BTC-USD", "k")


def test_a_prediction_outside_buy_hold_sell_fails():
    gateway = FakeGateway()
    gateway.routes[("POST", "/api/v1/signals/predict")] = ok({"signal": "moon"})
    with pytest.raises(CheckFailed, match="smoke prediction failed"):
        checker(gateway).signal({"Authorization": "Bearer t"}, "BTC-USD")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, content_type, text):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        self.wfile.write(text.encode())

    def do_GET(self):
        if self.path == "/metrics":
            self.answer(200, "text/plain; version=0.0.4", "# TYPE up gauge\n")
        else:
            self.answer(503, "application/problem+json", json.dumps({"status": "down"}))

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        echoed = {"body": body, "type": self.headers["Content-Type"], "key": self.headers["X-Key"]}
        self.answer(201, "application/json", json.dumps(echoed))


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_the_http_client_returns_error_answers_as_results_and_parses_json(server):
    request = http_client(server + "/", validate_certs=True)
    down = request("GET", "/health")
    assert (down.status, down.json, down.error) == (503, {"status": "down"}, None)
    text = request("GET", "/metrics")
    assert text.status == 200 and text.json is None and text.text == "# TYPE up gauge\n"
    assert text.content_type.startswith("text/plain")
    posted = request("POST", "/orders", {"a": 1}, {"X-Key": "k"})
    assert posted.json == {"body": {"a": 1}, "type": "application/json", "key": "k"}


def test_the_http_client_reports_a_closed_port_as_no_answer():
    answer = http_client("http://127.0.0.1:9", validate_certs=True)("GET", "/health")
    assert answer.status is None and answer.error
