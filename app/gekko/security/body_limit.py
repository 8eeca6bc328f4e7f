"""Request bodies over a size limit are refused with 413 before anything parses them.

A declared `Content-Length` over the limit is answered at once, without reading the body; a
chunked body is counted as it arrives and refused as soon as it passes the limit. Either way the
application never receives more than `max_bytes`.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gekko.config import DEFAULT_MAX_BODY_BYTES
from gekko.problems import PROBLEM_TYPE_BASE, problem_response


class _TooLarge(HTTPException):
    """Raised from `receive` once a body passes the limit. An HTTPException, so that a FastAPI
    route reading the body answers it as the 413 it is instead of a 400 parse error."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _TooLarge:
            if started:  # the application answered before reading it all: nothing to add
                return
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            f"the request body is larger than {self.max_bytes} bytes",
            type_=f"{PROBLEM_TYPE_BASE}body-too-large",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
