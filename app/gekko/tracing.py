"""OpenTelemetry tracing: one SDK TracerProvider per process, W3C trace context in and out.

`setup_tracing` installs the provider (no exporter unless GEKKO_OTLP_ENDPOINT is set and the
OTLP exporter package is installed; tests attach an in-memory exporter via `add_span_processor`).

Sampling is decided where a trace starts and followed downstream (W3C `sampled` flag): a new
trace is recorded with probability GEKKO_TRACE_SAMPLE_RATIO (default 1, read by gekko.config),
and a caller's decision is kept. Where nothing consumes spans (no exporter, no processor: the
deployed default), a new trace is not recorded: every request still gets a trace id, its
`traceparent` still goes to upstreams and back to the caller, and logs still carry it, but the
spans' attributes, events and timing are not built for nothing. A trace a caller samples is
recorded anyway, so its `sampled` flag and `tracestate` travel on unchanged. Recording every
span was an eighth of the gateway's CPU per request (docs/benchmarks.md).

`inject`/`extract` move `traceparent`/`tracestate` through HTTP headers and event payloads;
`TracingMiddleware` opens the SERVER span of every HTTP request and echoes its `traceparent`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("gekko.tracing")

__all__ = [
    "FASTAPI_TELEMETRY_OFF",
    "SpanKind",
    "TracingMiddleware",
    "add_span_processor",
    "client_span",
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


class ConsumedSampler(Sampler):
    """Parent-based ratio sampling; while no processor takes spans, only the traces a caller
    already samples are recorded (its `sampled` flag and `tracestate` go on unchanged), and new
    traces are not."""

    def __init__(self, ratio: float) -> None:
        self.consumed = False  # set once an exporter or processor is attached
        self._exported = ParentBased(TraceIdRatioBased(ratio))
        self._unexported = ParentBased(ALWAYS_OFF)

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None,
                      links=None, trace_state=None) -> SamplingResult:  # type: ignore[no-untyped-def]  # fmt: skip
        sampler = self._exported if self.consumed else self._unexported
        return sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"ConsumedSampler{{{self._exported.get_description()}}}"


_sampler = ConsumedSampler(1.0)


def setup_tracing(service_name: str, sample_ratio: float = 1.0) -> None:
    """Install the SDK provider once per process; later calls are no-ops."""
    global _provider, _tracer, _sampler
    if _provider is not None:
        return
    _sampler = ConsumedSampler(sample_ratio)
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name}), sampler=_sampler
    )
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
    _sampler.consumed = True


def add_span_processor(processor: SpanProcessor) -> None:
    """Attach a processor (e.g. SimpleSpanProcessor(InMemorySpanExporter()) in tests)."""
    setup_tracing("gekko")  # no-op when already set up
    if _provider is not None:
        _provider.add_span_processor(processor)
        _sampler.consumed = True


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


def client_span(
    name: str, attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[trace.Span]:
    """The CLIENT span of an outgoing call, made current. When the current trace is not
    recorded there is nothing to nest it in: the current span is used, so the callee's
    `traceparent` names this hop's SERVER span and no span is built."""
    current = trace.get_current_span()
    if not current.is_recording():
        return nullcontext(current)
    return start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


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
