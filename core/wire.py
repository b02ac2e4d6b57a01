"""The internal wire format, defined once for every tier.

A frame is ``u32 big-endian header length | msgpack header map | payload``. The payload
is raw bytes whose length is the header's ``"n"`` field (absent or 0: no payload); it is
never packed inside the msgpack map, so an 8 MiB chunk is sent from and received into
one buffer without being copied through msgpack.

Requests carry ``"op"``; replies carry ``"ok": True`` and fields, or ``"ok": False``,
``"err"`` (a code from ``ERR_*`` below or an S3 error code) and ``"msg"``. An error
crosses the wire as a code, never as a string to be matched.

Blob node ops (payload where noted; ``checksum`` is a ``core.chunksum`` value, which
names its algorithm; blob nodes also take ``sha256`` in its place, from older senders):
  put    {id, checksum, n} + payload -> {ok, created}
  get    {id, off?, len?}            -> {ok, size, checksum, n} + payload
  stat   {id}                        -> {ok, size, checksum}
  delete {ids}                       -> {ok, deleted}
  list   {after?, limit?, older_than?} -> {ok, ids, more}
  info   {}                          -> {ok, node_id, capacity, used, chunks}
  pull   {id, checksum, src}         -> {ok, created}   (copy a chunk from the node at src)
  scrub  {}                          -> {ok, started}   (start a scrub pass now)

Metadata (raftmeta) ops: ``{op: "write", cmd: {...}, rid}`` proposes a command through
Raft; ``{op: "read", q: {...}, linear: bool}`` reads the state machine (after a Raft
barrier when linear); ``{op: "status"}``. Command and query shapes live in
``raftmeta.state``, the one place that interprets them.
"""

from __future__ import annotations

import hmac
import logging
import os
import select
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import trio

log = logging.getLogger("core.wire")

MAX_HEADER = 1 << 20  # a request's msgpack header, at most (commands become Raft entries: see raftmeta.node)
# A reply's header, at most: a manifest read back can be large (an object of 10,000
# parts has over 10,000 chunk entries, ~1.2 MB) and comes from a peer that proved the
# secret, in answer to this side's own request.
MAX_REPLY_HEADER = 64 << 20
_LEN = struct.Struct(">I")

# Until a peer has proven the cluster secret it may send one small frame: the client's
# ``{"proof": <32-byte HMAC>}`` packs into 41 bytes (the server's hello into 25, its
# replies into under 60). A handshake frame's header is refused above this, before any of
# it is read, and unpacked under msgpack's own limits, so an unauthenticated peer can
# make the event loop build a handful of small objects, not a million.
HANDSHAKE_MAX_HEADER = 512
HANDSHAKE_LIMITS: dict[str, int] = {
    "max_str_len": 128, "max_bin_len": 64, "max_array_len": 4, "max_map_len": 4, "max_ext_len": 0,
}
HANDSHAKE_TIMEOUT = 3.0  # seconds for the whole server side of a handshake

# Internal error codes (S3 error codes such as NoSuchBucket also cross the wire as-is).
ERR_BAD_REQUEST = "BadRequest"
ERR_NOT_FOUND = "NotFound"
ERR_CHECKSUM = "ChecksumMismatch"
ERR_NO_SPACE = "NoSpace"
ERR_UNAVAILABLE = "Unavailable"  # no Raft leader / not ready: retry elsewhere
ERR_INTERNAL = "Internal"
ERR_AUTH = "AuthFailed"


class WireError(Exception):
    """A remote reply with ``ok: False``, or a broken connection (code ERR_UNAVAILABLE)."""

    def __init__(self, code: str, msg: str = "") -> None:
        super().__init__(f"{code}: {msg}" if msg else code)
        self.code = code
        self.msg = msg


