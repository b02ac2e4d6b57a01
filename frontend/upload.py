"""Request bodies of uploads: framing, length and integrity checks.

``UploadBody`` turns a request into a stream of payload bytes (decoding aws-chunked
framing when the client used it) and, once the stream is stored, checks everything the
client promised about it: the length, Content-MD5, x-amz-content-sha256 and the S3
additional checksum (x-amz-checksum-*, from a header or an aws-chunked trailer). Any
mismatch raises the S3 error before anything is committed.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncIterator
from typing import Any

from core.wire import WireError
from frontend.checksums import check_value, new_checksum, requested_checksums
from frontend.chunked import AwsChunkedDecoder
from frontend.context import decimal
from frontend.datapath import DataPath, Stored
from frontend.errors import S3Error, from_reply, from_wire
from raftmeta.client import MetaClient

MAX_PUT_SIZE = 5 * 1024**3
_NOT_A_HASH = ("UNSIGNED-PAYLOAD",)


def _int_header(headers: Any, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    number = decimal(value.strip())
    if number is None:
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer", ArgumentName=name)
    return number


class UploadBody:
    def __init__(self, request: Any, auth: Any, max_size: int = MAX_PUT_SIZE, default_algorithm: str | None = None) -> None:
        h = request.headers
        self.request = request
        self.content_sha256 = (auth.content_sha256 if auth is not None else None) or h.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        encodings = [e.strip().lower() for e in h.get("content-encoding", "").split(",") if e.strip()]
        # aws-chunked framing: a STREAMING-* payload, or the encoding with its decoded length (the
        # encoding alone on a plain body, as S3 takes it, is only dropped from the stored one)
        self.chunked = self.content_sha256.startswith("STREAMING-") or (
            "aws-chunked" in encodings and "x-amz-decoded-content-length" in h)
        self.content_encoding = ", ".join(e for e in encodings if e != "aws-chunked")  # as S3 echoes it
        self.raw_length = _int_header(h, "content-length")
        if self.chunked:
            self.length = _int_header(h, "x-amz-decoded-content-length")
            if self.length is None:
                raise S3Error("MissingContentLength", "x-amz-decoded-content-length is required with aws-chunked")
            self.decoder: AwsChunkedDecoder | None = AwsChunkedDecoder(self.content_sha256, auth)
        else:
            self.length = self.raw_length
            self.decoder = None
        if self.length is not None and self.length > max_size:
            raise S3Error("EntityTooLarge", ProposedSize=self.length, MaxSizeAllowed=max_size)
        self.max_size = max_size
        self.content_md5 = self._parse_md5(h.get("content-md5"))
        self.checksum_algorithm, self.checksum_expected, self.checksum_in_trailer = self._checksum_request(h)
        if self.checksum_algorithm is None and default_algorithm:
            self.checksum_algorithm = default_algorithm  # computed and stored; nothing to verify
        self.checksum = new_checksum(self.checksum_algorithm) if self.checksum_algorithm else None
        self.trailers: dict[str, str] = {}
        self.raw_received = 0

    @staticmethod
    def _parse_md5(value: str | None) -> bytes | None:
        if value is None:
            return None
        try:
            digest = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise S3Error("InvalidDigest") from None
        if len(digest) != 16:
            raise S3Error("InvalidDigest")
        return digest

    @staticmethod
    def _checksum_request(h: Any) -> tuple[str | None, str | None, bool]:
        """(algorithm, expected base64 value, value arrives in the trailer) from the
        request's headers, parsed strictly as S3 does before a byte is stored: several
        x-amz-checksum-* headers (or a header and a trailer), an unknown algorithm or a
        value that is not base64 of the digest's size are InvalidRequest. Only
        x-amz-sdk-checksum-algorithm, without a value or trailer: nothing to verify
        (the upload's default algorithm, if any, is computed)."""
        requested = requested_checksums(h)
        if requested is None or requested.location == "none":
            return None, None, False
        if requested.location == "trailer":
            return requested.algorithm, None, True  # the value arrives in the trailer
        # canonical base64 of the decoded digest: compared as a string with ours
        value = base64.b64encode(check_value(requested.algorithm, requested.expected or "")).decode("ascii")
        return requested.algorithm, value, False

    async def pieces(self) -> AsyncIterator[bytes | bytearray | memoryview]:
        decoded = 0
        async for data in self.request.body:
            self.raw_received += len(data)
            if self.decoder is None:
                decoded += len(data)
                self._bound(decoded)
                yield data
            else:
                for piece in self.decoder.feed(data):
                    decoded += len(piece)
                    self._bound(decoded)
                    yield piece
        if self.raw_length is not None and self.raw_received != self.raw_length:
            raise S3Error("IncompleteBody")
        if self.decoder is not None:
            self.trailers = self.decoder.finish()

    def _bound(self, decoded: int) -> None:
        """A body never goes past its declared length (nor the largest PUT): not a byte
        more is stored than the request said, before its authorization was decided."""
        if self.length is not None and decoded > self.length:
            raise S3Error("IncompleteBody")
        if decoded > self.max_size:
            raise S3Error("EntityTooLarge")

    def on_chunk(self, chunk: memoryview) -> None:
        if self.checksum is not None:
            self.checksum.update(chunk)

    def verify(self, stored: Stored) -> dict[str, str]:
        """Raise the S3 error for any broken promise; return the checksum to store."""
        if self.length is not None and stored.size != self.length:
            raise S3Error("IncompleteBody")
        if self.content_md5 is not None and stored.md5.digest() != self.content_md5:
            raise S3Error("BadDigest")
        if self.content_sha256 not in _NOT_A_HASH and not self.content_sha256.startswith("STREAMING-"):
            if stored.sha256.hexdigest() != self.content_sha256.lower():
                raise S3Error(
                    "XAmzContentSHA256Mismatch",
                    ClientComputedContentSHA256=self.content_sha256,
                    S3ComputedContentSHA256=stored.sha256.hexdigest(),
                )
        if self.checksum is None:
            return {}
        expected = self.checksum_expected
        if self.checksum_in_trailer:
            expected = self.trailers.get(f"x-amz-checksum-{self.checksum_algorithm}")
            if expected is None:
                raise S3Error("InvalidRequest", "The trailing checksum named in x-amz-trailer was not sent")
        actual = self.checksum.b64digest()
        if expected is not None and actual != expected:
            raise S3Error("BadDigest", f"The {self.checksum_algorithm.upper()} you specified did not match the calculated checksum.")
        return {self.checksum_algorithm: actual}

    async def store(self, data: DataPath) -> tuple[Stored, dict[str, str]]:
        """Stream the body into replicated chunks and check every promise about it.
        Returns what was stored and the checksum to keep; on any failure, including the
        client going away, the chunks written so far go to GC and nothing is committed."""
        stored = Stored()
        try:
            await data.store(self.pieces(), stored, self.on_chunk, self.length)
            return stored, self.verify(stored)
        except BaseException:
            await data.discard(stored.chunks)
            raise


async def commit_object(
    meta: MetaClient, data: DataPath, bucket: str, key: str, stored: Stored, *, content_type: str,
    meta_fields: dict[str, Any], cond: dict[str, Any] | None = None, integrity: bool = True,
    commit_as: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Make the stored chunks the object at (bucket, key) through Raft; returns its ETag
    and the commit's reply (``vid``: its version id, absent in a bucket never versioned;
    ``expiration``: the lifecycle rule that will expire it).

    A refused commit (no bucket, failed condition) sends the chunks to GC. A commit whose
    outcome is unknown (no Raft answer) keeps them: it may have applied. ``commit_as``
    (``iam.commit_as``): the caller's key and access, checked by the state machine
    before the commit applies (``raftmeta.sm.iam.check_as``)."""
    etag = stored.md5.hexdigest()
    obj = {"size": stored.size, "etag": etag, "sha256": stored.sha256.hexdigest(), "content_type": content_type,
           "created": time.time(), "meta": meta_fields, "chunks": stored.chunks}
    try:
        command = {"op": "put_object", "bucket": bucket, "key": key, "obj": obj, "ts": obj["created"],
                   "cond": cond or {}, "integrity": integrity}
        if commit_as is not None:
            command["as"] = commit_as
        reply = await meta.write(command)
    except WireError as exc:
        raise from_wire(exc) from None
    if not reply.get("ok"):
        await data.discard(stored.chunks)
        raise from_reply(reply)
    return etag, reply
