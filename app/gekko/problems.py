"""RFC 9457 problem details: every error response is application/problem+json."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gekko.correlation import correlation_id_var

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://gekko.dev/problems/"

log = logging.getLogger("gekko.problems")


def problem_body(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type_: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body: dict[str, Any] = {
        "type": type_ or "about:blank",
        "title": title or phrase,
        "status": status,
        "detail": detail or title or phrase,
    }
    correlation_id = correlation_id_var.get()
    if correlation_id:
        body["correlation_id"] = correlation_id
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type_: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = problem_body(status, detail, title=title, type_=type_, **extra)
    return Response(
        content=orjson.dumps(body, default=str),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


# On a 5xx answer: the failure is not this instance's but something it depends on beyond the
# platform (a venue), named in the value. The gateway passes such an answer on as it is: no
# retry on another instance, no mark against this one in outlier ejection or its breaker.
FAULT_ELSEWHERE_HEADER = "Gekko-Fault-Elsewhere"


class ProblemError(Exception):
    """Raised by route code for an expected failure that maps to a problem response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.type_ = f"{PROBLEM_TYPE_BASE}{slug}" if slug else None
        self.headers = headers
        self.extra = extra

    def to_response(self) -> Response:
        return problem_response(
            self.status,
            self.detail,
            title=self.title,
            type_=self.type_,
            headers=self.headers,
            **self.extra,
        )


def _format_loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": _format_loc(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type")}
        for err in exc.errors()
    ]


async def _problem_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)  # noqa: S101 - registered for ProblemError only
    return exc.to_response()


async def _validation_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    errors = validation_errors(exc)
    if errors:
        first = errors[0]
        detail = f"{first['loc']}: {first['msg']}" if first["loc"] else first["msg"]
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
    else:
        detail = "The request is invalid"
    return problem_response(
        422,
        detail,
        title="Request validation failed",
        type_=f"{PROBLEM_TYPE_BASE}validation",
        errors=errors,
    )


async def _http_exception_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


class UnhandledErrorMiddleware:
    """Turn an escaped exception into a 500 problem with no internals, logged once.

    Plain ASGI (not BaseHTTPMiddleware); it sits inside Starlette's ServerErrorMiddleware, so
    the traceback is logged here and never re-raised to the server or shown to the caller.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def track(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, track)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = problem_response(
                500,
                "An unexpected error occurred; quote the correlation_id when reporting it.",
            )
            await response(scope, receive, send)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_middleware(UnhandledErrorMiddleware)
