"""The lean path (``frontend.lean``): its request adapter matches Quart's request, it
decides from the route table which requests it serves, leaves the rest to Quart
untouched, and sends a handler's Response as Quart would."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
from quart import Response

from core import config
from frontend import app as s3app
from frontend import lean
from frontend.context import Limits


def scope(method: str = "GET", path: str = "/b/k", query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
          raw_path: bytes | None = None, http_version: str = "1.1") -> dict[str, Any]:
    return {"type": "http", "method": method, "scheme": "http", "path": path, "raw_path": raw_path or path.encode(),
            "query_string": query, "root_path": "", "http_version": http_version, "client": ("127.0.0.1", 5555),
            "server": ("127.0.0.1", 9000),
            "headers": headers if headers is not None else [(b"host", b"127.0.0.1:9000"), (b"content-length", b"5"),
                                                            (b"x-amz-meta-Colour", b"bl\xc3\xbce"), (b"x-dup", b"1"),
                                                            (b"X-Dup", b"2")]}


CTX = SimpleNamespace(domains=("s3.example.com",), limits=Limits())


def quart_request(s: dict[str, Any]) -> Any:
    app = s3app.CairnApp(CTX)  # type: ignore[arg-type]
    return app.asgi_http_class(app, s)._create_request_from_scope(lambda m: None)


@pytest.mark.parametrize("s", [
    scope(), scope("PUT", "/b/a%2Fb", b"partNumber=1&uploadId=u&x=%20", raw_path=b"/b/a%2Fb"),
    scope(headers=[]), scope(http_version="1.0", headers=[(b"content-length", b"nope")]),
    scope(headers=[(b"host", b"b.s3.example.com"), (b"transfer-encoding", b"chunked")]),
])
def test_adapter_matches_quart_request(s: dict[str, Any]) -> None:
    theirs = quart_request(s)
    ours = lean.LeanRequest(s, lean.request_headers(s))
    assert list(ours.headers.items()) == list(theirs.headers.items())
    for name in ("method", "scheme", "path", "query_string", "http_version", "content_length", "host", "scope"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.args == theirs.args
    assert type(ours.body) is type(theirs.body)
    assert ours.body._must_raise is None and not ours.body.complete


@pytest.mark.parametrize(("method", "path", "query", "headers", "operation"), [
    ("GET", "/b/k", b"", [], "GetObject"),
    ("HEAD", "/b/k", b"versionId=v", [], "HeadObject"),
    ("PUT", "/b/k", b"", [], "PutObject"),
    ("PUT", "/b/k", b"partNumber=2&uploadId=u", [], "UploadPart"),
    ("GET", "/k", b"", [(b"host", b"b.s3.example.com")], "GetObject"),  # virtual-hosted
    ("PUT", "/b/k", b"partNumber=2&uploadId=u", [(b"x-amz-copy-source", b"/b/o")], None),  # UploadPartCopy
    ("PUT", "/b/k", b"", [(b"x-amz-copy-source", b"/b/o")], None),  # CopyObject
    ("GET", "/b/k", b"tagging", [], None),
    ("GET", "/b/k", b"uploadId=u", [], None),  # ListParts
    ("DELETE", "/b/k", b"", [], None),
    ("OPTIONS", "/b/k", b"", [], None),
    ("GET", "/b", b"", [], None),
    ("GET", "/_cairn/health", b"", [], None),
    ("POST", "/b/k", b"uploads", [], None),
    ("GET", "/b/%ff", b"", [], None),  # InvalidURI: Quart renders it
    ("GET", "/b/k", b"x=%ff", [], None),  # a query string that is not UTF-8
])
def test_which_requests_are_hot(method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
                                operation: str | None) -> None:
    s = scope(method, path, query, headers)
    parsed = lean.hot(CTX, s, lean.request_headers(s))
    assert (parsed.route.operation if parsed else None) == operation


class FakeQuart:
    def __init__(self) -> None:
        self.ctx = CTX
        self.calls: list[tuple[Any, Any, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append((scope, receive, send))


async def test_cold_and_other_scopes_fall_through_untouched() -> None:
    quart = FakeQuart()
    app = lean.LeanApp(quart)  # type: ignore[arg-type]

    async def receive() -> dict[str, Any]:
        raise AssertionError("the lean path must not read a body it does not serve")

    async def send(message: Any) -> None:
        raise AssertionError("the lean path must not answer a request it does not serve")

    for s in (scope("GET", "/b/k", b"tagging"), {"type": "lifespan"}, scope("GET", "/b/%ff")):
        await app(s, receive, send)
        assert quart.calls[-1] == (s, receive, send)
    assert len(quart.calls) == 3


class Streamed:
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.closed = False

    def __aiter__(self) -> Streamed:
        return self

    async def __anext__(self) -> bytes:
        if not self.pieces:
            raise StopAsyncIteration
        return self.pieces.pop(0)

    async def aclose(self) -> None:
        self.closed = True


async def quart_messages(response: Response) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    app = s3app.CairnApp(CTX)  # type: ignore[arg-type]
    await app.asgi_http_class(app, scope())._send_response(send, response)
    return sent


async def lean_messages(response: Response) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await lean.send_response(send, response)
    return sent


def make(kind: str) -> Response:
    if kind == "bytes":
        response = Response(b"hello", status=206, headers={"ETag": '"e"', "x-amz-meta-a": "b\u00fc"})
    elif kind == "empty":
        response = Response(b"", status=304)
    else:
        response = Response(Streamed([b"a", b"bc", b"def"]), status=200)
    response.headers["Content-Length"] = "6"
    return response


def merged(messages: list[Any]) -> list[Any]:
    """The messages as hypercorn acts on them: body pieces joined, empty ones dropped."""
    start, *rest = messages
    return [start, b"".join(m["body"] for m in rest), rest[-1]["more_body"]]


@pytest.mark.parametrize("kind", ["bytes", "empty", "streamed"])
async def test_response_sent_as_quart_sends_it(kind: str) -> None:
    ours, theirs = await lean_messages(make(kind)), await quart_messages(make(kind))
    assert merged(ours) == merged(theirs)
    if kind == "streamed":
        assert ours == theirs  # a streamed body: one message per piece, as Quart
    else:
        assert len(ours) == 2  # bytes: one body message that ends the response


async def test_streamed_body_is_closed() -> None:
    body = Streamed([b"a", b"b"])
    await lean_messages(Response(body))
    assert body.closed


async def test_hot_request_served_with_bounded_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hot PUT is answered by ``app.route`` with the adapter, its body fed as Quart's is."""
    seen: dict[str, Any] = {}

    async def route(ctx: Any, request: Any) -> Response:
        seen["request"] = request
        seen["body"] = b"".join([piece async for piece in request.body])
        return Response(b"", status=200, headers={"ETag": '"x"'})

    monkeypatch.setattr(s3app, "route", route)
    quart = FakeQuart()
    app = lean.LeanApp(quart)  # type: ignore[arg-type]
    incoming = [{"type": "http.request", "body": b"hel", "more_body": True},
                {"type": "http.request", "body": b"lo", "more_body": False}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope("PUT"), receive, send)
    assert not quart.calls
    assert seen["body"] == b"hello" and seen["request"].parsed.route.operation == "PutObject"
    assert sent[0]["status"] == 200 and (b"etag", b'"x"') in sent[0]["headers"]
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_CLUSTER_SECRET", "s")
    argv = ["--listen", "127.0.0.1:1", "--meta", "127.0.0.1:2"]
    assert config.parse_role("frontend", argv).lean_path is True
    assert config.parse_role("frontend", [*argv, "--no-lean-path"]).lean_path is False
