"""Sans-IO decoder for ``Content-Encoding: aws-chunked`` request bodies.

The three framings S3 clients send, chosen by ``x-amz-content-sha256``:

``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (boto3/aws CLI default over HTTPS)::

    <hex-size>\\r\\n<data>\\r\\n ... 0\\r\\n<name>:<value>\\r\\n ... \\r\\n

``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``::

    <hex-size>;chunk-signature=<sig>\\r\\n<data>\\r\\n ... 0;chunk-signature=<sig>\\r\\n\\r\\n

``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``: the signed chunks, then trailer lines and
``x-amz-trailer-signature:<sig>\\r\\n\\r\\n``.

Chunk signature = HMAC-SHA256(signing_key, "AWS4-HMAC-SHA256-PAYLOAD\\n" + amz_date + "\\n"
+ scope + "\\n" + previous_signature + "\\n" + sha256("") + "\\n" + sha256(chunk_data)), hex;
previous_signature starts at the request (seed) signature. Trailer signature =
HMAC-SHA256(signing_key, "AWS4-HMAC-SHA256-TRAILER\\n" + amz_date + "\\n" + scope + "\\n" +
final_chunk_signature + "\\n" + sha256(canonical_trailers)), where canonical_trailers is
``<lower-name>:<trimmed value>\\n`` for each trailer (signature line excluded), sorted by
name. This reproduces the worked example in AWS's "sigv4-streaming-trailers" document.

Data is handed back as it arrives (zero-copy memoryview slices of the input): only the
partial chunk-header / trailer line is buffered (at most 4 KiB). For the signed framings
the chunk's SHA-256 is computed as the data passes through and the signature is checked
when the chunk ends, so a consumer must treat the decoded bytes as provisional until
``finish()`` returns: a SignatureDoesNotMatch may be raised after the data of the bad
chunk has been returned. The returned memoryviews reference the caller's buffer; copy
them before reusing a mutable input buffer. After an S3Error the decoder is dead: every
later call raises again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING, Any

from frontend.errors import S3Error

if TYPE_CHECKING:
    from frontend.sigv4 import AuthResult

STREAMING_UNSIGNED_PAYLOAD_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_VARIANTS = (STREAMING_UNSIGNED_PAYLOAD_TRAILER, STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER)

MAX_LINE = 4096  # longest chunk-header or trailer line, without its CRLF
MAX_TRAILERS = 16
TRAILER_SIGNATURE = "x-amz-trailer-signature"

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest().encode("ascii")
_HEX_SIZE_RE = re.compile(rb"[0-9a-fA-F]{1,16}\Z")
_SIGNATURE_RE = re.compile(rb"[0-9a-f]{64}\Z")

_HEADER, _DATA, _DATA_END, _TRAILER, _DONE, _FAILED = range(6)


def _incomplete(message: str | None = None) -> S3Error:
    return S3Error("IncompleteBody", message)


def _malformed(message: str) -> S3Error:
    return S3Error("InvalidRequest", message)


class AwsChunkedDecoder:
    """Incremental decoder: ``feed()`` the raw body as it arrives, then ``finish()``."""

    def __init__(self, content_sha256: str, auth: AuthResult | None, max_chunk: int = 16 * 1024 * 1024) -> None:
        if content_sha256 not in STREAMING_VARIANTS:
            raise _malformed(f"aws-chunked encoding is not supported with x-amz-content-sha256: {content_sha256}")
        self._signed = content_sha256 != STREAMING_UNSIGNED_PAYLOAD_TRAILER
        self._trailers_allowed = content_sha256 != STREAMING_PAYLOAD
        self._max_chunk = max_chunk
        self._state = _HEADER
        self._line = bytearray()
        self._remaining = 0
        self._crlf_seen = 0
        self._decoded = 0
        self._trailers: dict[str, str] = {}
        self._trailer_signature: bytes | None = None
        self._hasher: Any = None
        self._chunk_signature = b""
        self._signing_key = b""
        self._previous = b""
        self._payload_prefix = b""
        self._trailer_prefix = b""
        if self._signed:
            if auth is None:
                raise _malformed(f"{content_sha256} requires a signed request")
            self._signing_key = auth.signing_key
            self._previous = auth.seed_signature.encode("ascii")
            head = f"{auth.amz_date}\n{auth.scope}\n".encode("ascii")
            self._payload_prefix = b"AWS4-HMAC-SHA256-PAYLOAD\n" + head
            self._trailer_prefix = b"AWS4-HMAC-SHA256-TRAILER\n" + head

    @property
    def decoded_bytes(self) -> int:
        """Payload bytes returned so far."""
        return self._decoded

    # -- input ---------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview | bytes]:
        """Consume the next piece of the raw body; return the payload pieces it completes."""
        if self._state == _FAILED:
            raise _malformed("aws-chunked decoding already failed")
        try:
            return self._feed(data)
        except S3Error:
            self._state = _FAILED
            raise

    def finish(self) -> dict[str, str]:
        """Declare the end of input. Returns the trailers {lower-case name: value}.

        Raises IncompleteBody if the stream stopped before its final chunk (a missing
        CRLF after the trailers, as some clients send, is tolerated).
        """
        if self._state == _FAILED:
            raise _malformed("aws-chunked decoding already failed")
        try:
            if self._state == _TRAILER and not self._line:
                self._end_trailers()
            if self._state != _DONE:
                raise _incomplete()
        except S3Error:
            self._state = _FAILED
            raise
        return dict(self._trailers)

    # -- the state machine ---------------------------------------------------

    def _feed(self, data: bytes | bytearray | memoryview) -> list[memoryview | bytes]:
        mv = memoryview(data)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        searchable = data if isinstance(data, (bytes, bytearray)) else None
        n = len(mv)
        pos = 0
        out: list[memoryview | bytes] = []
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, n - pos)
                piece = mv[pos : pos + take]
                out.append(piece)
                if self._hasher is not None:
                    self._hasher.update(piece)
                pos += take
                self._decoded += take
                self._remaining -= take
                if self._remaining == 0:
                    if self._hasher is not None:
                        self._check_chunk(self._hasher.hexdigest().encode("ascii"))
                        self._hasher = None
                    self._state = _DATA_END
                    self._crlf_seen = 0
            elif state == _DATA_END:
                while self._crlf_seen < 2 and pos < n:
                    if mv[pos] != (13 if self._crlf_seen == 0 else 10):
                        raise _incomplete(
                            "The chunk data is not followed by CRLF: the chunk size does not match its data."
                        )
                    pos += 1
                    self._crlf_seen += 1
                if self._crlf_seen == 2:
                    self._state = _HEADER
            elif state == _DONE:
                raise _malformed("Unexpected data after the end of the aws-chunked body.")
            else:  # _HEADER or _TRAILER: a CRLF-terminated line
                room = MAX_LINE + 2 - len(self._line)
                end = min(n, pos + room)
                if searchable is not None:
                    idx = searchable.find(b"\n", pos, end)
                else:
                    idx = bytes(mv[pos:end]).find(b"\n")
                    if idx >= 0:
                        idx += pos
                if idx < 0:
                    if end - pos >= room:
                        raise _malformed("aws-chunked chunk header or trailer line is too long.")
                    self._line += mv[pos:end]
                    pos = end
                    continue
                if self._line:
                    self._line += mv[pos : idx + 1]
                    line = bytes(self._line)
                    self._line.clear()
                else:
                    line = bytes(mv[pos : idx + 1])
                pos = idx + 1
                if not line.endswith(b"\r\n"):
                    raise _malformed("aws-chunked line is not terminated by CRLF.")
                if state == _HEADER:
                    self._chunk_header(line[:-2])
                else:
                    self._trailer_line(line[:-2])
        return out

    def _chunk_header(self, line: bytes) -> None:
        size_text, _, extension = line.partition(b";")
        if not _HEX_SIZE_RE.match(size_text):
            raise _malformed("Invalid aws-chunked chunk size.")
        size = int(size_text, 16)
        if size > self._max_chunk:
            raise _malformed(f"aws-chunked chunk of {size} bytes exceeds the maximum of {self._max_chunk}.")
        if self._signed:
            name, _, value = extension.partition(b"=")
            if name.strip() != b"chunk-signature" or not _SIGNATURE_RE.match(value.strip()):
                raise _malformed("Missing or malformed chunk-signature in a signed aws-chunked body.")
            self._chunk_signature = value.strip()
        if size == 0:
            if self._signed:
                self._check_chunk(_EMPTY_SHA256)
            self._state = _TRAILER
        else:
            self._remaining = size
            if self._signed:
                self._hasher = hashlib.sha256()
            self._state = _DATA

    def _check_chunk(self, data_sha256: bytes) -> None:
        sts = b"".join((self._payload_prefix, self._previous, b"\n", _EMPTY_SHA256, b"\n", data_sha256))
        expected = hmac.new(self._signing_key, sts, hashlib.sha256).hexdigest().encode("ascii")
        if not hmac.compare_digest(expected, self._chunk_signature):
            raise S3Error("SignatureDoesNotMatch", "The chunk signature does not match the chunk data.")
        self._previous = expected

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self._end_trailers()
            return
        if self._trailer_signature is not None:
            raise _malformed("x-amz-trailer-signature must be the last trailer.")
        name_bytes, sep, value_bytes = line.partition(b":")
        name = name_bytes.strip().decode("latin-1").lower()
        if not sep or not name:
            raise _malformed("Malformed aws-chunked trailer.")
        value = value_bytes.strip().decode("latin-1")
        if name == TRAILER_SIGNATURE:
            self._trailer_signature = value.encode("latin-1")
            return
        if not self._trailers_allowed:
            raise _malformed("Trailers are not allowed with STREAMING-AWS4-HMAC-SHA256-PAYLOAD.")
        if name in self._trailers or len(self._trailers) >= MAX_TRAILERS:
            raise _malformed("Duplicate or too many aws-chunked trailers.")
        self._trailers[name] = value

    def _end_trailers(self) -> None:
        if self._signed and self._trailers_allowed:
            if self._trailer_signature is None:
                if self._trailers:
                    raise S3Error("SignatureDoesNotMatch", "The aws-chunked trailers are not signed.")
            else:
                canonical = "".join(f"{name}:{self._trailers[name]}\n" for name in sorted(self._trailers))
                digest = hashlib.sha256(canonical.encode("latin-1")).hexdigest().encode("ascii")
                sts = b"".join((self._trailer_prefix, self._previous, b"\n", digest))
                expected = hmac.new(self._signing_key, sts, hashlib.sha256).hexdigest().encode("ascii")
                if not hmac.compare_digest(expected, self._trailer_signature):
                    raise S3Error("SignatureDoesNotMatch", "The trailer signature does not match the trailers.")
        elif self._signed and self._trailer_signature is not None:
            raise _malformed("Trailers are not allowed with STREAMING-AWS4-HMAC-SHA256-PAYLOAD.")
        self._state = _DONE
