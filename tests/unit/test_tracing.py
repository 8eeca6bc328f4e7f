import io
import logging

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gekko import tracing
from gekko.correlation import CorrelationIdMiddleware
from gekko.logs import JsonFormatter

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    tracing.setup_tracing("test")
    exp = InMemorySpanExporter()
    tracing.add_span_processor(SimpleSpanProcessor(exp))
    return exp


def test_inject_extract_round_trip(exporter):
    exporter.clear()
    with tracing.start_span("publish") as span:
        carrier: dict[str, str] = {}
        tracing.inject(carrier)
        trace_id = tracing.current_trace_id()
    assert carrier["traceparent"] == tracing.traceparent_of(span)
    with tracing.start_span("consume", context=tracing.extract(carrier), kind=SpanKind.CONSUMER):
        assert tracing.current_trace_id() == trace_id
    publish, consume = exporter.get_finished_spans()
    assert consume.parent.span_id == publish.context.span_id
    assert tracing.current_trace_id() is None  # nothing current outside a span


@pytest.mark.parametrize(
    "garbage",
    [
        "nonsense",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero parent span id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version ff
    ],
)
def test_extract_ignores_garbage(exporter, garbage):
    exporter.clear()
    with tracing.start_span("x", context=tracing.extract({"traceparent": garbage})):
        trace_id = tracing.current_trace_id()
    # A new root trace: not the (invalid) caller's trace, and no parent.
    assert trace_id is not None and trace_id != "0af7651916cd43dd8448eb211c80319c"
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_middleware_continues_the_callers_trace_and_logs_carry_ids(exporter):
    exporter.clear()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc", "svc-1"))
    logger = logging.getLogger("test.tracing")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    app = FastAPI(telemetry=tracing.FASTAPI_TELEMETRY_OFF)

    @app.get("/api/v1/trading/orders")
    async def orders() -> dict[str, str]:
        logger.info("listing orders")
        return {"ok": "yes"}

    app.add_middleware(tracing.TracingMiddleware)
    app.add_middleware(CorrelationIdMiddleware)
    try:
        resp = TestClient(app).get(
            "/api/v1/trading/orders", headers={"traceparent": CALLER, "x-correlation-id": "c-1"}
        )
    finally:
        logger.removeHandler(handler)
    assert resp.status_code == 200
    version, trace_id, span_id, _ = resp.headers["traceparent"].split("-")
    assert (version, trace_id) == ("00", "0af7651916cd43dd8448eb211c80319c")
    assert span_id != "b7ad6b7169203331"  # the server span is a child, not the caller's span
    (server,) = exporter.get_finished_spans()
    assert server.kind is SpanKind.SERVER and server.parent.span_id == 0xB7AD6B7169203331
    assert server.attributes["http.response.status_code"] == 200
    line = orjson.loads(stream.getvalue().splitlines()[0])
    assert line["trace_id"] == trace_id and line["correlation_id"] == "c-1"


def test_gateway_injects_its_span_into_upstream_headers(exporter):
    from tests.unit.test_gateway_proxy import Upstream, gateway

    upstream = Upstream(200)
    try:
        with gateway({"market_data": [upstream.url]}) as client:
            resp = client.get("/api/v1/market-data/symbols", headers={"traceparent": CALLER})
        sent = upstream.hits[0][2]["traceparent"]
        assert sent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
        assert sent.split("-")[2] not in (
            "b7ad6b7169203331",
            resp.headers["traceparent"].split("-")[2],
        )
        # upstream's parent is the gateway's CLIENT span, itself a child of the SERVER span
        spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
        client_span = spans[int(sent.split("-")[2], 16)]
        assert client_span.kind is SpanKind.CLIENT
        assert spans[client_span.parent.span_id].kind is SpanKind.SERVER
    finally:
        upstream.server.shutdown()


def _tracer(sampler: tracing.ConsumedSampler):
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider(sampler=sampler).get_tracer("test")


def test_nothing_is_recorded_until_spans_are_consumed_but_the_trace_still_travels():
    sampler = tracing.ConsumedSampler(1.0)
    tracer = _tracer(sampler)
    unsampled = tracing.extract({"traceparent": CALLER[:-2] + "00"})
    span = tracer.start_span("GET /api/v1/trading/orders", context=unsampled)
    assert not span.is_recording()
    # the caller's trace continues through this hop: a new span id, the same trace id
    assert tracing.traceparent_of(span).split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert span.get_span_context().span_id != 0xB7AD6B7169203331
    assert not tracer.start_span("a new trace").is_recording()
    # A caller that samples its trace keeps it sampled, with its tracestate, through this hop.
    sampled = tracing.extract({"traceparent": CALLER, "tracestate": "vendor=abc"})
    span = tracer.start_span("GET /api/v1/trading/orders", context=sampled)
    assert span.is_recording() and tracing.traceparent_of(span).endswith("-01")
    carrier: dict[str, str] = {}
    tracing.inject(carrier, context=tracing.trace.set_span_in_context(span))
    assert carrier["tracestate"] == "vendor=abc"
    sampler.consumed = True  # an exporter is attached
    assert tracer.start_span("again").is_recording()


def test_a_ratio_samples_new_traces_and_follows_the_callers_decision():
    sampler = tracing.ConsumedSampler(0.0)
    sampler.consumed = True
    tracer = _tracer(sampler)
    assert not tracer.start_span("new trace").is_recording()
    sampled = tracing.extract({"traceparent": CALLER})  # flags 01: the caller recorded it
    assert tracer.start_span("child", context=sampled).is_recording()
    unsampled = tracing.extract({"traceparent": CALLER[:-2] + "00"})
    everything = tracing.ConsumedSampler(1.0)
    everything.consumed = True
    assert not _tracer(everything).start_span("child", context=unsampled).is_recording()


def test_the_sample_ratio_is_read_and_checked_with_the_settings():
    from tests.unit.test_chaos import ENV

    from gekko.config import ConfigError, load_settings

    assert load_settings("users", ENV).trace_sample_ratio == 1.0
    assert (
        load_settings("users", {**ENV, "GEKKO_TRACE_SAMPLE_RATIO": "0.1"}).trace_sample_ratio == 0.1
    )
    with pytest.raises(ConfigError, match="GEKKO_TRACE_SAMPLE_RATIO must be a number from 0 to 1"):
        load_settings("users", {**ENV, "GEKKO_TRACE_SAMPLE_RATIO": "10%"})
