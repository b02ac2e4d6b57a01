"""The S3 frontend as a QuartTrio app: request parsing, authentication, and the one
place where exceptions become S3 error responses (``error_response``). Which operation a
request is, what it needs and who handles it: ``frontend.routes``.

Quart is used for its ASGI plumbing, with three of its defaults replaced:
- request bodies: Quart buffers every received piece with no backpressure. Our body
  stops reading from the socket while more than ``BODY_BUFFER`` bytes wait, so a slow
  replica slows the client down instead of filling memory;
- routing: S3 paths are not URL routes ('//' and '..' are legal in keys, and Werkzeug
  would merge or redirect them). ``dispatch_request`` parses the raw path itself;
- timeouts: RESPONSE_TIMEOUT would cut a long download short behind a 200; it is off,
  and so are MAX_CONTENT_LENGTH and BODY_TIMEOUT. Instead a body that goes ``Limits.body_idle``
  seconds without a byte fails with RequestTimeout, and every whole-body read has a
  per-operation limit that holds for chunked bodies too (``context.read_body``);
  connection-level limits are in ``frontend.http_edge``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote_to_bytes

import trio
from quart import Response
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest

from core import wire
from frontend import iam, metrics, routes
from frontend.budget import OWNER
from frontend.context import Context, read_body, version_param
from frontend.errors import SERVICE_UNAVAILABLE, S3Error, from_wire
from frontend.names import check_key, virtual_host_bucket
from frontend.s3 import cors
from raftmeta.client import ROUND_TRIPS

log = logging.getLogger("frontend")

BODY_BUFFER = 1 << 20


class BoundedBody(TrioBody):
    """A request body that tells the receiver when there is room for more, and fails with
    RequestTimeout when the client sends nothing for ``Limits.body_idle`` seconds."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, None)
        self._room = trio.Event()
        self.received = 0
        self.abandoned = False
        self.wanted = trio.Event()  # a handler began reading (``Expect: 100-continue`` waits for it)

    def append(self, data: bytes) -> None:
        self.received += len(data)
        if not self.abandoned:
            super().append(data)

    @property
    def complete(self) -> bool:
        return self._complete.is_set()

    def time_out(self) -> None:
        """The client stopped sending: whoever reads the body gets RequestTimeout."""
        self._must_raise = S3Error("RequestTimeout")
        self.set_complete()

    def abandon(self) -> None:
        """The handler is done (it answered, maybe before reading everything): whatever
        else arrives is dropped, and the receiver never waits for room again. Without
        this an early answer deadlocks: hypercorn delivers the end of the response's
        stream through the same full queue that nobody would drain."""
        self.abandoned = True
        self._data.clear()
        self._room.set()

    async def __anext__(self) -> bytes:
        self.wanted.set()
        try:
            data = await super().__anext__()
        except StopAsyncIteration:
            if self._must_raise is not None:  # timed out while the reader waited: not an end
                raise self._must_raise from None
            raise
        self._room.set()
        return data

    async def wait_for_room(self) -> None:
        while len(self._data) >= BODY_BUFFER and not self._complete.is_set() and not self.abandoned:
            self._room = trio.Event()
            await self._room.wait()


class BoundedRequest(TrioRequest):
    body_class = BoundedBody

    async def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False) -> Any:
        # Quart's get_data awaits the whole body, which a bounded body never delivers past
        # BODY_BUFFER: every whole-body read goes through read_body and its limit.
        data = await read_body(self, BODY_BUFFER)
        return data.decode() if as_text else data


async def pump_body(nursery: trio.Nursery, request: Any, receive: Any, body_idle: float) -> None:
    """Feed the request's ``BoundedBody`` from ASGI ``receive`` (room permitting, with the
    idle limit), until the disconnect; then end the request's nursery. Used by the Quart
    connection and by the lean path (``frontend.lean``) alike."""
    body = request.body
    if request.headers.get("expect", "").strip().lower() == "100-continue":
        # The first receive() sends the client its "100 Continue" (http_edge): only once
        # a handler reads the body, so a refused request is answered before it is sent.
        await body.wanted.wait()
    while True:
        await body.wait_for_room()
        if body.complete:
            message = await receive()  # the disconnect, whenever it comes
        else:
            with trio.move_on_after(body_idle) as idle:
                message = await receive()
            if idle.cancelled_caught:
                body.time_out()
                continue
        if message["type"] == "http.request":
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                body.set_complete()
        elif message["type"] == "http.disconnect":
            break
    nursery.cancel_scope.cancel()


