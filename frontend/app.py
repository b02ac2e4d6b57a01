"""The S3 frontend as a QuartTrio app: request routing, authentication, error rendering.

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

import ipaddress
import logging
import os
import time
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import trio
from quart import Response
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest

from core import wire
from frontend import cors, handlers, iam, metrics
from frontend.budget import OWNER
from frontend.context import Context, read_body
from frontend.errors import S3Error

log = logging.getLogger("frontend")

BODY_BUFFER = 1 << 20
ADMIN_PREFIX = "_cairn"


class BoundedBody(TrioBody):
    """A request body that tells the receiver when there is room for more, and fails with
    RequestTimeout when the client sends nothing for ``Limits.body_idle`` seconds."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, None)
        self._room = trio.Event()
        self.received = 0
        self.abandoned = False

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


class BoundedConnection(TrioASGIHTTPConnection):
    async def handle_messages(self, nursery: trio.Nursery, request: Any, receive: Any) -> None:  # type: ignore[override]
        body = request.body
        while True:
            await body.wait_for_room()
            if body.complete:
                message = await receive()  # the disconnect, whenever it comes
            else:
                with trio.move_on_after(self.app.ctx.limits.body_idle) as idle:
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


class CairnApp(QuartTrio):
    asgi_http_class = BoundedConnection
    request_class = BoundedRequest

    def __init__(self, ctx: Context) -> None:
        super().__init__("cairn-frontend")
        self.ctx = ctx
        self.config.update(MAX_CONTENT_LENGTH=None, BODY_TIMEOUT=None, RESPONSE_TIMEOUT=None, PROVIDE_AUTOMATIC_OPTIONS=False)
        self.register_error_handler(S3Error, self._s3_error)
        self.register_error_handler(Exception, self._internal_error)

    def create_url_adapter(self, request: Any) -> Any:
        # S3 routes come from the raw path (``route``): no werkzeug URL map to match, and
        # no NotFound raised and stored on every request.
        return None if request is not None else super().create_url_adapter(request)

    async def dispatch_request(self, request_context: Any = None) -> Any:
        from quart import request

        return await route(self.ctx, request)

    async def _s3_error(self, exc: S3Error) -> Response:
        from quart import request

        return await app_error_response(exc, request)

    async def _internal_error(self, exc: Exception) -> Response:
        log.exception("internal error")
        return await self._s3_error(S3Error("InternalError"))


async def app_error_response(exc: S3Error, request: Any) -> Response:
    """The S3 error document (no body for HEAD), with the request id."""
    request_id = getattr(request, "request_id", "")
    body = b"" if request.method == "HEAD" else exc.to_xml(request.path, request_id)
    response = Response(body, status=exc.status, content_type="application/xml")
    response.headers["x-amz-request-id"] = request_id
    # An answer given before the body was read needs no "Connection: close" of ours: h11
    # never starts the next request on a connection whose request it has not read to
    # its end, and hypercorn closes that connection once the answer is sent.
    return response


def virtual_host_bucket(host: str, domains: tuple[str, ...]) -> str | None:
    """The bucket named by a virtual-hosted-style Host header, if any."""
    name = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else ""
    for domain in domains:
        suffix = "." + domain.lower()
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


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


def as_s3_error(exc: S3Error | wire.WireError) -> S3Error:
    """The one place where errors met while serving become S3 errors: a raftmeta or blob
    node that did not answer is ServiceUnavailable (retryable), never InternalError."""
    if isinstance(exc, wire.WireError):
        log.warning("internal call failed: %s", exc)
        return S3Error("ServiceUnavailable", "A service this request needs is unavailable. Please retry.")
    return exc


def budget_owner(request: Any, principal: iam.Principal) -> None:
    """Whose share of the chunk-buffer budget this request uses: its user, or for an
    anonymous request its client's address."""
    client = request.scope.get("client") or ("", 0)
    OWNER.set(principal.user if principal.user is not None else f"anonymous@{client[0]}")


def _loopback(client: Any) -> bool:
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except (TypeError, ValueError, IndexError):
        return False


async def route(ctx: Context, request: Any) -> Response:
    request.request_id = os.urandom(8).hex().upper()
    request.operation = "Other"
    started = time.monotonic()
    status = 500
    try:
        response = await _route(ctx, request)
        status = response.status_code
        return response
    except (S3Error, wire.WireError) as exc:
        error = as_s3_error(exc)
        status = error.status
        raise error from None
    finally:
        request.body.abandon()
        took = time.monotonic() - started
        sent = 0
        if status in (200, 206) and request.method == "GET" and request.operation == "GetObject":
            sent = int(response.headers.get("Content-Length", 0) or 0)
        metrics.observe(request.operation, status, took, request.body.received, sent)
        if took > SLOW_REQUEST:
            log.warning("slow request %s %s took %.1fs (request id %s)", request.method,
                        request.scope.get("raw_path", b"")[:200], took, request.request_id)


async def _route(ctx: Context, request: Any) -> Response:
    scope = request.scope
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query_string: bytes = scope.get("query_string", b"")
    bucket, key = split_path(raw_path)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    virtual = virtual_host_bucket(request.headers.get("host", ""), ctx.domains)
    if virtual is not None:  # BUCKET.DOMAIN/KEY: the whole path is the key
        bucket, key = virtual, split_path(b"/" + virtual.encode() + raw_path)[1]
    params = query_params(query_string)
    request.operation = metrics.operation(request.method, bucket, key, params)
    if bucket == ADMIN_PREFIX and key == "health":
        return await handlers.admin(ctx, request, key)
    if request.method == "OPTIONS":  # CORS preflight: never authenticated
        return await cors.preflight(ctx, request, bucket)
    request.auth, request.principal = await iam.authenticate(
        ctx, request.method, raw_path, query_string, headers, "" if bucket == ADMIN_PREFIX else bucket)
    budget_owner(request, request.principal)
    if bucket == ADMIN_PREFIX:  # operator endpoints: admin credentials only
        if not request.principal.admin:
            raise S3Error("AccessDenied")
        if ctx.default_root and not _loopback(request.scope.get("client")):
            raise S3Error("AccessDenied", "Operator endpoints answer only loopback clients while the root "
                          "credentials are the documented defaults: set CAIRN_ROOT_ACCESS_KEY and CAIRN_ROOT_SECRET_KEY.")
        return await handlers.admin(ctx, request, key or "")
    try:
        response = await handlers.dispatch(ctx, request, bucket, key, params)
    except (S3Error, wire.WireError) as exc:
        response = await app_error_response(as_s3_error(exc), request)
    response.headers["x-amz-request-id"] = request.request_id
    await cors.decorate(ctx, request, bucket, response)
    return response
