"""PySyncObj's TCP connection as ``raftmeta.raftconn`` patches it: a frame larger than the
socket's buffers reaches its peer by polling alone (no further send to push it), and
frames come out whole, in order, whatever the receive sizes."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import pysyncobj.tcp_connection as ptcp
from pysyncobj.poller import createPoller

import raftmeta.node  # noqa: F401  (installs the patches, as every raftmeta process does)
from raftmeta import raftconn


def _pair(poller: Any, received: list[Any], buffer: int = 1 << 16) -> tuple[Any, Any]:
    left, right = socket.socketpair()
    for sock in (left, right):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        sock.setblocking(False)
    sender = ptcp.TcpConnection(poller, onMessageReceived=lambda m: None, socket=left,
                                sendBufferSize=buffer, recvBufferSize=buffer)
    receiver = ptcp.TcpConnection(poller, onMessageReceived=received.append, socket=right,
                                  sendBufferSize=buffer, recvBufferSize=buffer)
    # As after PySyncObj's key exchange: each side holds the key the other one sent.
    sender.sendRandKey = receiver.recvRandKey = os.urandom(32)
    receiver.sendRandKey = sender.recvRandKey = os.urandom(32)
    return sender, receiver


def _poll_until(poller: Any, done: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        poller.poll(0.05)


def test_a_large_frame_drains_by_polling_alone() -> None:
    poller = createPoller("auto")
    received: list[Any] = []
    sender, receiver = _pair(poller, received)
    sender.send({"hello": 1})  # a connection in use: its writes have drained once
    _poll_until(poller, lambda: received)
    payload = os.urandom(8 << 20)  # 128 times the socket buffer
    sender.send({"blob": payload})
    assert raftconn.pending(sender) > 0  # the socket took only part of it
    _poll_until(poller, lambda: len(received) == 2)  # no second send: before the patch, it never came
    assert received == [{"hello": 1}, {"blob": payload}]
    assert raftconn.pending(sender) == 0
    sender.disconnect()
    receiver.disconnect()


def test_many_frames_come_out_whole_and_in_order() -> None:
    poller = createPoller("auto")
    received: list[Any] = []
    sender, receiver = _pair(poller, received, buffer=4096)
    messages = [{"n": n, "data": os.urandom(n * 37 % 5000)} for n in range(2000)]
    for message in messages:
        sender.send(message)
    _poll_until(poller, lambda: len(received) == len(messages))
    assert received == messages
    sender.disconnect()
    receiver.disconnect()


def test_a_corrupt_frame_closes_the_connection() -> None:
    poller = createPoller("auto")
    received: list[Any] = []
    sender, receiver = _pair(poller, received)
    sender.send({"ok": 1})
    raw = sender._TcpConnection__socket
    raw.send(b"\x05\x00\x00\x00junk!")  # a frame that is not zlib'd pickle
    _poll_until(poller, lambda: receiver.state == ptcp.CONNECTION_STATE.DISCONNECTED, 5.0)
    assert received == [{"ok": 1}]
    assert receiver.state == ptcp.CONNECTION_STATE.DISCONNECTED
    sender.disconnect()
