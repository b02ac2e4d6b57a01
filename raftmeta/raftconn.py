"""PySyncObj 0.3.17's TCP connection, fixed where a follower's catch-up needs it.

Two faults made a follower that was down catch up at about 1.4 MB/s, one socket buffer
per leader tick, however fast the link (measured: 5,000 small entries took 1 s to go
over loopback, so a follower 1M entries behind would need minutes):

- a frame that did not fit in the socket's send buffer waited for the *next* frame to
  the same peer (the next heartbeat, 0.1 s later): ``send`` never asked the poller to
  say when the socket is writable again. Now it does whenever bytes remain, and the
  connection's own write handler (which re-subscribes while bytes remain) drains them.
- the buffers were ``bytes``, re-copied whole on every partial send, every receive and
  every frame parsed: quadratic in what is buffered. They are ``bytearray`` now, and
  consumed from the front (amortised O(1) in CPython).

How much a peer may have queued is bounded by the leader (``MetaNode``), not here.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pysyncobj.tcp_connection as ptcp
from pysyncobj.poller import POLL_EVENT_TYPE

_PREFIX = struct.Struct("i")  # PySyncObj's frame length prefix
_WATCH = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR
_Conn = ptcp.TcpConnection


def _send(self: Any, message: Any) -> None:
    if self.sendRandKey:
        message = (self.sendRandKey, message)
    data = ptcp.zlib.compress(ptcp.pickle.dumps(message), 3)
    if self.encryptor:
        data = self.encryptor.encrypt_at_time(data, int(ptcp.monotonicTime()))
    buf = self._TcpConnection__writeBuffer
    if not isinstance(buf, bytearray):
        buf = self._TcpConnection__writeBuffer = bytearray(buf)
    buf += _PREFIX.pack(len(data))
    buf += data
    self._TcpConnection__trySendBuffer()
    fileno = self._TcpConnection__fileno
    if self._TcpConnection__writeBuffer and fileno is not None and self.state == ptcp.CONNECTION_STATE.CONNECTED:
        self._TcpConnection__poller.subscribe(fileno, self._TcpConnection__processConnection, _WATCH)


def _process_send(self: Any) -> bool:
    buf = self._TcpConnection__writeBuffer
    if not buf:
        return False
    try:
        sent = self._TcpConnection__socket.send(buf)
    except OSError as exc:
        if exc.errno not in (socket.errno.EAGAIN, socket.errno.EWOULDBLOCK):
            self.disconnect()
        return False
    if sent < 0:
        self.disconnect()
        return False
    if sent == 0:
        return False
    if isinstance(buf, bytearray):
        del buf[:sent]
    else:
        self._TcpConnection__writeBuffer = bytearray(buf[sent:])
    return True


def _process_read(self: Any) -> bool:
    sock = self._TcpConnection__socket
    try:
        incoming = sock.recv(self._TcpConnection__recvBufferSize)
    except OSError as exc:
        if exc.errno not in (socket.errno.EAGAIN, socket.errno.EWOULDBLOCK):
            self.disconnect()
        return False
    if not incoming or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        self.disconnect()
        return False
    buf = self._TcpConnection__readBuffer
    if isinstance(buf, bytearray):
        buf += incoming
    else:
        self._TcpConnection__readBuffer = bytearray(buf) + incoming
    return True


def _parse_message(self: Any) -> Any:
    buf = self._TcpConnection__readBuffer
    if len(buf) < _PREFIX.size:
        return None
    (size,) = _PREFIX.unpack_from(buf)
    if len(buf) - _PREFIX.size < size:
        return None
    data = bytes(buf[_PREFIX.size:_PREFIX.size + size])
    try:
        if self.encryptor:
            stamp = self.encryptor.extract_timestamp(data)
            if stamp < self.recvLastTimestamp:
                raise ValueError("a Raft frame's timestamp went back")
            self.recvLastTimestamp = stamp
            data = self.encryptor.decrypt(data)
        message = ptcp.pickle.loads(ptcp.zlib.decompress(data))
        if self.recvRandKey:
            key, message = message
            if key != self.recvRandKey:
                raise ValueError("a Raft frame for another connection")
    except Exception:  # PySyncObj's rule: any bad frame closes the connection
        self.disconnect()
        return None
    if isinstance(buf, bytearray):
        del buf[:_PREFIX.size + size]
    else:
        self._TcpConnection__readBuffer = bytearray(buf[_PREFIX.size + size:])
    return message


def install() -> None:
    """Patch PySyncObj's TcpConnection (idempotent)."""
    _Conn.send = _send
    _Conn._TcpConnection__processSend = _process_send
    _Conn._TcpConnection__processRead = _process_read
    _Conn._TcpConnection__processParseMessage = _parse_message


def pending(conn: Any) -> int:
    """Bytes queued on ``conn`` that the socket has not taken yet."""
    return len(conn._TcpConnection__writeBuffer) if conn is not None else 0
