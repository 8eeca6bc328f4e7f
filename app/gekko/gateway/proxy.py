"""Reverse proxy for /api/v1: plain ASGI, in front of FastAPI routing.

Per request: resolve the service from the path prefix, take the rate-limit quotas, ask the
service's circuit breaker, then forward to a healthy instance (round robin) over pooled
keep-alive connections (gekko.gateway.upstream), retrying on *another* instance when that is
safe. Every attempt feeds outlier ejection; the request's final outcome feeds the breaker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.types import ASGIApp, Receive, Scope, Send

from gekko.breaker import CircuitBreaker, State
from gekko.config import API_ROUTES, GatewayTuning
from gekko.correlation import correlation_id_var
from gekko.dynconfig import FEATURE_DISABLED_HEADER
from gekko.gateway.discovery import Instance, ServiceRegistryCache
from gekko.gateway.shedding import LoadShedder, priority_of
from gekko.gateway.telemetry import GatewayMetrics
from gekko.gateway.upstream import (
    ConnectFailed,
    Headers,
    UpstreamClient,
    UpstreamError,
    UpstreamTimeout,
)
from gekko.problems import FAULT_ELSEWHERE_HEADER, problem_response
from gekko.ratelimit import Decision, RateLimiter, ratelimit_header
from gekko.security.events import SecurityEvents
from gekko.security.revocations import RevokedSessions
from gekko.security.tokens import TokenClaims, TokenError, VerifyKeys, decode_token
from gekko.tracing import client_span, inject

log = logging.getLogger("gekko.gateway.proxy")

API_PREFIX = "/api/v1/"
# Public API prefix -> service name.
ROUTES: dict[str, str] = API_ROUTES
# Where a bearer token is not looked at: a client whose access token expired still signs in,
# refreshes it, or reads the published keys.
TOKENLESS_PATHS = frozenset(
    API_PREFIX + path
    for path in (
        "users/login",
        "users/register",
        "users/token/refresh",
        "users/.well-known/jwks.json",
    )
)
# Verified tokens remembered (bounded: a flood of tokens cannot grow memory).
_VERIFIED_CACHE_SIZE = 10_000

# RFC 9110 §7.6.1 connection-specific headers, never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Recomputed by the client/server on each hop.
_RECOMPUTED = frozenset({b"host", b"content-length"})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


# Never passed on from a caller: the gateway sets its own. `expect` is met here: the gateway
# reads the whole body before it forwards the request.
_SET_HERE = frozenset(
    {
        b"x-correlation-id",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"expect",
    }
)
_REQUEST_DROPPED = HOP_BY_HOP | _RECOMPUTED | _SET_HERE
_RESPONSE_DROPPED = (
    HOP_BY_HOP
    | _RECOMPUTED
    | {
        b"x-correlation-id",
        b"date",
        b"server",
        b"traceparent",
    }
)
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
_FAULT_ELSEWHERE = frozenset(
    {FEATURE_DISABLED_HEADER.lower().encode(), FAULT_ELSEWHERE_HEADER.lower().encode()}
)


def _dropped(items: Headers, always: frozenset[bytes]) -> frozenset[bytes]:
    """`always` plus any names listed in the Connection header (the same set when none are).
    `items`' names are lower case."""
    listed = [
        token.strip().lower()
        for name, value in items
        if name == b"connection"
        for token in value.split(b",")
        if token.strip()
    ]
    return always.union(listed) if listed else always


def upstream_request_headers(scope: Scope) -> Headers:
    """The caller's headers as the instance gets them: hop-by-hop ones dropped, the
    correlation id and the forwarding headers set here. (ASGI names are lower case.)"""
    raw: Headers = scope["headers"]
    drop = _dropped(raw, _REQUEST_DROPPED)
    headers = [(k, v) for k, v in raw if k not in drop]
    correlation_id = correlation_id_var.get()
    if correlation_id:
        headers.append((b"x-correlation-id", correlation_id.encode("latin-1")))
    client = scope.get("client")
    peer = client[0].encode("latin-1") if client else b"unknown"
    prior = next((v for k, v in raw if k == b"x-forwarded-for"), None)
    headers.append((b"x-forwarded-for", prior + b", " + peer if prior else peer))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode("latin-1")))
    host = next((v for k, v in raw if k == b"host"), None)
    if host:
        headers.append((b"x-forwarded-host", host))
    return headers


