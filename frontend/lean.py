"""The lean path: the hot object routes served as plain ASGI, in front of the Quart app.

GetObject, HeadObject, PutObject and UploadPart are most of an object store's requests,
and Quart's per-request machinery (request context, signals, before/after hooks, the
session interface, response finalization) costs about as much as the HTTP layer itself.
``LeanApp`` answers those four routes itself, through the same ``app.route`` (parsing,
authentication, authorization, dispatch, error rendering, CORS, metrics, slow-request
log) and the same handlers, with:

- ``LeanRequest``: what the handlers use of a Quart request (method, path, scheme, host,
  headers as Quart builds them, args, content_length, scope) and the same bounded body
  (``app.BoundedBody``, fed by ``app.pump_body``: backpressure, idle limit and
  ``Expect: 100-continue`` exactly as on the Quart path);
- ``send_response``: a handler's ``Response`` sent as ASGI messages as Quart sends it
  (status, headers in order, the body's pieces one message each, inside the body's own
  ``async with``, so a ``PrefetchingBody`` keeps its bounded prefetch and its cleanup).

Anything else — another route, a path or query string S3 refuses (Quart renders the
error), a non-HTTP scope — goes to the Quart app untouched: nothing has been received.
``--no-lean-path`` (``core.config``) serves everything through Quart.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlparse

import trio
from quart.utils import encode_headers
from quart.wrappers.response import DataBody
from werkzeug.datastructures import Headers, MultiDict
from werkzeug.sansio.utils import get_content_length, get_host

from frontend import app as s3app
from frontend.errors import S3Error
from frontend.http_edge import BODY_FOLLOWS

HOT = frozenset(("GetObject", "HeadObject", "PutObject", "UploadPart"))


def request_headers(scope: Any) -> Headers:
    """The request's headers exactly as Quart builds them (``ASGIHTTPConnection``)."""
    headers = Headers()
    headers["Remote-Addr"] = (scope.get("client") or ["<local>"])[0]
    for name, value in scope["headers"]:
        headers.add(name.decode("latin1").title(), value.decode("latin1"))
    if scope["http_version"] < "1.1":
        headers.setdefault("Host", "")  # Quart's SERVER_NAME, which Cairn never sets
    return headers


class LeanRequest:
    """The part of a Quart request that Cairn's handlers use, over an ASGI scope."""

    def __init__(self, scope: Any, headers: Headers, parsed: s3app.Parsed | None = None) -> None:
        self.scope = scope
        self.headers = headers
        self.method: str = scope["method"]
        self.scheme: str = scope["scheme"]
        self.http_version: str = scope["http_version"]
        self.query_string: bytes = scope["query_string"]
        path: str = scope["path"]
        path = path if path[:1] == "/" else urlparse(path).path
        self.path = "/" + path.lstrip("/")  # as werkzeug's Request.path
        self.parsed = parsed
        self.body = s3app.BoundedBody(self.content_length, None)
        self.request_id = ""

    @property
    def content_length(self) -> int | None:
        return get_content_length(self.headers.get("Content-Length"), self.headers.get("Transfer-Encoding"))

    @property
    def args(self) -> MultiDict[str, str]:
        return MultiDict(parse_qsl(self.query_string.decode(), keep_blank_values=True, errors="replace"))

    @property
    def host(self) -> str:
        return get_host(self.scheme, self.headers.get("host"), self.scope.get("server"), None)


async def send_response(send: Any, response: Any) -> None:
    """A handler's Quart ``Response`` as ASGI messages, as Quart's connection sends it."""
    start = {"type": "http.response.start", "status": response.status_code,
             "headers": encode_headers(response.headers)}
    body = response.response
    if type(body) is DataBody:  # bytes in memory: the one piece and the end in one message (same bytes sent)
        token = BODY_FOLLOWS.set(True)  # and the head written with them, in one socket write
        try:
            await send(start)
        finally:
            BODY_FOLLOWS.reset(token)
        await send({"type": "http.response.body", "body": body.data[body.begin : body.end], "more_body": False})
        return
    await send(start)
    async with response.response as body:
        async for data in body:
            await send({"type": "http.response.body", "body": data.encode() if isinstance(data, str) else data,
                        "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def hot(ctx: Any, scope: Any, headers: Headers) -> s3app.Parsed | None:
    """The request's parsed head if the lean path serves it, else None (Quart does)."""
    try:
        parsed = s3app.parse(ctx, scope, scope["method"], headers)
    except S3Error:
        return None  # a path or query string S3 refuses: Quart renders the error
    return parsed if parsed.route.operation in HOT else None


class LeanApp:
    """The ASGI app hypercorn serves: the hot routes here, everything else by ``quart``."""

    def __init__(self, quart: s3app.CairnApp) -> None:
        self.quart = quart
        self.ctx = quart.ctx

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = request_headers(scope)
            parsed = hot(self.ctx, scope, headers)
            if parsed is not None:
                await self.serve(LeanRequest(scope, headers, parsed), receive, send)
                return
        await self.quart(scope, receive, send)

    async def serve(self, request: LeanRequest, receive: Any, send: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s3app.pump_body, nursery, request, receive, self.ctx.limits.body_idle)
            nursery.start_soon(self._answer, nursery, request, send)

    async def _answer(self, nursery: trio.Nursery, request: LeanRequest, send: Any) -> None:
        response = await s3app.route(self.ctx, request)
        await send_response(send, response)
        nursery.cancel_scope.cancel()
