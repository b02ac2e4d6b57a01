"""The HTTP edge: what Cairn changes in hypercorn (pinned in pyproject.toml, checked here)
so that no connection can hurt the process or hold its resources unbounded.

- One connection's failure stays in that connection. hypercorn (0.18) runs every
  connection's handler in the server's nursery, so an exception escaping one (e.g.
  ``trio.BusyResourceError`` when its reader answers a truncated body while the app's
  close holds the socket's send side) cancelled the whole server: a single
  unauthenticated request killed the frontend. ``GuardedTCPServer.run`` logs and drops
  anything a connection raises; sends that race a close count as a closed connection.
- At most ``--max-connections-per-client`` (512) open connections per client address.
- Time limits per connection (``context.Limits``): request headers must arrive within
  ``header`` seconds of their first byte; a peer that does not take a response slice within ``send``
  is cut off (its buffers go back to the budget); idle keep-alive connections close after
  ``KEEP_ALIVE``. Request bodies have their own idle limit (``frontend.app``).
- A connection's close is never lost to a cancellation (``protocol_send``: a response
  with ``Connection: close`` used to leave its connection open for good).
- The app's body queue never blocks a finished app (``_never_block_on_a_finished_app``).
- ``Expect: 100-continue`` is answered when the app first reads the body, not when the
  head arrives (``_continue_when_the_body_is_read``): a denied upload gets its 403 unsent.
- Larger socket reads (``MAX_RECV``).
- One keep-alive timer task per connection, not one per request (``KeepAliveTimer``).
- A response whose body is already in memory goes out in one socket write, head and
  body together (``_coalesce_head_with_body``), not two.
"""

from __future__ import annotations

import contextvars
import logging
import math
from http import HTTPStatus
from importlib.metadata import version
from typing import Any

import h11
import hypercorn.trio.run as hypercorn_run
import hypercorn.trio.tcp_server as hypercorn_tcp
import trio
from hypercorn.events import Closed, RawData, Updated

from frontend.context import Limits

log = logging.getLogger("frontend")

# The versions whose internals these patches were written against (pyproject.toml pins them).
# frontend.app's body classes use Quart's and quart-trio's internals (``Body._data`` ...).
PINNED = {"hypercorn": "0.18.0", "quart": "0.22.0", "quart-trio": "0.12.0"}

KEEP_ALIVE = 75.0  # seconds an idle connection is kept between requests
# hypercorn reads the socket 64 KiB at a time, which costs CPU per byte on large
# uploads. Each read may be buffered several times per connection (h11, hypercorn's
# queue, the body) while the app is busy, so bigger is not free: 256 KiB measured best
# here (2 GiB PUT 95 -> 123 MB/s against 1 MiB reads; 10 parallel parts 184 -> 144 MiB RSS).
MAX_RECV = 256 * 1024
# A close drains what the client still sends (see _lingering_close): this long, this much.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024




_DEFAULTS = Limits()  # for a hypercorn Config that ``configure`` did not set
_OPEN: dict[str, int] = {}  # client address -> its open connections


def _peer(stream: Any) -> str:
    try:
        sock = getattr(stream, "socket", None) or stream.transport_stream.socket
        return str(sock.getpeername()[0])
    except (AttributeError, OSError, IndexError):
        return ""


