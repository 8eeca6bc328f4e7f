"""Background event plumbing for a service: its outbox relay and its consumer groups.

Kept on app.state so routes can wake the relay after a commit and the stop hook can shut
everything down in reverse order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fastapi import FastAPI

from gekko.events import EventConsumer, Handler, dispatcher, stream_for
from gekko.outbox import OutboxRelay


def start_relay(app: FastAPI, producer: str) -> OutboxRelay:
    relay = OutboxRelay(
        app.state.pool, app.state.redis, producer, registry=app.state.metrics_registry
    )
    relay.start()
    app.state.relay = relay
    return relay


def start_consumer(
    app: FastAPI, group: str, producers: Iterable[str], handlers: Mapping[str, Handler] | Handler
) -> EventConsumer:
    dispatch = dispatcher(handlers) if isinstance(handlers, Mapping) else handlers
    consumer = EventConsumer(
        app.state.redis,
        group=group,
        name=app.state.settings.instance_id,
        streams=[stream_for(p) for p in producers],
        dispatch=dispatch,
    )
    consumer.start()
    consumers = getattr(app.state, "consumers", None)
    if consumers is None:
        consumers = app.state.consumers = []
    consumers.append(consumer)
    return consumer


async def stop_all(app: FastAPI) -> None:
    for consumer in reversed(getattr(app.state, "consumers", [])):
        await consumer.stop()
    relay = getattr(app.state, "relay", None)
    if relay is not None:
        await relay.stop()


def wake_relay(app: FastAPI) -> None:
    relay = getattr(app.state, "relay", None)
    if relay is not None:
        relay.wake()
