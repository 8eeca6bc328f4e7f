"""JSON structured logging: one object per line with ts, level, service, instance, msg."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from gekko.correlation import correlation_id_var
from gekko.tracing import current_trace_id


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso_millis(created: float) -> str:
    """`datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")`, with the
    part up to the second made once per second: a line per request made it a visible cost."""
    second = math.floor(created)
    micros = round((created - second) * 1e6)  # as datetime rounds, half to even
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    return f"{_iso_second(second)}.{micros // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self.service = service
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": iso_millis(record.created),
            "level": record.levelname,
            "service": self.service,
            "instance": self.instance,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        correlation_id = correlation_id_var.get()
        if correlation_id:
            entry["correlation_id"] = correlation_id
        trace_id = current_trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TurnBatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines logged on the event loop are written together at the end of the loop's turn: one
    write for every request a turn finished (each request's access line), not one each. That
    write was a twentieth of the gateway's CPU per request (docs/benchmarks.md). Off the loop
    (startup, other threads) a line is written at once, and a warning or error is written at
    once after the lines before it, so nothing is reordered or held back while something is
    going wrong. `logging.shutdown` (at exit) writes what is pending."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        # The loop a write of the pending lines is scheduled on. A loop stopped before it ran
        # the write is left behind: a line logged on another loop schedules one there.
        self._write_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or record.levelno >= logging.WARNING:
            self._write_pending()
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - as StreamHandler.emit does
            self.handleError(record)
            return
        self._pending.append(line)
        if self._write_on is not loop:
            self._write_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            super().flush()

    def _write_pending(self) -> None:
        self._write_on = None
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            self.stream.write(self.terminator.join(lines) + self.terminator)
        except Exception:  # noqa: BLE001 - reported as StreamHandler reports a failed write
            self.handleError(logging.makeLogRecord({"msg": "%d log lines", "args": (len(lines),)}))


def configure_logging(service: str, instance: str, level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, alembic's) through one JSON handler on stderr."""
    # What JsonFormatter never writes is not gathered either (the logging HOWTO's "Optimization"):
    # the caller's file and line (a walk up the stack per line), thread and process names.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = TurnBatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, instance))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Access logs are off: the metrics middleware counts requests instead.
    logging.getLogger("uvicorn.access").disabled = True
