import asyncio
import uuid

import orjson
import pytest

from gekko import events as ev
from gekko import tracing
from gekko.correlation import correlation_id_var


def test_envelope_round_trips_through_stream_fields():
    event = ev.Event(
        event_id=str(uuid.uuid4()),
        type=ev.ORDER_EXECUTED,
        occurred_at="2025-08-02T12:00:00.000000+00:00",
        payload={"order_id": 7, "price": "65000.12"},
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        correlation_id="corr-1",
        producer="trading",
    )
    fields = event.fields()
    assert all(isinstance(v, str) for v in fields.values())
    # Redis hands fields back as bytes.
    raw = {k.encode(): v.encode() for k, v in fields.items()}
    assert ev.decode(raw) == event


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "x", "payload": "{}"},  # no event_id
        {"event_id": "not-a-uuid", "type": "x", "payload": "{}"},
        {"event_id": str(uuid.uuid4()), "type": "x", "payload": "{nope"},
        {"event_id": str(uuid.uuid4()), "type": "x", "payload": "[1]"},
        {"event_id": str(uuid.uuid4()), "type": "", "payload": "{}"},
    ],
)
def test_malformed_entries_are_rejected(fields):
    with pytest.raises(ev.EnvelopeError):
        ev.decode(fields)


def test_new_event_carries_trace_and_correlation():
    tracing.setup_tracing("test")
    token = correlation_id_var.set("corr-42")
    try:
        with tracing.start_span("request") as span:
            event = ev.new_event(ev.USER_REGISTERED, {"user_id": 1}, "users")
            trace_id = f"{span.get_span_context().trace_id:032x}"
    finally:
        correlation_id_var.reset(token)
    assert event.correlation_id == "corr-42"
    assert event.traceparent.split("-")[1] == trace_id
    assert uuid.UUID(event.event_id).version == 4
    assert event.producer == "users"


class FakeRedis:
    def __init__(self) -> None:
        self.acked: list[str] = []
        self.dead: list[dict] = []

    async def xack(self, stream, group, entry_id):
        self.acked.append(entry_id)

    async def xadd(self, stream, fields, **_):
        self.dead.append(fields)


def _consumer(redis, dispatch, **kw):
    return ev.EventConsumer(redis, "g", "c1", ["s"], dispatch, **kw)


def _entry(type_="t", **payload):
    event = ev.Event(str(uuid.uuid4()), type_, "2025-01-01T00:00:00+00:00", payload)
    return event, event.fields()


def test_consumer_acks_only_after_the_handler_succeeds():
    redis = FakeRedis()
    seen = []

    async def dispatch(event):
        seen.append(event.payload["n"])

    event, fields = _entry(n=1)
    asyncio.run(_consumer(redis, dispatch)._handle("s", "1-0", fields))
    assert seen == [1] and redis.acked == ["1-0"]


def test_failed_handler_leaves_entry_pending_then_dead_letters():
    redis = FakeRedis()

    async def dispatch(event):
        raise RuntimeError("boom")

    consumer = _consumer(redis, dispatch, max_attempts=3)
    _, fields = _entry()
    for _ in range(2):
        asyncio.run(consumer._handle("s", "5-0", fields))
        assert redis.acked == []  # still pending: XAUTOCLAIM will redeliver it
    asyncio.run(consumer._handle("s", "5-0", fields))
    assert redis.acked == ["5-0"]
    assert redis.dead[0]["dead.reason"] == "RuntimeError: boom"


def test_malformed_entry_goes_to_dead_letter_without_calling_handler():
    redis = FakeRedis()

    async def dispatch(event):  # pragma: no cover - must not run
        raise AssertionError

    asyncio.run(_consumer(redis, dispatch)._handle("s", "9-0", {"payload": "{}"}))
    assert redis.acked == ["9-0"] and len(redis.dead) == 1


def test_consumer_handler_runs_in_a_consumer_span_child_of_the_event_trace():
    tracing.setup_tracing("test")
    redis = FakeRedis()
    seen = {}

    async def dispatch(event):
        seen["trace"] = tracing.current_trace_id()
        seen["corr"] = correlation_id_var.get()

    trace_id = "0af7651916cd43dd8448eb211c80319c"
    event = ev.Event(
        str(uuid.uuid4()),
        "t",
        "2025-01-01T00:00:00+00:00",
        {},
        traceparent=f"00-{trace_id}-b7ad6b7169203331-01",
        correlation_id="c-9",
    )
    asyncio.run(_consumer(redis, dispatch)._handle("s", "2-0", event.fields()))
    assert seen == {"trace": trace_id, "corr": "c-9"}


def test_dispatcher_ignores_unknown_types():
    calls = []

    async def on_x(event):
        calls.append(event.type)

    dispatch = ev.dispatcher({"x": on_x})
    asyncio.run(dispatch(_entry("x")[0]))
    asyncio.run(dispatch(_entry("y")[0]))
    assert calls == ["x"]


def test_payload_decimals_serialize_as_exact_strings():
    from decimal import Decimal

    event = ev.Event(str(uuid.uuid4()), "t", "", {"p": Decimal("0.10000000")})
    assert orjson.loads(event.fields()["payload"]) == {"p": "0.10000000"}
