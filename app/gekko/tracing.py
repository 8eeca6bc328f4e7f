"""OpenTelemetry tracing: one SDK TracerProvider per process, W3C trace context in and out.

`setup_tracing` installs the provider (no exporter unless GEKKO_OTLP_ENDPOINT is set and the
OTLP exporter package is installed; tests attach an in-memory exporter via `add_span_processor`).
`inject`/`extract` move `traceparent`/`tracestate` through HTTP headers and event payloads;
`TracingMiddleware` opens the SERVER span of every HTTP request and echoes its `traceparent`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("gekko.tracing")

__all__ = [
    "FASTAPI_TELEMETRY_OFF",
    "SpanKind",
    "TracingMiddleware",
    "add_span_processor",
    "current_trace_id",
    "extract",
    "inject",
    "setup_tracing",
    "start_span",
    "traceparent_of",
]

# FastAPI >= 0.16x opens its own OTel SERVER span (and per-dependency spans) once an SDK
# provider is set; TracingMiddleware owns that job here, so apps pass this to FastAPI().
FASTAPI_TELEMETRY_OFF: dict[str, Any] = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.get_tracer("gekko")


def setup_tracing(service_name: str) -> None:
    """Install the SDK provider once per process; later calls are no-ops."""
    global _provider, _tracer
    if _provider is not None:
        return
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    endpoint = os.environ.get("GEKKO_OTLP_ENDPOINT", "").strip()
    if endpoint:
        _add_otlp_exporter(provider, endpoint)
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("gekko")


def _add_otlp_exporter(provider: TracerProvider, endpoint: str) -> None:
    # Optional: the OTLP exporter is not a hard dependency (no network exporter in the image).
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("GEKKO_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp is not installed")
        return
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))


def add_span_processor(processor: SpanProcessor) -> None:
    """Attach a processor (e.g. SimpleSpanProcessor(InMemorySpanExporter()) in tests)."""
    setup_tracing("gekko")  # no-op when already set up
    if _provider is not None:
        _provider.add_span_processor(processor)


def inject(carrier: MutableMapping[str, str], context: Context | None = None) -> None:
    """Write `traceparent` (and `tracestate`) of the current (or given) context into carrier."""
    _propagator.inject(carrier, context=context)


def extract(carrier: Mapping[str, str]) -> Context:
    """Context whose parent is the span described by carrier's `traceparent` (if valid)."""
    return _propagator.extract(carrier)


@contextmanager
def start_span(
    name: str,
    context: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[trace.Span]:
    """Start a span (child of `context`, else of the current span) and make it current."""
    with _tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=attributes
    ) as span:
        yield span


def traceparent_of(span: trace.Span) -> str | None:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_trace_id() -> str | None:
    """32-hex trace id of the current span, for log lines; None outside any trace."""
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


class TracingMiddleware:
    """Plain ASGI middleware: a SERVER span per HTTP request, parented on the caller's traceparent.

    The span is current while the app runs, so logs carry its trace id and outgoing calls
    (the gateway proxy, event publishing) propagate it. The response echoes `traceparent`.
    """

    def __init__(self, app: ASGIApp, route_label: Any = None) -> None:
        self.app = app
        self.route_label = route_label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"traceparent" or name == b"tracestate":
                carrier[name.decode()] = value.decode("latin-1")
        parent = _propagator.extract(carrier) if carrier else Context()
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        label = self.route_label(path) if self.route_label is not None else path
        span = _tracer.start_span(
            f"{method} {label}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        header = (traceparent_of(span) or "").encode()

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                if header:
                    headers = [(k, v) for k, v in message.get("headers", []) if k != b"traceparent"]
                    headers.append((b"traceparent", header))
                    message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR))
            raise
        finally:
            otel_context.detach(token)
            span.end()
