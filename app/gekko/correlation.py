"""Correlation ids and W3C trace context, carried per request in context variables."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CORRELATION_HEADER = "x-correlation-id"
TRACEPARENT_HEADER = "traceparent"

correlation_id_var: ContextVar[str | None] = ContextVar("gekko_correlation_id", default=None)
traceparent_var: ContextVar[str | None] = ContextVar("gekko_traceparent", default=None)

# Accept caller ids only if they are short and printable, so they are safe to log and echo.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def accept_correlation_id(value: str | None) -> str:
    if value and _SAFE_ID.match(value):
        return value
    return str(uuid.uuid4())


def accept_traceparent(value: str | None) -> str | None:
    if value and _TRACEPARENT.match(value.strip().lower()):
        return value.strip()
    return None


class CorrelationIdMiddleware:
    """Plain ASGI middleware: read or mint X-Correlation-ID, echo it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_id = raw_trace = None
        for name, value in scope["headers"]:
            if name == b"x-correlation-id":
                raw_id = value.decode("latin-1")
            elif name == b"traceparent":
                raw_trace = value.decode("latin-1")
        correlation_id = accept_correlation_id(raw_id)
        cid_token = correlation_id_var.set(correlation_id)
        tp_token = traceparent_var.set(accept_traceparent(raw_trace))
        encoded = correlation_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k != b"x-correlation-id"
                ]
                headers.append((b"x-correlation-id", encoded))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            correlation_id_var.reset(cid_token)
            traceparent_var.reset(tp_token)