class BoundedConnection(TrioASGIHTTPConnection):
    async def handle_messages(self, nursery: trio.Nursery, request: Any, receive: Any) -> None:  # type: ignore[override]
        await pump_body(nursery, request, receive, self.app.ctx.limits.body_idle)


class CairnApp(QuartTrio):
    asgi_http_class = BoundedConnection
    request_class = BoundedRequest

    def __init__(self, ctx: Context) -> None:
        super().__init__("cairn-frontend")
        self.ctx = ctx
        self.config.update(MAX_CONTENT_LENGTH=None, BODY_TIMEOUT=None, RESPONSE_TIMEOUT=None, PROVIDE_AUTOMATIC_OPTIONS=False)
        # Every exception met while serving is answered in ``route``; this hook is only
        # for one raised outside it (Quart's own machinery), rendered the same way.
        self.register_error_handler(Exception, self._unhandled)

    def create_url_adapter(self, request: Any) -> Any:
        # S3 routes come from the raw path (``route``): no werkzeug URL map to match, and
        # no NotFound raised and stored on every request.
        return None if request is not None else super().create_url_adapter(request)

    async def dispatch_request(self, request_context: Any = None) -> Any:
        from quart import request

        return await route(self.ctx, request)

    async def _unhandled(self, exc: Exception) -> Response:
        from quart import request

        return error_response(exc, request)


def as_s3_error(exc: BaseException) -> S3Error:
    """What an exception met while serving says to the client: an S3 error as raised; a
    raftmeta or blob node that did not answer is ServiceUnavailable (retryable), never
    InternalError; anything else is a bug (logged) and InternalError."""
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, wire.WireError):
        return from_wire(exc, SERVICE_UNAVAILABLE)
    log.error("internal error", exc_info=exc)
    return S3Error("InternalError")


def error_response(exc: BaseException, request: Any) -> Response:
    """The one place where exceptions become responses: the S3 error document (no body
    for HEAD), with the request id."""
    error = as_s3_error(exc)
    request_id = getattr(request, "request_id", "")
    body = b"" if request.method == "HEAD" else error.to_xml(request.path, request_id)
    response = Response(body, status=error.status, content_type="application/xml")
    response.headers["x-amz-request-id"] = request_id
    for name, value in error.headers.items():
        response.headers[name] = value
    # An answer given before the body was read needs no "Connection: close" of ours: h11
    # never starts the next request on a connection whose request it has not read to
    # its end, and hypercorn closes that connection once the answer is sent.
    return response


def split_path(raw_path: bytes) -> tuple[str, str | None]:
    """'/bucket/some/key' -> ('bucket', 'some/key'); '/' -> ('', None); keys kept exact."""
    path = raw_path.split(b"?", 1)[0]
    if not path.startswith(b"/"):
        raise S3Error("InvalidRequest", "path must start with /")
    rest = path[1:]
    bucket, sep, key = rest.partition(b"/")
    try:
        bucket_name = unquote_to_bytes(bucket).decode("utf-8")
        key_name = unquote_to_bytes(key).decode("utf-8") if sep else None
    except UnicodeDecodeError:
        raise S3Error("InvalidURI") from None
    if key_name == "":
        key_name = None
    return bucket_name, key_name


