"""frontend.http_edge's coalescing, through a real hypercorn on 127.0.0.1: a response whose
body is in memory (``BODY_FOLLOWS``, as ``lean.send_response`` sends one) goes out in one
socket write, head and body; a streamed body's head is not held for its first piece."""

from __future__ import annotations

from functools import partial
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio
from hypercorn.events import RawData

from frontend import http_edge
from tests.unit.asgi_helpers import answer_lifespan

RELEASE = trio.Event()


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return await answer_lifespan(receive, send)
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    if scope["path"] in ("/small", "/head"):
        token = http_edge.BODY_FOLLOWS.set(True)
        try:
            await send(start)
        finally:
            http_edge.BODY_FOLLOWS.reset(token)
        body = b"hello" if scope["path"] == "/small" else b""
        await send({"type": "http.response.body", "body": body, "more_body": False})
    else:  # streamed: the head now, the body once released
        await send(start)
        await RELEASE.wait()
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _serve(nursery: trio.Nursery, writes: list[bytes], monkeypatch: Any) -> int:
    http_edge.install()
    original = http_edge.GuardedTCPServer.protocol_send

    async def recording(self: Any, event: Any) -> None:
        if isinstance(event, RawData) and event.data:
            writes.append(bytes(event.data))
        await original(self, event)

    monkeypatch.setattr(http_edge.GuardedTCPServer, "protocol_send", recording)
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds = await nursery.start(partial(hypercorn.trio.serve, app, config, shutdown_trigger=trio.sleep_forever))
    return int(binds[0].rsplit(":", 1)[1])


async def _read_until(stream: trio.SocketStream, ending: bytes) -> bytes:
    got = b""
    while not got.endswith(ending):
        data = await stream.receive_some(65536)
        assert data, got
        got += data
    return got


async def test_a_body_in_memory_goes_out_with_its_head_in_one_write(monkeypatch: Any) -> None:
    writes: list[bytes] = []
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, writes, monkeypatch)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            got = await _read_until(stream, b"hello")
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\nhello")
        assert writes == [got]  # one write: head and body
        # kept alive; a bodiless answer (its end): one write too
        await stream.send_all(b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            got = await _read_until(stream, b"\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and writes[1:] == [got]
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_streamed_head_is_not_held_for_its_first_piece(monkeypatch: Any) -> None:
    writes: list[bytes] = []
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, writes, monkeypatch)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /streamed HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            head = await _read_until(stream, b"\r\n\r\n")  # before the body exists
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and writes == [head]
        RELEASE.set()
        with trio.fail_after(5):
            assert await _read_until(stream, b"hello") == b"hello"
        assert writes == [head, b"hello"]
        await stream.aclose()
        nursery.cancel_scope.cancel()