def with_trace_headers(headers: Headers) -> Headers:
    """`headers` with the caller's traceparent replaced by the current span's, so upstream
    spans nest (unchanged when no span is being traced)."""
    carrier: dict[str, str] = {}
    inject(carrier)
    if not carrier:
        return headers
    kept = [(k, v) for k, v in headers if k not in _TRACE_HEADERS]
    return kept + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]


def downstream_headers(upstream: Headers) -> Headers:
    """The instance's answer headers as the caller gets them (names lower case)."""
    lowered = [(k.lower(), v) for k, v in upstream]
    drop = _dropped(lowered, _RESPONSE_DROPPED)
    return [(k, v) for k, v in lowered if k not in drop]


def _fault_elsewhere(headers: Headers) -> bool:
    return any(k in _FAULT_ELSEWHERE for k, _ in headers)


def may_retry_after_send(method: str, headers: Headers) -> bool:
    """A request that reached an instance may be resent only if doing so cannot duplicate it."""
    return method in IDEMPOTENT_METHODS or (
        method == "POST" and any(k == b"idempotency-key" for k, _ in headers)
    )


def backoff_delay(attempt: int, base_s: float, remaining_s: float) -> float:
    """Full-jitter exponential backoff before retry `attempt` (1-based), within the deadline."""
    return min(random.uniform(0, base_s * (2 ** (attempt - 1))), max(0.0, remaining_s))  # noqa: S311


@dataclass
class Upstreams:
    """Everything the proxy needs; the client and limiter are attached by the app's lifespan."""

    cache: ServiceRegistryCache
    tuning: GatewayTuning
    metrics: GatewayMetrics
    verify_keys: VerifyKeys
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    client: UpstreamClient | None = None
    limiter: RateLimiter | None = None
    revoked: RevokedSessions | None = None
    # Tokens refused here never reach a service, so the gateway audits them itself.
    security_events: SecurityEvents | None = None
    _verified: dict[str, TokenClaims] = field(default_factory=dict)
    # Told when a circuit opens (the health checker, to watch for its recovery at once).
    on_circuit_open: Callable[[], None] | None = None
    shedder: LoadShedder = field(init=False)

    def __post_init__(self) -> None:
        self.shedder = LoadShedder(
            normal_at=self.tuning.shed_normal_in_flight, low_at=self.tuning.shed_low_in_flight
        )

    def breaker(self, service: str) -> CircuitBreaker:
        breaker = self.breakers.get(service)
        if breaker is None:
            t = self.tuning
            breaker = self.breakers[service] = CircuitBreaker(
                service,
                consecutive_failures=t.breaker_consecutive,
                failure_rate=t.breaker_failure_rate,
                min_requests=t.breaker_min_requests,
                window_s=t.breaker_window_s,
                open_s=t.breaker_open_s,
                half_open_probes=t.breaker_half_open_probes,
                on_transition=self._on_transition,
            )
        return breaker

    def ready_again(self, instance: Instance, checked_at: float) -> None:
        """An active health check begun at `checked_at` saw `instance` ready: its service's
        circuit, if it opened before then, half-opens now rather than after a fixed window."""
        breaker = self.breakers.get(instance.service)
        if breaker is not None and breaker.ready_again(checked_at):
            log.info(
                "%s instance %s is ready again: probing the circuit", instance.service, instance.url
            )

    def any_circuit_open(self) -> bool:
        return any(b.state is State.OPEN for b in self.breakers.values())

    def _on_transition(self, service: str, old: Any, new: Any) -> None:
        self.metrics.on_transition(service, old, new)
        if new is State.OPEN and self.on_circuit_open is not None:
            self.on_circuit_open()
        log.warning("circuit breaker for %s: %s -> %s", service, old.name, new.name)

    def verify(self, token: str) -> TokenClaims:
        """The token's claims; a signature is checked once per token, then remembered until
        the token expires."""
        claims = self._verified.get(token)
        if claims is not None and claims.expires_at > time.time():
            return claims
        claims = decode_token(token, self.verify_keys)
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    async def caller(self, scope: Scope) -> TokenClaims | None:
        """The verified caller, or None without a bearer token (or where tokens are not looked
        at); raises TokenError for a token that is invalid, expired or of an ended session."""
        if scope["path"] in TOKENLESS_PATHS:
            return None
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                claims = self.verify(value[7:].decode("latin-1").strip())
                if self.revoked is not None and await self.revoked.contains(claims.session_id):
                    raise TokenError("the session of this token has ended; sign in again")
                return claims
        return None


