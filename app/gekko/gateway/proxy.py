"""Reverse proxy: forward one request to an instance of a service, failing over when safe."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from starlette.requests import Request
from starlette.responses import Response

from gekko.correlation import correlation_id_var
from gekko.gateway.discovery import ServiceRegistryCache
from gekko.problems import problem_response

log = logging.getLogger("gekko.gateway.proxy")

# Public API prefix -> service name.
ROUTES: dict[str, str] = {
    "users": "users",
    "trading": "trading",
    "portfolio": "portfolio",
    "market-data": "market_data",
    "social": "social",
    "gamification": "gamification",
}

# RFC 9110 §7.6.1 connection-specific headers, never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Recomputed by the client/server on each hop.
_RECOMPUTED = frozenset({"host", "content-length"})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_ATTEMPTS = 3
EJECT_SECONDS = 10.0
REQUEST_DEADLINE_S = 5.0


def _dropped(items: Iterable[tuple[str, str]]) -> set[str]:
    """Hop-by-hop names plus any listed in the Connection header."""
    names = set(HOP_BY_HOP) | _RECOMPUTED
    for name, value in items:
        if name.lower() == "connection":
            names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return names


def upstream_request_headers(request: Request) -> CIMultiDict[str]:
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
    drop = _dropped(raw) | {"x-correlation-id", "x-forwarded-for"}
    headers: CIMultiDict[str] = CIMultiDict((k, v) for k, v in raw if k.lower() not in drop)
    # traceparent (and tracestate) are passed through unchanged in `headers`.
    correlation_id = correlation_id_var.get()
    if correlation_id:
        headers["X-Correlation-ID"] = correlation_id
    client = request.client.host if request.client else "unknown"
    prior = request.headers.get("x-forwarded-for")
    headers["X-Forwarded-For"] = f"{prior}, {client}" if prior else client
    headers["X-Forwarded-Proto"] = request.url.scheme
    if "host" in request.headers:
        headers["X-Forwarded-Host"] = request.headers["host"]
    return headers


def downstream_headers(upstream: CIMultiDictProxy[str]) -> list[tuple[bytes, bytes]]:
    drop = _dropped(upstream.items()) | {"x-correlation-id", "date", "server"}
    return [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in upstream.items()
        if k.lower() not in drop
    ]


def may_retry_after_send(method: str, headers: CIMultiDict[str]) -> bool:
    return method in IDEMPOTENT_METHODS or (method == "POST" and "idempotency-key" in headers)


async def forward(
    session: aiohttp.ClientSession,
    cache: ServiceRegistryCache,
    service: str,
    request: Request,
) -> Response:
    body = await request.body()
    headers = upstream_request_headers(request)
    method = request.method
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    retry_after_send = may_retry_after_send(method, headers)

    tried: list[str] = []
    failure: tuple[int, str] | None = None
    deadline = time.monotonic() + REQUEST_DEADLINE_S
    while len(tried) < MAX_ATTEMPTS and time.monotonic() < deadline:
        instance = cache.pick(service, exclude=tried)
        if instance is None:
            break
        tried.append(instance.url)
        try:
            async with session.request(
                method,
                instance.url + target,
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as upstream:
                content = await upstream.read()
                response = Response(content=content, status_code=upstream.status)
                response.raw_headers = [
                    (k, v) for k, v in response.raw_headers if k == b"content-length"
                ] + downstream_headers(upstream.headers)
                return response
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Nothing reached the instance, so another one may take any request.
            log.warning("upstream %s connect failed: %s", instance.url, exc)
            cache.eject(instance.url, EJECT_SECONDS)
            failure = (502, f"could not connect to a {service} instance")
            continue
        except TimeoutError:
            log.warning("upstream %s timed out on %s %s", instance.url, method, target)
            failure = (504, f"{service} did not answer in time")
        except aiohttp.ClientError as exc:
            log.warning("upstream %s failed: %s", instance.url, exc)
            failure = (502, f"{service} failed while answering")
        if not retry_after_send:
            break  # the request may have been processed: retrying could duplicate it
        await asyncio.sleep(0)

    if failure is None:
        return problem_response(
            503,
            f"no healthy instance of {service} is available",
            title="Service Unavailable",
            type_="https://gekko.dev/problems/no-instance",
            headers={"Retry-After": "1"},
        )
    status, detail = failure
    return problem_response(status, detail, type_="https://gekko.dev/problems/upstream")