def pack(header: dict[str, Any]) -> bytes:
    body = msgpack.packb(header, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def unpack(body: bytes | bytearray | memoryview) -> dict[str, Any]:
    return msgpack.unpackb(body, raw=False)


CONSUME_STEP = 1024 * 1024


def _recv_exactly(fd: int, view: memoryview, pos: int, consume: Callable[[memoryview], None],
                  seconds: float) -> None:
    """Blocking half of ``recv_payload_in_thread``: fill view[pos:] from the non-blocking
    socket ``fd`` (nothing else uses it meanwhile), consuming view[:pos] and all the rest."""
    deadline = time.monotonic() + seconds
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    done = 0
    while pos < len(view):
        try:
            got = os.readv(fd, [view[pos:]])
        except BlockingIOError:
            if done < pos:  # nothing to read yet: consume what is here meanwhile
                consume(view[done:pos])
                done = pos
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("payload not received in time") from None
            poller.poll(left * 1000)
            continue
        if not got:
            raise WireError(ERR_UNAVAILABLE, "connection closed mid-payload")
        pos += got
        if pos - done >= CONSUME_STEP:
            consume(view[done:pos])
            done = pos
    if done < pos:
        consume(view[done:pos])


class FramedSocket:
    """Reads and writes frames on a connected ``trio.socket`` socket.

    ``recv_into`` lets a payload land directly in a caller-provided buffer.
    """

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self._buf = bytearray()  # bytes read past the last header, not yet consumed

    async def send(self, header: dict[str, Any], payload: bytes | bytearray | memoryview | None = None) -> None:
        data = pack(header)
        if payload is not None and len(payload) and len(payload) <= 65536:
            data += bytes(payload)
            payload = None
        await self._send_all(data)
        if payload is not None and len(payload):
            await self._send_all(payload)

    async def _send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            sent = await self.sock.send(view)
            view = view[sent:]

    async def _fill(self, n: int, exact: bool = False) -> None:
        """Buffer at least n bytes; with ``exact``, never read past the n-th."""
        while len(self._buf) < n:
            want = n - len(self._buf)
            data = await self.sock.recv(want if exact else max(65536, want))
            if not data:
                raise WireError(ERR_UNAVAILABLE, "connection closed")
            self._buf += data

    async def recv_header(self, *, handshake: bool = False, limit: int = MAX_HEADER) -> dict[str, Any] | None:
        """Next frame's header, or None on a clean end of stream before any byte.

        A ``handshake`` frame comes from a peer that has not proven the secret yet: it is
        read without reading ahead, its header is refused above HANDSHAKE_MAX_HEADER
        before any byte past the length prefix is read, and it is unpacked under
        HANDSHAKE_LIMITS. Raises WireError (or ValueError, for undecodable msgpack)."""
        if not self._buf:
            data = await self.sock.recv(4 if handshake else 65536)
            if not data:
                return None
            self._buf += data
        await self._fill(4, exact=handshake)
        (size,) = _LEN.unpack_from(self._buf)
        if size > (HANDSHAKE_MAX_HEADER if handshake else limit):
            raise WireError(ERR_BAD_REQUEST, "header too large")
        await self._fill(4 + size, exact=handshake)
        body = memoryview(self._buf)[4 : 4 + size]
        try:
            header = msgpack.unpackb(body, raw=False, **HANDSHAKE_LIMITS) if handshake else unpack(body)
        finally:
            body.release()  # else the bytearray cannot be resized below
        del self._buf[: 4 + size]
        if not isinstance(header, dict):
            raise WireError(ERR_BAD_REQUEST, "header is not a map")
        return header

    def _take_buffered(self, view: memoryview) -> int:
        have = min(len(self._buf), len(view))
        if have:
            view[:have] = self._buf[:have]
            del self._buf[:have]
        return have

    async def recv_payload_into(self, view: memoryview) -> None:
        """Fill ``view`` completely with the payload bytes that follow the header."""
        pos = self._take_buffered(view)
        while pos < len(view):
            got = await self.sock.recv_into(view[pos:])
            if not got:
                raise WireError(ERR_UNAVAILABLE, "connection closed mid-payload")
            pos += got

    async def recv_payload_in_thread(self, view: memoryview, consume: Callable[[memoryview], None]) -> None:
        """``recv_payload_into`` done by a worker thread, which also hands the bytes to
        ``consume`` in order as they land (in steps of CONSUME_STEP, and whenever the
        socket has nothing ready). The event loop meanwhile serves everything else:
        for a large payload the copy out of the kernel and e.g. its hashing leave the
        loop's thread. The caller chooses the algorithm: ``consume`` is typically a
        hasher's ``update`` (a chunk's: ``core.chunksum.ChunkSum.hasher``, XXH3-128 or
        SHA-256, whichever the chunk's checksum names). The thread stops at the scope's
        deadline."""
        pos = self._take_buffered(view)
        deadline = trio.current_effective_deadline()
        seconds = deadline - trio.current_time() if deadline != float("inf") else 3600.0
        await trio.to_thread.run_sync(_recv_exactly, self.sock.fileno(), view, pos, consume, max(0.0, seconds))

    async def recv_payload(self, n: int) -> bytearray:
        buf = bytearray(n)
        await self.recv_payload_into(memoryview(buf))
        return buf

    async def skip_payload(self, n: int) -> None:
        scratch = memoryview(bytearray(min(n, 1 << 20)))
        while n > 0:
            step = min(n, len(scratch))
            await self.recv_payload_into(scratch[:step])
            n -= step

    def close(self) -> None:
        self.sock.close()


async def connect(addr: str, timeout: float = 3.0) -> FramedSocket:
    host, port = split_addr(addr)
    with trio.fail_after(timeout):
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        try:
            sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
            await sock.connect((await _resolve(host), port))
        except BaseException:
            sock.close()
            raise
    return FramedSocket(sock)


async def _resolve(host: str) -> str:
    infos = await trio.socket.getaddrinfo(host, None, trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    return infos[0][4][0]


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be host:port, got {addr!r}")
    return host, int(port)


# --- cluster authentication: every internal connection starts with a challenge --------


def auth_proof(secret: str, nonce: bytes, role: str) -> bytes:
    return hmac.new(secret.encode(), role.encode() + b"\0" + nonce, "sha256").digest()


async def server_handshake(conn: FramedSocket, secret: str) -> bool:
    """Challenge a new client: it must prove it holds the cluster secret, in one small
    frame (see HANDSHAKE_MAX_HEADER) and within HANDSHAKE_TIMEOUT of connecting. Any
    other first frame (too large, undecodable, not a map, no 32-byte ``proof``, a wrong
    proof) is refused with ERR_AUTH; a peer too slow to finish is dropped."""
    nonce = os.urandom(16)
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        await conn.send({"hello": nonce})
        try:
            header = await conn.recv_header(handshake=True)
        except (WireError, ValueError, TypeError):  # msgpack's errors are ValueErrors
            header = None
        proof = header.get("proof") if header is not None else None
        if isinstance(proof, bytes) and hmac.compare_digest(proof, auth_proof(secret, nonce, "client")):
            await conn.send({"ok": True})
            return True
        await conn.send({"ok": False, "err": ERR_AUTH, "msg": "cluster secret required"})
    return False


async def serve_connection(
    stream: trio.SocketStream, secret: str, handle: Callable[[FramedSocket, dict[str, Any]], Awaitable[None]],
) -> None:
    """Serve one accepted connection: the secret handshake, then requests one at a time
    (``handle`` reads any payload and sends the reply). Ends quietly when the peer goes."""
    conn = FramedSocket(stream.socket)
    try:
        stream.socket.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        if not await server_handshake(conn, secret):
            return
        while (header := await conn.recv_header()) is not None:
            await handle(conn, header)
    except (WireError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    except Exception as exc:  # an undecodable or malformed frame ends this connection only
        log.warning("closing a connection after a malformed request: %r", exc)
        return
    finally:
        conn.close()


async def client_handshake(conn: FramedSocket, secret: str) -> None:
    try:
        header = await conn.recv_header(handshake=True)
    except ValueError:
        header = None
    nonce = header.get("hello") if header else None
    if not isinstance(nonce, bytes):
        raise WireError(ERR_UNAVAILABLE, "no handshake from server")
    await conn.send({"proof": auth_proof(secret, nonce, "client")})
    try:
        reply = await conn.recv_header(handshake=True)
    except ValueError:
        reply = None
    if not reply or not reply.get("ok"):
        raise WireError(ERR_AUTH, "server rejected the cluster secret")


class ConnectionPool:
    """Idle authenticated connections per address; one request at a time per connection."""

    def __init__(self, secret: str, max_idle: int = 256, connect_timeout: float = 3.0) -> None:
        self.secret = secret
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._idle: dict[str, list[FramedSocket]] = {}

    async def request(
        self, addr: str, header: dict[str, Any], payload: bytes | bytearray | memoryview | None, timeout: float,
        *, into: Callable[[int], memoryview] | None = None, consume: Callable[[memoryview], None] | None = None,
    ) -> tuple[dict[str, Any], bytearray | memoryview | None]:
        """Send one request and read its reply (and the reply's payload, if any).

        ``into(n)`` may supply the memoryview of n bytes the reply's payload is received
        into (else it lands in a new bytearray); with ``consume`` too, it is received by a
        worker thread that hands it to ``consume`` as it lands (``recv_payload_in_thread``).

        An idle pooled connection may have been closed by a peer that restarted: if it
        fails before any reply arrives, the request is sent once more on a new one.
        Raises WireError(ERR_UNAVAILABLE) on connection failure or timeout.
        """
        for fresh in (False, True):
            reused = not fresh and bool(self._idle.get(addr))
            conn = await self.acquire(addr, fresh=fresh)
            replied = ok = False
            try:
                with trio.fail_after(timeout):
                    await conn.send(header, payload)
                    reply = await conn.recv_header(limit=MAX_REPLY_HEADER)
                    if reply is None:
                        raise WireError(ERR_UNAVAILABLE, f"{addr} closed the connection")
                    replied = True
                    n = int(reply.get("n", 0) or 0)
                    data: bytearray | memoryview | None = None
                    if n and into is not None:
                        data = into(n)
                        if consume is not None:
                            await conn.recv_payload_in_thread(data, consume)
                        else:
                            await conn.recv_payload_into(data)
                    elif n:
                        data = await conn.recv_payload(n)
                ok = True
                return reply, data
            except trio.TooSlowError:
                raise WireError(ERR_UNAVAILABLE, f"{addr} timed out") from None
            except (OSError, WireError) as exc:
                if reused and not replied:
                    self.discard(addr)
                    continue
                if isinstance(exc, WireError):
                    raise
                raise WireError(ERR_UNAVAILABLE, f"{addr}: {exc!r}") from None
            finally:
                if ok:
                    self.release(addr, conn)
                else:
                    conn.close()
        raise WireError(ERR_UNAVAILABLE, f"{addr}: no connection")

    async def acquire(self, addr: str, fresh: bool = False) -> FramedSocket:
        idle = self._idle.get(addr)
        if idle and not fresh:
            return idle.pop()
        try:
            conn = await connect(addr, self.connect_timeout)
        except (OSError, trio.TooSlowError) as exc:
            raise WireError(ERR_UNAVAILABLE, f"{addr}: {exc!r}") from None
        try:
            with trio.fail_after(self.connect_timeout):
                await client_handshake(conn, self.secret)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, (OSError, trio.TooSlowError)):
                raise WireError(ERR_UNAVAILABLE, f"{addr}: handshake {exc!r}") from None
            raise
        return conn

    def release(self, addr: str, conn: FramedSocket) -> None:
        idle = self._idle.setdefault(addr, [])
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.close()

    def discard(self, addr: str) -> None:
        """Close every idle connection to ``addr`` (after it failed)."""
        for conn in self._idle.pop(addr, []):
            conn.close()
