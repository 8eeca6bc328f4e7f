"""Runs an aiohttp app on a loopback port: in a thread of its own, for code under test that runs
its own event loop (the CLI) or another process; or in the event loop of a scenario that drives
an adapter against it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestServer

T = TypeVar("T")


def serve_in_thread(app: web.Application) -> tuple[str, Callable[[], None]]:
    """The app's base URL, and what stops it."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the bound port
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    return f"http://127.0.0.1:{port}", stop


def run_against(
    app: web.Application,
    client_for: Callable[[str], Any],
    scenario: Callable[[Any], Awaitable[T]],
) -> T:
    """Serve `app` on loopback, make a client for its base URL, run `scenario(client)` and close
    both: the scenario's result."""

    async def run() -> T:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        client = client_for(str(server.make_url("")).rstrip("/"))
        try:
            return await scenario(client)
        finally:
            await client.close()
            await server.close()

    return asyncio.run(run())