# Who a refused quota belongs to, as the 429's detail names it.
QUOTA_SUBJECTS = {
    "user": "user",
    "anonymous": "source address without a token",
    "service": "service",
}


def rate_key(scope: Scope, caller: TokenClaims | None) -> str:
    """The rate-limit subject: the signed-in user, else the client's address."""
    if caller is not None:
        return f"user:{caller.user_id}"
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class ApiProxy:
    """Plain ASGI middleware: /api/v1/* is proxied here; everything else goes to `app`."""

    def __init__(self, app: ASGIApp, upstreams: Upstreams) -> None:
        self.app = app
        self.up = upstreams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        prefix = path[len(API_PREFIX) :].split("/", 1)[0]
        service = ROUTES.get(prefix)
        if service is None:
            response = problem_response(
                404,
                f"no API is served under /api/v1/{prefix}; known: {', '.join(ROUTES)}",
                type_="https://gekko.dev/problems/unknown-route",
            )
            await response(scope, receive, send)
            return

        up = self.up
        shedder = up.shedder
        priority = priority_of(service, scope["method"])
        if not shedder.admit(priority):
            up.metrics.shed.labels(service, priority.name.lower()).inc()
            await self._problem(
                scope, receive, send, [], 503,
                f"the gateway is overloaded and serves orders first; retry this "
                f"{service} request in 1 s",
                "overloaded", retry_after=1,
            )  # fmt: skip
            return
        shedder.started()
        try:
            await self._admitted(scope, receive, send, service, path)
        finally:
            shedder.finished()

    async def _admitted(
        self, scope: Scope, receive: Receive, send: Send, service: str, path: str
    ) -> None:
        up = self.up
        extra: list[tuple[bytes, bytes]] = []
        # A bad token is refused here, before it costs a quota or an upstream call.
        try:
            caller = await up.caller(scope)
        except TokenError as exc:
            up.metrics.auth_rejections.inc()
            if up.security_events is not None:
                client = scope.get("client")
                up.security_events.record(
                    "access-denied",
                    source=client[0] if client else "unknown",
                    status=401,
                    reason="unauthorized",
                    method=scope.get("method", ""),
                    path=path,
                    detail=str(exc),
                )
            await self._problem(
                scope, receive, send, extra, 401, str(exc), "unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="gekko", error="invalid_token"'},
            )  # fmt: skip
            return
        if up.limiter is not None:
            # Read with the quotas check() takes: consistent.
            policy = up.limiter.policy_for(anonymous=caller is None)
            decision = await up.limiter.check(
                rate_key(scope, caller), service, anonymous=caller is None
            )
            extra.append((b"ratelimit-policy", policy.encode()))
            if decision is not None:
                extra.append((b"ratelimit", _rate_value(decision)))
                if not decision.allowed:
                    up.metrics.ratelimit_rejections.labels(decision.scope).inc()
                    wait = max(1, decision.reset_s)
                    await self._problem(
                        scope, receive, send, extra, 429,
                        f"rate limit exceeded: {decision.limit} requests per "
                        f"{decision.window_s} s per {QUOTA_SUBJECTS[decision.scope]}; "
                        f"retry in {wait} s",
                        "rate-limited", retry_after=wait,
                    )  # fmt: skip
                    return

        breaker = up.breaker(service)
        if not breaker.allow():
            up.metrics.breaker_rejections.labels(service).inc()
            await self._problem(
                scope, receive, send, extra, 503,
                f"{service} is failing; its circuit breaker is open, not calling it",
                "circuit-open", retry_after=breaker.retry_after(),
            )  # fmt: skip
            return
        recorded = False
        try:
            failed = await self._forward(scope, receive, send, service, extra)
            if failed:
                breaker.record_failure()
            else:
                breaker.record_success()
            recorded = True
        finally:
            if not recorded:
                breaker.release()

    async def _problem(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        extra: list[tuple[bytes, bytes]],
        status: int,
        detail: str,
        slug: str,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        headers = dict(headers or {})
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        response = problem_response(
            status, detail, type_=f"https://gekko.dev/problems/{slug}", headers=headers
        )
        response.raw_headers.extend(extra)
        await response(scope, receive, send)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        extra: list[tuple[bytes, bytes]],
    ) -> bool:
        """Send to an instance (retrying when safe) and answer; True when that answer is a
        failure of the service (a 5xx, a timeout, no instance) for its circuit breaker."""
        up = self.up
        client = up.client
        assert client is not None  # noqa: S101 - attached by the lifespan before serving
        body = await _read_body(receive)
        headers = upstream_request_headers(scope)
        method = scope["method"]
        query = scope.get("query_string", b"")
        target = scope.get("raw_path") or quote(scope["path"]).encode()
        if query:
            target += b"?" + query
        retry_after_send = may_retry_after_send(method, headers)
        tuning = up.tuning
        deadline = time.monotonic() + tuning.retry_deadline_s
        latency = up.metrics.upstream_latency_of

        tried: list[str] = []
        failure: tuple[int, str] | None = None
        last_5xx: tuple[int, Headers, bytes] | None = None
        for attempt in range(1 + tuning.retry_attempts):
            instance = up.cache.pick(service, exclude=tried)
            if instance is None:
                break
            if attempt:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                up.metrics.retries.labels(service).inc()
                await asyncio.sleep(backoff_delay(attempt, tuning.retry_backoff_s, remaining))
            tried.append(instance.url)
            started = time.perf_counter()
            sent = True  # False only when the connection was never made
            with client_span(
                f"{method} {service}",
                attributes={"server.address": instance.url, "gekko.attempt": attempt},
            ):
                try:
                    upstream = await client.request(
                        instance.url, method, target, with_trace_headers(headers), body,
                        timeout_s=tuning.upstream_timeout_s, may_resend=retry_after_send,
                    )  # fmt: skip
                except ConnectFailed as exc:
                    sent = False
                    outcome, failure = (
                        "connect_error",
                        (502, f"could not connect to any {service} instance"),
                    )
                    log.warning("upstream %s connect failed: %s", instance.url, exc)
                except UpstreamTimeout:
                    outcome, failure = "timeout", (504, f"{service} did not answer in time")
                    log.warning(
                        "upstream %s timed out on %s %s",
                        instance.url, method, target.decode("latin-1"),
                    )  # fmt: skip
                except UpstreamError as exc:
                    outcome, failure = "error", (502, f"{service} failed while answering")
                    log.warning("upstream %s failed: %s", instance.url, exc)
                else:
                    status, content = upstream.status, upstream.body
                    raw_headers = downstream_headers(upstream.headers)
                    # A feature switched off, or a failing venue, is no fault of the instance.
                    failed = status >= 500 and not _fault_elsewhere(raw_headers)
                    outcome = "5xx" if failed else "ok"
            latency(service, outcome).observe(time.perf_counter() - started)
            if up.cache.record_outcome(service, instance.url, outcome != "ok"):
                up.metrics.ejections.labels(service).inc()
                log.warning("ejected %s instance %s (outlier detection)", service, instance.url)
            if outcome == "ok":
                await _answer(send, status, raw_headers, content, extra)
                return False
            if outcome == "5xx":
                last_5xx = (status, raw_headers, content)  # the upstream's own answer
                if not retry_after_send:
                    break
                continue
            if sent and not retry_after_send:
                break  # the request may have been processed: resending could duplicate it

        if last_5xx is not None:
            await _answer(send, *last_5xx, extra)
            return True
        if failure is None:
            await self._problem(
                scope, receive, send, extra, 503,
                f"no healthy instance of {service} is available",
                "no-instance", retry_after=1,
            )  # fmt: skip
            return True
        status, detail = failure
        await self._problem(scope, receive, send, extra, status, detail, "upstream")
        return True


async def _answer(
    send: Send,
    status: int,
    headers: Headers,
    content: bytes,
    extra: list[tuple[bytes, bytes]],
) -> int:
    headers.append((b"content-length", str(len(content)).encode()))
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
    return status


def _rate_value(decision: Decision) -> bytes:
    return ratelimit_header(decision.limit, decision.remaining, decision.reset_s).encode()


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