def query_params(raw: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise S3Error("InvalidArgument", "Query string is not valid UTF-8") from None


SLOW_REQUEST = 5.0


def budget_owner(request: Any, principal: iam.Principal) -> None:
    """Whose share of the chunk-buffer budget this request uses: its user, or for an
    anonymous request its client's address."""
    client = request.scope.get("client") or ("", 0)
    OWNER.set(principal.user if principal.user is not None else f"anonymous@{client[0]}")


async def route(ctx: Context, request: Any) -> Response:
    request.request_id = os.urandom(8).hex().upper()
    request.operation = "Other"
    request.cors_bucket = None  # set once an S3 operation is dispatched: its errors get CORS headers too
    started = time.monotonic()
    status = 500
    round_trips = [0]
    ROUND_TRIPS.set(round_trips)  # this request's task and the tasks it starts count here
    try:
        try:
            response = await _route(ctx, request)
        except Exception as exc:
            response = error_response(exc, request)
            if request.cors_bucket is not None and isinstance(exc, (S3Error, wire.WireError)):
                await cors.decorate(ctx, request, request.cors_bucket, response)
        status = response.status_code
        return response
    finally:
        request.body.abandon()
        took = time.monotonic() - started
        sent = 0
        if status in (200, 206) and request.method == "GET" and request.operation == "GetObject":
            sent = int(response.headers.get("Content-Length", 0) or 0)
        metrics.observe(request.operation, status, took, request.body.received, sent, round_trips[0])
        if took > SLOW_REQUEST:
            log.warning("slow request %s %s took %.1fs (request id %s)", request.method,
                        request.scope.get("raw_path", b"")[:200], took, request.request_id)


class Parsed(NamedTuple):
    """What a request's head says before any handler runs: its bucket, key, query
    parameters and route (``routes.match``)."""

    raw_path: bytes
    query_string: bytes
    bucket: str
    key: str | None
    params: dict[str, str]
    route: routes.Route


def parse(ctx: Context, scope: Any, method: str, headers: Any) -> Parsed:
    """The request's bucket, key, parameters and route (S3Error if the path or the query
    string is not one S3 takes)."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query_string: bytes = scope.get("query_string", b"")
    bucket, key = split_path(raw_path)
    virtual = virtual_host_bucket(headers.get("host", ""), ctx.domains)
    if virtual is not None:  # BUCKET.DOMAIN/KEY: the whole path is the key
        bucket, key = virtual, split_path(b"/" + virtual.encode() + raw_path)[1]
    params = query_params(query_string)
    return Parsed(raw_path, query_string, bucket, key, params, routes.match(method, bucket, key, params, headers))


def _prefetch(operation: str, bucket: str, key: str | None, params: dict[str, str]) -> dict[str, Any] | None:
    """The read a request's handler will make first, to make behind the key look-up's
    barrier (``iam.lookup_key``): for GetObject and HeadObject the version it serves
    (``object_as``, with the caller's ACL check), for UploadPart and UploadPartCopy the
    upload (``upload``); None for any other request, or one that fails before it reads."""
    if not bucket or key is None:
        return None
    if operation in ("UploadPart", "UploadPartCopy"):
        return {"q": "upload", "upload_id": params["uploadId"], "bucket": bucket, "key": key}
    if operation not in ("GetObject", "HeadObject"):
        return None
    try:
        check_key(key)
        vid = version_param(params)
    except S3Error:
        return None
    return {"q": "object_as", "bucket": bucket, "key": key, "vid": vid}


def deferrable(ctx: Context, operation: str, headers: Any) -> bool:
    """Whether a request's authorization may ride in its commit (``iam.authenticate``'s
    ``defer``): a PutObject whose declared body fits in its manifest, so nothing of it
    reaches a blob node before the state machine has checked the caller, and that asks
    for nothing read before the commit (an object lock, an expected bucket owner). The
    handler settles the authorization first if the body turns out otherwise."""
    if operation != "PutObject" or "x-amz-expected-bucket-owner" in headers:
        return False
    declared = headers.get("x-amz-decoded-content-length") or headers.get("content-length")
    if declared is None or not declared.isdigit() or int(declared) > ctx.data.settings.inline_max:
        return False
    return not any(name.lower().startswith("x-amz-object-lock-") for name in headers.keys())


async def _route(ctx: Context, request: Any) -> Response:
    scope = request.scope
    parsed = getattr(request, "parsed", None) or parse(ctx, scope, request.method, request.headers)
    raw_path, query_string, bucket, key, params, route = parsed
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    request.operation = route.operation
    if route.need == routes.OPEN:  # health, CORS preflight: never authenticated
        return await route.handler(ctx, request, bucket, key, params)
    operator = routes.level(bucket, key) == routes.OPERATOR
    request.auth, request.principal = await iam.authenticate(
        ctx, request.method, raw_path, query_string, headers, "" if operator else bucket,
        None if operator else _prefetch(route.operation, bucket, key, params),
        not operator and deferrable(ctx, route.operation, request.headers))
    budget_owner(request, request.principal)
    if operator:
        return await routes.dispatch(ctx, request, route, bucket, key, params)
    request.cors_bucket = bucket
    response = await routes.dispatch(ctx, request, route, bucket, key, params)
    response.headers["x-amz-request-id"] = request.request_id
    await cors.decorate(ctx, request, bucket, response)
    return response
