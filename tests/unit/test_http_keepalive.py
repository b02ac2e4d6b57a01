"""frontend.http_edge's keep-alive timer, through a real hypercorn on 127.0.0.1: an idle
connection closes after ``keep_alive_timeout``, each response re-arms the limit, a request
served longer than it is never cut, a shutdown closes an idle connection at once and a busy
one after its response, and one timer task serves every request of a connection."""

from __future__ import annotations

from functools import partial
from typing import Any

import hypercorn.config
import hypercorn.trio
import pytest
import trio

from frontend import http_edge
from tests.unit.asgi_helpers import answer_lifespan

LIMIT = 0.5  # keep_alive_timeout of these servers (but the shutdown test's)
SLOW = 3 * LIMIT  # how long /slow is served


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return await answer_lifespan(receive, send)
    if scope["path"] == "/slow":
        await trio.sleep(SLOW)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok", "more_body": False})


async def _serve(nursery: trio.Nursery, shutdown: trio.Event, limit: float = LIMIT) -> int:
    http_edge.install()
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.keep_alive_timeout = limit
    config.graceful_timeout = 5
    binds = await nursery.start(partial(hypercorn.trio.serve, app, config, shutdown_trigger=shutdown.wait))
    return int(binds[0].rsplit(":", 1)[1])


async def _response(stream: trio.SocketStream, path: str = "/") -> bytes:
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = b""
    while not got.endswith(b"\r\n\r\nok"):
        data = await stream.receive_some(65536)
        assert data, got
        got += data
    assert got.startswith(b"HTTP/1.1 200")
    return got


async def _closed_within(stream: trio.SocketStream, seconds: float) -> float:
    """Seconds until the server closes the connection (fails after ``seconds``)."""
    start = trio.current_time()
    with trio.fail_after(seconds):
        while await stream.receive_some(65536):
            pass
    return trio.current_time() - start


@pytest.fixture
def timer_tasks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many keep-alive timer tasks were started."""
    started: list[int] = []
    original = http_edge.KeepAliveTimer._wait

    async def counting(self: Any, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        started.append(1)
        await original(self, task_status)

    monkeypatch.setattr(http_edge.KeepAliveTimer, "_wait", counting)
    return started


async def test_an_idle_connection_closes_after_the_limit_each_response_rearming_it(timer_tasks: list[int]) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, shutdown)
        quiet = await trio.open_tcp_stream("127.0.0.1", port)
        assert LIMIT * 0.8 <= await _closed_within(quiet, 5 * LIMIT)  # never sent a request

        stream = await trio.open_tcp_stream("127.0.0.1", port)
        for _ in range(5):  # 5 * 0.6 LIMIT apart: kept open past the limit, re-armed each time
            await trio.sleep(0.6 * LIMIT)
            await _response(stream)
        assert LIMIT * 0.8 <= await _closed_within(stream, 5 * LIMIT)
        assert len(timer_tasks) == 2  # one per connection, not one per request
        shutdown.set()


async def test_a_request_served_longer_than_the_limit_is_not_cut() -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, shutdown)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(10 * LIMIT):
            await _response(stream, "/slow")  # SLOW, 3 * LIMIT, of serving
        await _response(stream)  # and still kept alive
        shutdown.set()


async def test_a_shutdown_closes_idle_connections_at_once_and_busy_ones_after_their_response() -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        # A keep-alive far longer than the wait below: the idle close comes from the shutdown.
        port = await _serve(nursery, shutdown, limit=60.0)
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        await _response(idle)
        busy = await trio.open_tcp_stream("127.0.0.1", port)
        await busy.send_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await trio.sleep(0.1)
        shutdown.set()
        await _closed_within(idle, 10.0)
        got = b""
        with trio.fail_after(10 * SLOW):
            while data := await busy.receive_some(65536):
                got += data
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\nok")  # answered, then closed
