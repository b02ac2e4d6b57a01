"""What every S3 handler shares: the frontend's context, raftmeta calls with their
errors mapped to S3's, and response helpers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NoReturn

from quart import Response

from blobnode.client import BlobClient
from cairn import wire
from frontend.errors import ERRORS, S3Error
from frontend.objects import DataPath
from raftmeta.client import MetaClient

log = logging.getLogger("frontend")

MAX_USER_METADATA = 2048
STORED_HEADERS = ("cache-control", "content-disposition", "content-language", "expires")
XML = "application/xml"


@dataclass
class Context:
    meta: MetaClient
    blobs: BlobClient
    data: DataPath
    region: str
    root_access_key: str
    root_secret_key: str
    domains: tuple[str, ...] = ()  # virtual-hosted-style: BUCKET.DOMAIN

    def lookup_secret(self, access_key: str) -> str | None:
        return self.root_secret_key if access_key == self.root_access_key else None


async def meta_call(call: Any) -> dict[str, Any]:
    """Await a raftmeta call; turn its error codes into S3 errors."""
    try:
        reply = await call
    except wire.WireError:
        raise S3Error("ServiceUnavailable", "The metadata service is unavailable. Please retry.") from None
    if not reply.get("ok"):
        raise_reply(reply)
    return reply


async def meta_call_many(ctx: Context, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several linearizable reads behind one Raft barrier; the first failed one raises."""
    try:
        results = await ctx.meta.read_many(queries)
    except wire.WireError as exc:  # unavailable -> ServiceUnavailable, like every other code
        raise_reply({"err": exc.code, "msg": exc.msg})
    for reply in results:
        if not reply.get("ok"):
            raise_reply(reply)
    return results


def raise_reply(reply: dict[str, Any]) -> NoReturn:
    code = reply.get("err", "InternalError")
    if code == wire.ERR_UNAVAILABLE:
        raise S3Error("ServiceUnavailable", "The metadata service is unavailable. Please retry.")
    if code not in ERRORS:
        log.error("raftmeta error %s: %s", code, reply.get("msg"))
        raise S3Error("InternalError")
    raise S3Error(code)


def xml_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, content_type=XML)


def empty_response(status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(b"", status=status)
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def user_metadata(request: Any) -> dict[str, str]:
    meta = {k.lower()[len("x-amz-meta-") :]: v for k, v in request.headers.items() if k.lower().startswith("x-amz-meta-")}
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_USER_METADATA:
        raise S3Error("MetadataTooLarge", MaxMetadataSize=MAX_USER_METADATA)
    return meta