class KeepAliveTimer:
    """hypercorn's keep-alive timer (its ``idle_task``) as one task per connection.

    hypercorn's ``TrioSingleTask`` cancels the timer's task when a request begins and
    starts a new one when its response ends: a task start per request, ~8% of the
    frontend's CPU for a 4 KiB GET. Here one task waits for the connection's whole life
    and a request only moves its deadline: to never while it is served, to
    ``keep_alive_timeout`` from the end of its response after. What it does when it
    fires is hypercorn's: an idle connection closes after ``keep_alive_timeout``, or at
    once when the server shuts down (``context.terminated``), never mid-request."""

    def __init__(self, server: GuardedTCPServer) -> None:
        self._server = server
        self._task: trio.CancelScope | None = None  # the waiting task's; cancelled by stop()
        self._timer = trio.CancelScope()  # its deadline is the idle limit
        self._idle = False
        self._became_idle = trio.Event()

    async def restart(self, task_group: Any, action: Any = None) -> None:
        """Idle from now (hypercorn's name and arguments; ``action`` is always its own
        ``_idle_timeout``, which ``_wait`` does)."""
        self._idle = True
        self._became_idle.set()
        self._timer.deadline = trio.current_time() + self._server.config.keep_alive_timeout
        if self._task is None:
            self._task = await task_group._nursery.start(self._wait)

    def busy(self) -> None:
        """A request is being served: no idle limit until its response ends."""
        self._idle = False
        self._timer.deadline = math.inf

    async def stop(self) -> None:
        """Nothing more will be read: the timer ends, and closes nothing."""
        if self._task is not None:
            self._task.cancel()

    async def _wait(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as task:
            task_status.started(task)
            with self._timer:
                await self._server.context.terminated.wait()
                while not self._idle:  # shutting down: the request being served ends first
                    self._became_idle = trio.Event()
                    await self._became_idle.wait()
            with trio.CancelScope(shield=True):
                await self._server._initiate_server_close()


class GuardedTCPServer(hypercorn_tcp.TCPServer):
    """hypercorn's connection handler, with its failures contained and its time bounded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_task = KeepAliveTimer(self)  # type: ignore[assignment]

    async def run(self) -> None:
        client = _peer(self.stream)
        per_client = getattr(self.config, "cairn_max_connections_per_client", _DEFAULTS.connections_per_client)
        if _OPEN.get(client, 0) >= per_client:
            # Over its share: closed before a byte is read, so one address (a slowloris,
            # a runaway pool) cannot take every descriptor the other clients need.
            log.info("connection from %s refused: it already has %d open", client, per_client)
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            return
        _OPEN[client] = _OPEN.get(client, 0) + 1
        try:
            await super().run()
        except* Exception as group:  # trio.Cancelled (a BaseException) still propagates
            log.info("connection ended by an error: %r", group.exceptions[0])
            try:
                await self.stream.aclose()
            except Exception:  # noqa: S110 (already closed or broken: nothing else to do)
                pass
        finally:
            left = _OPEN.pop(client) - 1
            if left:
                _OPEN[client] = left

    async def protocol_send(self, event: Any) -> None:
        if isinstance(event, Closed):
            # Shielded: the close often runs in the app's task, which the app's own
            # disconnect handling may be cancelling right then; cancelled at the close's
            # first checkpoint, the socket was never closed and the client waited forever.
            with trio.CancelScope(shield=True):
                await self._lingering_close()
                await self.protocol.handle(Closed())
            return
        if isinstance(event, Updated):
            if event.idle:
                await self.idle_task.restart(self._task_group)
            else:
                self.idle_task.busy()
            return
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        gone = False
        async with self.send_lock:
            with trio.CancelScope(shield=True):
                limit = getattr(self.config, "cairn_send_timeout", _DEFAULTS.send)
                with trio.move_on_after(limit) as timer:
                    try:
                        await self.stream.send_all(event.data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                        # Busy: the connection's close holds the send side (it is going away).
                        gone = True
                if timer.cancelled_caught:
                    log.info("peer took no response bytes for %.0fs: connection closed", limit)
                    gone = True
                    await self.stream.aclose()
        if gone:
            await self.protocol.handle(Closed())

    async def _lingering_close(self) -> None:
        """hypercorn's close (send EOF, then close), with what the client still sends read
        and dropped first, for at most LINGER seconds and bytes: closing a socket with
        unread bytes makes the kernel send RST, and the client, still sending the body
        of a request refused early (a malformed Content-Length: 400), lost the response
        it had been sent. When another task is reading (the app closed), no draining."""
        try:
            await self.stream.send_eof()
        except (trio.BrokenResourceError, AttributeError, trio.BusyResourceError, trio.ClosedResourceError):
            pass
        else:
            left = LINGER_BYTES
            with trio.move_on_after(LINGER_SECONDS):
                try:
                    while left > 0:
                        data = await self.stream.receive_some(MAX_RECV)
                        if not data:
                            break
                        left -= len(data)
                except (trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError):
                    pass
        await self.stream.aclose()

    def _partial_headers(self) -> bool:
        """Bytes of a request's head have arrived, and not all of it yet (HTTP/1.1)."""
        connection = getattr(getattr(self.protocol, "protocol", None), "connection", None)
        if not isinstance(connection, h11.Connection):
            return False
        # their_state first: trailing_data copies h11's buffer, and during a body it need not
        return connection.their_state is h11.IDLE and len(connection.trailing_data[0]) > 0

    async def _read_data(self) -> None:
        started: float | None = None  # when the head of the request now arriving began
        while True:
            if self._partial_headers():
                started = trio.current_time() if started is None else started
                limit = getattr(self.config, "cairn_header_timeout", _DEFAULTS.header)
                timeout = max(0.0, started + limit - trio.current_time())
            else:
                started = None
                timeout = self.config.read_timeout or math.inf
            try:
                with trio.fail_after(timeout):
                    data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        # Nothing more will be read: the keep-alive timer must not hold the connection
        # (and its descriptor) open until it expires, as it did after every client close.
        await self.idle_task.stop()
        await self.protocol.handle(Closed())


def _never_block_on_a_finished_app() -> None:
    """hypercorn bug (0.18): the connection's reader hands request-body messages to the
    app through a small queue. When the app answers early (an error before the body was
    read) and returns, nobody drains that queue: the reader blocks on it forever, and so
    does the close that would follow, leaving the client stuck sending its body until its
    own timeout. Here, once the app has returned, messages for it are dropped instead."""
    from hypercorn.trio import task_group

    original = task_group.TaskGroup.spawn_app
    if getattr(original, "_cairn_patched", False):
        return

    async def spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
        finished = trio.Event()

        async def app_send(message: Any) -> None:
            if message is None:
                finished.set()
            await send(message)

        put = await original(self, app, config, scope, app_send)
        channel = put.__self__

        async def app_put(message: Any) -> None:
            while not finished.is_set():
                try:
                    channel.send_nowait(message)
                    return
                except trio.WouldBlock:
                    with trio.move_on_after(0.05):
                        await channel.send(message)
                        return
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

        return app_put

    spawn_app._cairn_patched = True  # type: ignore[attr-defined]
    task_group.TaskGroup.spawn_app = spawn_app


# Set (in the app's task) while it sends an ``http.response.start`` whose body follows at
# once, from memory (``lean.send_response``): the ASGI messages stay exactly Quart's.
BODY_FOLLOWS: contextvars.ContextVar[bool] = contextvars.ContextVar("cairn_body_follows", default=False)
COALESCE_MAX = 256 * 1024  # a larger body is not copied to join its head: two writes, as before


def _coalesce_head_with_body() -> None:
    """hypercorn writes a response's head the moment the app sends ``http.response.start``,
    and its body in another write: two send syscalls for a 4 KiB GET (~18% of its CPU).
    A start sent with ``BODY_FOLLOWS`` set (its sender promises the body next, without waiting on
    anything) has its encoded head held, and written with whatever the connection sends
    next (the body, or the end of a bodiless answer), in one ``send_all``: same bytes,
    same send timeout and backpressure. Unmarked responses (streamed bodies) are not held."""
    from hypercorn.protocol import h11 as hypercorn_h11
    from hypercorn.protocol.events import StreamClosed
    from hypercorn.protocol.http_stream import HTTPStream

    protocol_class = hypercorn_h11.H11Protocol
    if hasattr(protocol_class, "_cairn_hold"):  # installed (_reason_phrases wraps its _send_h11_event)
        return
    protocol_class._cairn_hold = False  # the next final head is to be held
    protocol_class._cairn_head = b""  # a held head, not written yet

    original_app_send = HTTPStream.app_send

    async def app_send(self: Any, message: Any) -> None:
        if BODY_FOLLOWS.get() and message is not None and message.get("type") == "http.response.start":
            protocol = getattr(self.send, "__self__", None)
            if isinstance(protocol, protocol_class):
                protocol._cairn_hold = True
        await original_app_send(self, message)

    async def _send_h11_event(self: Any, event: Any) -> None:  # hypercorn's, holding a marked head
        held, self._cairn_head = self._cairn_head, b""
        try:
            data = self.connection.send(event) or b""
        except h11.LocalProtocolError:
            if held:
                await self.send(RawData(data=held))
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if self._cairn_hold and isinstance(event, h11.Response):
            self._cairn_hold = False
            self._cairn_head = held + data
            return
        if held and len(data) > COALESCE_MAX:
            await self.send(RawData(data=held))
            held = b""
        await self.send(RawData(data=held + data if held else data))

    original_stream_send = protocol_class.stream_send

    async def stream_send(self: Any, event: Any) -> None:
        if self._cairn_head and isinstance(event, StreamClosed):  # ended without its body: head as before
            held, self._cairn_head = self._cairn_head, b""
            await self.send(RawData(data=held))
        await original_stream_send(self, event)

    HTTPStream.app_send = app_send  # type: ignore[method-assign]
    protocol_class._send_h11_event = _send_h11_event  # type: ignore[method-assign]
    protocol_class.stream_send = stream_send  # type: ignore[method-assign]


def _reason_phrases() -> None:
    """hypercorn sends every status line with an empty reason phrase ("HTTP/1.1 400 \\r\\n").
    botocore, waiting for 100 Continue, recognizes an early final answer only by a
    three-part status line: a 400 before the 100 (a malformed Content-Length) was taken
    for garbage and the request died as "connection closed". Here a status line carries
    its standard phrase, as S3's do."""
    from hypercorn.protocol import h11 as hypercorn_h11

    original = hypercorn_h11.H11Protocol._send_h11_event
    if getattr(original, "_cairn_patched", False):
        return

    async def _send_h11_event(self: Any, event: Any) -> None:
        if isinstance(event, (h11.Response, h11.InformationalResponse)) and not event.reason:
            try:
                phrase = HTTPStatus(event.status_code).phrase.encode()
            except ValueError:
                phrase = b""
            if phrase:
                event = type(event)(status_code=event.status_code, headers=event.headers, reason=phrase,
                                    http_version=event.http_version)
        await original(self, event)

    _send_h11_event._cairn_patched = True  # type: ignore[attr-defined]
    hypercorn_h11.H11Protocol._send_h11_event = _send_h11_event  # type: ignore[method-assign]


class _DeferredContinue(h11.Connection):
    """hypercorn's h11 connection, with the ``100 Continue`` left to the app (below)."""

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        return False  # hypercorn sends its 100 the moment this says True: never on its own

    def send(self, event: Any) -> bytes | None:  # type: ignore[override]
        waiting = self.client_is_waiting_for_100_continue
        if isinstance(event, h11.InformationalResponse) and event.status_code == 100 and not waiting:
            return b""  # the client went ahead with its body, or was answered: no 100 now
        if isinstance(event, h11.Response) and waiting and b"close" not in _connection_tokens(event):
            # Answered before the client was told to send its body: it may send it or not,
            # so nothing more can be read from this connection. Say so (RFC 9110 10.1.1);
            # h11 then ends the connection after this answer, as it would have anyway.
            event = h11.Response(status_code=event.status_code, reason=event.reason, http_version=event.http_version,
                                 headers=[*event.headers, (b"connection", b"close")])
        return super().send(event)


def _connection_tokens(event: Any) -> set[bytes]:
    return {token.strip().lower() for name, value in event.headers if name.lower() == b"connection"
            for token in value.split(b",")}


def _expects_continue(scope: Any) -> bool:
    return any(name.lower() == b"expect" and value.strip().lower() == b"100-continue"
               for name, value in scope.get("headers", ()))


def _continue_when_the_body_is_read() -> None:
    """hypercorn (0.18) answers ``Expect: 100-continue`` with ``100 Continue`` as soon as
    the request's head is parsed, before the app has looked at it: a client about to send
    a large body to a bucket it may not write was told to go ahead, and sent it all to
    get its 403. Here the 100 goes out when the app first asks for the body (its first
    ASGI ``receive()``, as uvicorn does; ``app.BoundedConnection`` makes that first call
    once a handler reads the body), sent at once from the app's task, so an upload that
    is allowed waits no longer than before. A final answer sent while the client still
    waits for its 100 carries ``Connection: close`` and the connection is closed after it
    (h11 reads no next request before this one's body, which the client may never send)."""
    from hypercorn.protocol import h11 as hypercorn_h11
    from hypercorn.protocol.events import Response
    from hypercorn.protocol.http_stream import HTTPStream
    from hypercorn.trio import task_group

    original_init = hypercorn_h11.H11Protocol.__init__
    if getattr(original_init, "_cairn_continue", False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        assert type(self.connection) is h11.Connection
        self.connection.__class__ = _DeferredContinue

    original_spawn = task_group.TaskGroup.spawn_app

    async def spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
        stream = getattr(send, "__self__", None)  # installed last: ``send`` is still hypercorn's
        if not isinstance(stream, HTTPStream) or not _expects_continue(scope):
            return await original_spawn(self, app, config, scope, send)
        asked = False

        async def app_asking_for_continue(scope: Any, receive: Any, *rest: Any) -> Any:
            async def receive_after_continue() -> Any:
                nonlocal asked
                if not asked:
                    asked = True
                    # the protocol's h11 turns this into "100 Continue" while the client waits
                    await stream.send(Response(stream_id=stream.stream_id, headers=[], status_code=100))
                return await receive()

            return await app(scope, receive_after_continue, *rest)

        return await original_spawn(self, app_asking_for_continue, config, scope, send)

    __init__._cairn_continue = True  # type: ignore[attr-defined]
    hypercorn_h11.H11Protocol.__init__ = __init__  # type: ignore[method-assign]
    task_group.TaskGroup.spawn_app = spawn_app  # type: ignore[method-assign]


def install() -> None:
    """Apply the patches (idempotent). Refuses to run on a hypercorn they were not written for."""
    for name, pinned in PINNED.items():
        found = version(name)
        if found != pinned:
            raise SystemExit(f"frontend: {name} {found} is installed, but the frontend is written against "
                             f"{pinned}'s internals (pinned in pyproject.toml): reinstall with pip install -e .")
    if hypercorn_run.TCPServer is GuardedTCPServer:
        return  # installed (the spawn_app patches wrap one another: applied twice, they would nest)
    hypercorn_tcp.MAX_RECV = MAX_RECV
    hypercorn_run.TCPServer = GuardedTCPServer  # type: ignore[misc]
    _never_block_on_a_finished_app()
    _coalesce_head_with_body()  # before _reason_phrases, which wraps its _send_h11_event
    _reason_phrases()
    _continue_when_the_body_is_read()  # last: its spawn_app needs hypercorn's own ``send``


def configure(hc: Any, limits: Limits) -> None:
    """The per-connection limits of a hypercorn Config."""
    hc.keep_alive_timeout = KEEP_ALIVE
    hc.cairn_header_timeout = limits.header
    hc.cairn_max_connections_per_client = limits.connections_per_client
    hc.cairn_send_timeout = limits.send
    hc.h11_max_incomplete_size = 64 * 1024  # request line + headers; S3 allows 8 KiB of headers
    # Body messages hypercorn may queue ahead of the app, per connection (each up to
    # MAX_RECV): with the app's own 1 MiB body buffer, a slow upload holds ~3 MiB.
    hc.max_app_queue_size = 2
