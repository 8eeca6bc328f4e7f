"""Strict-Transport-Security on the gateway's TLS listener (RFC 6797): a browser that has seen
it once uses HTTPS only for the platform's host, so a later plain-HTTP link or a downgrade by
someone on the path cannot strip TLS. Sent only over TLS, as the RFC requires (the container's
own plain health socket gets none)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def hsts_value(max_age_s: int) -> bytes:
    return f"max-age={max_age_s}; includeSubDomains".encode()


class HstsMiddleware:
    def __init__(self, app: ASGIApp, max_age_s: int) -> None:
        self.app = app
        self.header = (b"strict-transport-security", hsts_value(max_age_s))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_hsts)
