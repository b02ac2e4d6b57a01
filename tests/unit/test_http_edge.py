"""frontend.http_edge's h11 connection: ``100 Continue`` is the app's to send, never
hypercorn's on its own; an answer before it closes the connection."""

from __future__ import annotations

import h11

from frontend.http_edge import _DeferredContinue, _expects_continue

HEAD = b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"


def _connection(head: bytes = HEAD) -> h11.Connection:
    connection = h11.Connection(h11.SERVER)
    connection.__class__ = _DeferredContinue  # as http_edge installs it in hypercorn's protocol
    connection.receive_data(head)
    assert isinstance(connection.next_event(), h11.Request)
    return connection


def test_hypercorn_is_never_told_to_send_the_100() -> None:
    connection = _connection()
    assert connection.client_is_waiting_for_100_continue
    assert connection.they_are_waiting_for_100_continue is False


def test_the_100_goes_out_while_the_client_waits_then_the_body_is_read() -> None:
    connection = _connection()
    assert connection.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")).startswith(
        b"HTTP/1.1 100 Continue\r\n")
    connection.receive_data(b"abc")
    assert isinstance(connection.next_event(), h11.Data)
    assert isinstance(connection.next_event(), h11.EndOfMessage)
    head = connection.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
    assert b"connection: close" not in head.lower()
    connection.send(h11.EndOfMessage())
    connection.start_next_cycle()  # kept alive
    assert connection.our_state is h11.IDLE


def test_no_100_once_the_client_sent_its_body_anyway() -> None:
    connection = _connection(HEAD + b"ab")
    assert isinstance(connection.next_event(), h11.Data)
    assert not connection.client_is_waiting_for_100_continue
    assert connection.send(h11.InformationalResponse(status_code=100, headers=[])) == b""
    assert connection.our_state is h11.SEND_RESPONSE


def test_an_answer_before_the_100_closes_the_connection() -> None:
    connection = _connection()
    head = connection.send(h11.Response(status_code=403, headers=[(b"content-length", b"0")]))
    assert head.startswith(b"HTTP/1.1 403 ") and b"\r\nconnection: close\r\n" in head.lower()
    connection.send(h11.EndOfMessage())
    assert connection.our_state is h11.MUST_CLOSE
    assert connection.send(h11.InformationalResponse(status_code=100, headers=[])) == b""  # too late: dropped
    # an answer that already says close gets no second header
    connection = _connection()
    head = connection.send(h11.Response(status_code=400, headers=[(b"connection", b"Close")]))
    assert head.lower().count(b"connection: close") == 1


def test_expects_continue() -> None:
    assert _expects_continue({"headers": [(b"expect", b"100-continue")]})
    assert _expects_continue({"headers": [(b"Expect", b" 100-Continue ")]})
    assert not _expects_continue({"headers": [(b"expect", b"something-else")]})
    assert not _expects_continue({"headers": []})
