"""What the aws-chunked tests share: the streaming variants, a signing context, and a
straightforward independent encoder (all three variants) with a decoder driver that
feeds a body in seeded random pieces."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import zlib

from frontend.chunked import AwsChunkedDecoder
from frontend.sigv4 import AuthResult, derive_signing_key
from tests.unit.sigv4_helpers import EMPTY_SHA256

UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"

ACCESS_KEY = "AKIDCAIRNTEST"
SECRET_KEY = "chunky/secret+key"

AUTH = AuthResult(
    access_key=ACCESS_KEY,
    signing_key=derive_signing_key(SECRET_KEY, "20261125", "us-east-1"),
    seed_signature="4d" * 32,
    amz_date="20261125T101500Z",
    scope="20261125/us-east-1/s3/aws4_request",
    content_sha256=SIGNED,
)


# ---------------------------------------------------------------------------
# an independent, straightforward encoder
# ---------------------------------------------------------------------------


def _sig(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def encode(
    chunks: list[bytes],
    variant: str,
    auth: AuthResult | None = AUTH,
    trailers: list[tuple[str, str]] = (),
    sign_trailers: bool = True,
) -> bytes:
    """Frame chunks (an empty final chunk is added) as a client would."""
    out = bytearray()
    previous = auth.seed_signature if auth else ""
    for data in [*chunks, b""]:
        if variant == UNSIGNED_TRAILER:
            out += b"%x\r\n" % len(data)
        else:
            sts = "\n".join(
                [
                    "AWS4-HMAC-SHA256-PAYLOAD",
                    auth.amz_date,
                    auth.scope,
                    previous,
                    EMPTY_SHA256,
                    hashlib.sha256(data).hexdigest(),
                ]
            )
            previous = _sig(auth.signing_key, sts)
            out += b"%x;chunk-signature=%s\r\n" % (len(data), previous.encode())
        if data:
            out += data + b"\r\n"
    for name, value in trailers:
        out += f"{name}:{value}\r\n".encode()
    if variant == SIGNED_TRAILER and sign_trailers:
        canonical = "".join(f"{n}:{v}\n" for n, v in sorted(trailers))
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                auth.amz_date,
                auth.scope,
                previous,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        out += f"x-amz-trailer-signature:{_sig(auth.signing_key, sts)}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


def decode_all(decoder: AwsChunkedDecoder, body: bytes, rng: random.Random | None = None, max_piece: int = 64):
    """Feed body in random pieces (or whole); return (payload, trailers)."""
    out = bytearray()
    if rng is None:
        pieces = [body]
    else:
        pieces = []
        pos = 0
        while pos < len(body):
            n = rng.randint(1, max_piece)
            pieces.append(body[pos : pos + n])
            pos += n
    for i, piece in enumerate(pieces):
        kind = i % 3
        data = piece if kind == 0 else bytearray(piece) if kind == 1 else memoryview(piece)
        for part in decoder.feed(data):
            out += part
    return bytes(out), decoder.finish()


def random_chunks(rng: random.Random, count: int, max_size: int) -> list[bytes]:
    return [rng.randbytes(rng.randint(1, max_size)) for _ in range(count)]


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()

