"""What every S3 handler shares: the frontend's context, raftmeta calls with their
errors mapped to S3's (``errors.from_wire``, ``errors.from_reply``), request parsing and
response helpers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from quart import Response

from blobnode.client import BlobClient
from core import wire
from frontend.datapath import DataPath
from frontend.errors import S3Error, from_reply, from_wire
from raftmeta.client import MetaClient

MAX_USER_METADATA = 2048
STORED_HEADERS = ("cache-control", "content-disposition", "content-language", "expires")
XML = "application/xml"


@dataclass(frozen=True)
class Limits:
    """Time limits of the HTTP edge (seconds); see ``frontend.http_edge`` and ``frontend.app``."""

    header: float = 20.0
    body_idle: float = 20.0
    send: float = 60.0
    form: float = 30.0
    connections_per_client: int = 512


@dataclass
class Context:
    meta: MetaClient
    blobs: BlobClient
    data: DataPath
    region: str
    root_access_key: str
    root_secret_key: str
    domains: tuple[str, ...] = ()  # virtual-hosted-style: BUCKET.DOMAIN
    default_root: bool = False  # the documented root credentials: operator endpoints from loopback only
    limits: Limits = field(default_factory=Limits)

    def lookup_secret(self, access_key: str) -> str | None:
        return self.root_secret_key if access_key == self.root_access_key else None


async def meta_call(call: Any) -> dict[str, Any]:
    """Await a raftmeta call; its failure or its error code raises the S3 error."""
    try:
        reply = await call
    except wire.WireError as exc:
        raise from_wire(exc) from None
    if not reply.get("ok"):
        raise from_reply(reply)
    return reply


async def meta_call_many(ctx: Context, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several linearizable reads behind one Raft barrier; the first failed one raises."""
    try:
        results = await ctx.meta.read_many(queries)
    except wire.WireError as exc:
        raise from_wire(exc) from None
    for reply in results:
        if not reply.get("ok"):
            raise from_reply(reply)
    return results


def object_query(request: Any, bucket: str, key: str, vid: str | None,
                 check: dict[str, Any] | None = None) -> dict[str, Any]:
    """The read of a version for a request: with the check its object ACL must pass
    (``check``, else the request's own ``object_check``; ``iam.authorize``)."""
    query = {"q": "object", "bucket": bucket, "key": key, "vid": vid}
    check = check if check is not None else getattr(request, "object_check", None)
    if check:
        query["check"] = check
    return query


async def read_object(ctx: Context, request: Any, query: dict[str, Any]) -> dict[str, Any]:
    """``ctx.meta.read(query)`` through ``meta_call``, unless the request's key look-up
    already read this version behind its barrier with the same object ACL check
    (``iam.lookup_key``'s prefetch, ``object_as``: read before authorization, so used
    only here, by a handler that passed it, and only when the check is the one the
    frontend's own authorization decided)."""
    prefetched = getattr(getattr(request, "principal", None), "prefetched", None)
    if (prefetched is not None
            and prefetched[0] == {"q": "object_as", "bucket": query["bucket"], "key": query["key"],
                                  "vid": query.get("vid")}
            and "reply" in prefetched[1] and prefetched[1].get("check") == query.get("check")):
        reply = prefetched[1]["reply"]
        if not reply.get("ok"):
            raise from_reply(reply)
        return reply
    return await meta_call(ctx.meta.read(query))


def version_param(params: Mapping[str, str]) -> str | None:
    """The ``versionId`` a request names (None: the latest); its form is checked by the
    state machine, which answers InvalidArgument for one that is not a version id."""
    vid = params.get("versionId")
    if vid == "":
        raise S3Error("InvalidArgument", "Version id cannot be the empty string", ArgumentName="versionId",
                      ArgumentValue="")
    return vid


def version_headers(vid: str | None, marker: bool = False) -> dict[str, str]:
    """x-amz-version-id (when the bucket has versions) and x-amz-delete-marker."""
    out = {"x-amz-version-id": vid} if vid else {}
    if marker:
        out["x-amz-delete-marker"] = "true"
    return out


async def read_body(request: Any, limit: int) -> bytes:
    """The whole request body, for handlers that parse it at once (XML, JSON): at most
    ``limit`` bytes whatever the framing (Content-Length or chunked), else
    MaxMessageLengthExceeded before more is read."""
    if request.content_length is not None and request.content_length > limit:
        raise S3Error("MaxMessageLengthExceeded", MaxMessageLengthBytes=limit)
    data = bytearray()
    async for piece in request.body:
        data += piece
        if len(data) > limit:
            raise S3Error("MaxMessageLengthExceeded", MaxMessageLengthBytes=limit)
    return bytes(data)


_DECIMAL = re.compile(r"[0-9]{1,18}")


def decimal(text: str | None) -> int | None:
    """A non-negative whole number written in ASCII digits, at most 18 of them (so it fits
    every integer field on the wire), else None: never int()'s ValueError for '²', for
    4,300 digits or for a value msgpack cannot carry."""
    if text is None or not _DECIMAL.fullmatch(text):
        return None
    return int(text)


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


def stored_headers(request: Any) -> dict[str, str]:
    """The request's headers an object keeps and serves back (Content-Encoding as sent)."""
    headers = {h: request.headers[h] for h in STORED_HEADERS if h in request.headers}
    if "content-encoding" in request.headers:
        headers["content-encoding"] = request.headers["content-encoding"]
    return headers


def encoding_type(params: dict[str, str]) -> str | None:
    """A listing's ``encoding-type``: absent or ``url``."""
    encoding = params.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request", ArgumentName="encoding-type")
    return encoding


def checksum_headers(response: Response, checksum: dict[str, str]) -> Response:
    for algo, value in checksum.items():
        response.headers[f"x-amz-checksum-{algo}"] = value
    return response
