"""Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts,
ListMultipartUploads, and GET/HEAD of one part of a completed object.

Parts stream into replicated chunks exactly as PutObject bodies do; only their
manifests go through Raft (``put_part``). Complete is metadata only: the object's
manifest is the listed parts' chunks in order, and its ETag is S3's
``md5(concatenated part MD5s)-N``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import Any

from quart import Response

from frontend import conditions, iam, s3xml
from frontend.checksums import ALGORITHMS, COMBINABLE, combine_b64, new_checksum
from frontend.context import (
    Context,
    checksum_headers,
    decimal,
    empty_response,
    encoding_type,
    meta_call,
    object_query,
    read_body,
    stored_headers,
    user_metadata,
    version_headers,
    xml_response,
)
from frontend.datapath import Stored
from frontend.errors import S3Error, from_reply
from frontend.recent import Recent
from frontend.s3 import acl, object_lock, tagging
from frontend.s3.copy_object import parse_copy_source
from frontend.upload import UploadBody

MAX_PART_SIZE = 5 * 1024**3
MAX_PART_NUMBER = 10_000
MAX_COMPLETE_BODY = 8 * 1024 * 1024  # 10,000 parts, each with an ETag and a checksum
CHECKSUM_TYPES = ("COMPOSITE", "FULL_OBJECT")


def new_upload_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(24)).decode()  # 192 random bits


def part_number(params: dict[str, str], name: str = "partNumber") -> int:
    value = params.get(name, "")
    number = decimal(value)
    if number is None or not 1 <= number <= MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive",
                      ArgumentName=name, ArgumentValue=value[:64])
    return number


# upload id -> (bucket, key, checksum algorithm) of uploads this frontend created or read.
# An upload's algorithm never changes, so an entry is stale only by the upload having
# ended, which its next part's commit finds (``put_part`` answers NoSuchUpload and sends
# the part's chunks to GC).
_ALGORITHMS: Recent[str, tuple[str, str, str | None]] = Recent()


def _known_algorithm(uploads: Recent[str, tuple[str, str, str | None]], upload_id: str, bucket: str,
                     key: str) -> tuple[bool, str | None]:
    """(known, algorithm) of an upload remembered for this bucket and key."""
    found = uploads.get(upload_id)
    if found is None or found[:2] != (bucket, key):
        return False, None
    return True, found[2]


async def part_algorithm(ctx: Context, request: Any, bucket: str, key: str, upload_id: str) -> str | None:
    """The checksum algorithm an upload's parts default to, known before the part's body
    is stored; NoSuchUpload for an upload not found (or of another key). Read at most
    once per upload by this frontend (``_ALGORITHMS``), and then, for a user's key,
    behind its key look-up's barrier (``app._prefetch``), so a part costs its commit and,
    for a user's key, that look-up."""
    known, algorithm = _known_algorithm(_ALGORITHMS, upload_id, bucket, key)
    if known:
        return algorithm
    query = {"q": "upload", "upload_id": upload_id, "bucket": bucket, "key": key}
    prefetched = getattr(request.principal, "prefetched", None)
    if prefetched is not None and prefetched[0] == query:
        upload = prefetched[1]
        if not upload.get("ok"):
            raise from_reply(upload)
    else:
        upload = await meta_call(ctx.meta.read(query))
    algorithm = upload["meta"].get("checksum_algorithm")
    _ALGORITHMS.put(upload_id, (bucket, key, algorithm))
    return algorithm


# ---------------------------------------------------------------------- create / abort


async def create(ctx: Context, request: Any, bucket: str, key: str) -> Response:
    algorithm = request.headers.get("x-amz-checksum-algorithm", "").lower() or None
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported.")
    checksum_type = request.headers.get("x-amz-checksum-type", "").upper() or None
    if checksum_type is not None and (checksum_type not in CHECKSUM_TYPES or algorithm is None):
        raise S3Error("InvalidRequest", "The x-amz-checksum-type header needs a supported x-amz-checksum-algorithm.")
    if checksum_type == "FULL_OBJECT" and algorithm not in COMBINABLE:
        raise S3Error("InvalidRequest", f"The FULL_OBJECT checksum type cannot be used with the {algorithm} algorithm.")
    if algorithm is not None and checksum_type is None:
        checksum_type = "FULL_OBJECT" if algorithm == "crc64nvme" else "COMPOSITE"  # S3's defaults
    headers = stored_headers(request)
    tags = tagging.header_tags(request.headers.get("x-amz-tagging"))  # x-amz-tagging: the object's, at Complete
    lock = object_lock.lock_headers(request.headers)
    if lock:  # checked now, applied when the upload completes (a retention then still in the future)
        await object_lock.require_lock(ctx, bucket)
    upload_id = new_upload_id()
    await meta_call(ctx.meta.write({
        "op": "create_upload", "upload_id": upload_id, "bucket": bucket, "key": key, "ts": time.time(),
        "initiator": request.principal.user or "anonymous",
        "content_type": request.headers.get("content-type", "binary/octet-stream"),
        "meta": {"user": user_metadata(request), "headers": headers, "checksum_algorithm": algorithm,
                 "checksum_type": checksum_type, **({"lock": lock} if lock else {}), **acl.write_fields(request),
                 **({"tags": tags} if tags else {})},
    }))
    _ALGORITHMS.put(upload_id, (bucket, key, algorithm))
    response = xml_response(s3xml.initiate_upload(bucket, key, upload_id))
    if algorithm:
        response.headers["x-amz-checksum-algorithm"] = algorithm.upper()
        response.headers["x-amz-checksum-type"] = checksum_type
    return response


async def abort(ctx: Context, bucket: str, key: str, upload_id: str) -> Response:
    _ALGORITHMS.pop(upload_id)
    await meta_call(ctx.meta.write({"op": "abort_upload", "upload_id": upload_id, "bucket": bucket, "key": key,
                                    "ts": time.time()}))
    return empty_response(204)


# ---------------------------------------------------------------------- parts


async def upload_part(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    number = part_number(params)
    upload_id = params["uploadId"]
    algorithm = await part_algorithm(ctx, request, bucket, key, upload_id)
    if "x-amz-copy-source" in request.headers:
        stored = Stored()
        checksum = await _copy_into(ctx, request, stored, algorithm)
    else:
        body = UploadBody(request, request.auth, max_size=MAX_PART_SIZE, default_algorithm=algorithm)
        if algorithm is not None and body.checksum_algorithm != algorithm:  # every part's is the upload's
            raise S3Error("InvalidRequest", f"Checksum Type mismatch occurred, expected checksum Type: {algorithm}, "
                          f"actual checksum Type: {body.checksum_algorithm}")
        stored, checksum = await body.store(ctx.data)
    etag = stored.md5.hexdigest()
    part = {"size": stored.size, "etag": etag, "checksum": checksum, "chunks": stored.chunks}
    await meta_call(_commit_part(ctx, bucket, key, upload_id, number, part))
    if "x-amz-copy-source" in request.headers:
        return xml_response(s3xml.copy_part_result(etag, time.time()))
    return checksum_headers(empty_response(headers={"ETag": f'"{etag}"'}), checksum)


async def _commit_part(ctx: Context, bucket: str, key: str, upload_id: str, number: int,
                       part: dict[str, Any]) -> dict[str, Any]:
    # If the upload ended meanwhile, raftmeta itself sends these chunks to GC.
    return await ctx.meta.write({"op": "put_part", "upload_id": upload_id, "bucket": bucket, "key": key,
                                 "number": number, "part": part, "ts": time.time()})


def _copy_range(header: str | None, size: int) -> tuple[int, int]:
    if header is None:
        return 0, size - 1
    unit, _, spec = header.partition("=")
    first_s, dash, last_s = spec.partition("-")
    first, last = decimal(first_s), decimal(last_s)
    if unit != "bytes" or not dash or first is None or last is None:
        raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last "
                      "where first and last are the zero-based offsets of the first and last bytes to copy")
    if first > last or last >= size:
        raise S3Error("InvalidRange", ActualObjectSize=size, RangeRequested=header)
    return first, last


async def _copy_into(ctx: Context, request: Any, stored: Stored, algorithm: str | None) -> dict[str, str]:
    """UploadPartCopy: the source range moves blob nodes -> this frontend -> blob nodes,
    checked chunk by chunk on the way; never through the client."""
    src_bucket, src_key, src_vid = parse_copy_source(request.headers["x-amz-copy-source"])
    check = await iam.authorize(ctx, request.principal, src_bucket, "read")  # the source's own ACL too
    src = (await meta_call(ctx.meta.read(object_query(request, src_bucket, src_key, src_vid, check or {}))))["obj"]
    match = request.headers.get("x-amz-copy-source-if-match")
    if match is not None and match.strip('"') != src["etag"]:
        raise S3Error("PreconditionFailed", Condition="x-amz-copy-source-if-match")
    if src["size"] == 0:
        first, last = 0, -1
    else:
        first, last = _copy_range(request.headers.get("x-amz-copy-source-range"), src["size"])
    if last - first + 1 > MAX_PART_SIZE:
        raise S3Error("EntityTooLarge")
    checksum = new_checksum(algorithm) if algorithm else None

    async def pieces():  # noqa: ANN202
        if last >= first:
            async for piece in ctx.data.stream(src["chunks"], first, last):
                yield piece

    try:
        await ctx.data.store(pieces(), stored, checksum.update if checksum else None)
    except BaseException:
        await ctx.data.discard(stored.chunks)
        raise
    return {algorithm: checksum.b64digest()} if checksum else {}


# ---------------------------------------------------------------------- complete


def _parse_complete(body: bytes) -> list[tuple[int, str, dict[str, str]]]:
    root = s3xml.parse(body)
    if root is None or s3xml.local(root.tag) != "CompleteMultipartUpload":
        raise S3Error("MalformedXML")
    listed = []
    for part in root:
        if s3xml.local(part.tag) != "Part":
            raise S3Error("MalformedXML")
        fields = {s3xml.local(child.tag): (child.text or "").strip() for child in part}
        number, etag = decimal(fields.get("PartNumber")), fields.get("ETag")
        if number is None or etag is None:
            raise S3Error("MalformedXML")
        checksums = {name[len("Checksum"):].lower(): value for name, value in fields.items()
                     if name.startswith("Checksum") and name[len("Checksum"):].lower() in ALGORITHMS}
        listed.append((number, etag.strip('"'), checksums))
    if not listed:
        raise S3Error("MalformedXML")
    for (a, _, _), (b, _, _) in zip(listed, listed[1:], strict=False):
        if b <= a:
            raise S3Error("InvalidPartOrder")
    return listed


async def _all_parts(ctx: Context, bucket: str, key: str, upload_id: str) -> tuple[dict[str, Any], dict[int, dict]]:
    parts: dict[int, dict[str, Any]] = {}
    after = 0
    while True:
        page = await meta_call(ctx.meta.read({"q": "parts", "upload_id": upload_id, "bucket": bucket, "key": key,
                                              "after": after, "limit": 1000}))
        parts.update((p["number"], p) for p in page["parts"])
        if not page["truncated"]:
            return page["upload"], parts
        after = page["parts"][-1]["number"]


async def complete(ctx: Context, request: Any, bucket: str, key: str, upload_id: str) -> Response:
    cond = conditions.write_condition(request.headers)
    listed = _parse_complete(await read_body(request, MAX_COMPLETE_BODY))
    try:
        upload, parts = await _all_parts(ctx, bucket, key, upload_id)
    except S3Error as exc:
        if exc.code != "NoSuchUpload":
            raise
        return await _retried_complete(ctx, request, bucket, key, upload_id, listed)
    if cond and isinstance(upload.get("created"), (int, float)):
        cond["since"] = upload["created"]  # a delete after the initiation: AWS's 409
    algorithm = upload["meta"].get("checksum_algorithm")
    md5s = hashlib.md5()
    composite = new_checksum(algorithm) if algorithm else None
    for number, etag, checksums in listed:
        part = parts.get(number)
        if part is None or part["etag"] != etag:
            raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=number, ETag=etag)
        for algo, value in checksums.items():
            if part["checksum"].get(algo) != value:
                raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=number, ETag=etag)
        if algorithm and algorithm not in part["checksum"]:  # stored before parts had to carry the upload's
            raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=number, ETag=etag)
        md5s.update(bytes.fromhex(part["etag"]))
        if composite is not None:
            composite.update(base64.b64decode(part["checksum"][algorithm]))
    etag = f"{md5s.hexdigest()}-{len(listed)}"
    meta = upload["meta"]
    checksum: dict[str, str] = {}
    if algorithm and meta.get("checksum_type") == "FULL_OBJECT":
        checksum = {algorithm: combine_b64(algorithm, [(parts[n]["checksum"][algorithm], parts[n]["size"])
                                                       for n, _, _ in listed])}
        expected = request.headers.get(f"x-amz-checksum-{algorithm}")
        if expected is not None and expected != checksum[algorithm]:
            raise S3Error("BadDigest", f"The {algorithm.upper()} you specified for the whole object did not match "
                          "the one calculated from its parts.")
    elif composite is not None:
        checksum = {algorithm: f"{composite.b64digest()}-{len(listed)}"}
        expected = request.headers.get(f"x-amz-checksum-{algorithm}")
        if expected is not None and expected.strip() not in (checksum[algorithm], composite.b64digest()):
            raise S3Error("BadDigest", f"The {algorithm.upper()} you specified for the whole object did not match "
                          "the one calculated from its parts.")
    now = time.time()
    obj = {"etag": etag, "sha256": "", "content_type": upload["content_type"], "created": now,
           "meta": {"user": meta.get("user", {}), "headers": meta.get("headers", {}), "checksum": checksum,
                    "checksum_type": meta.get("checksum_type"), **meta.get("lock", {}),
                    **{k: meta[k] for k in ("acl_spec", "writer", "tags") if k in meta}}}
    reply = await ctx.meta.write({"op": "complete_upload", "upload_id": upload_id, "bucket": bucket, "key": key,
                                  "parts": [[n, e] for n, e, _ in listed], "obj": obj, "ts": now, "cond": cond,
                                  "part_checksums": True})
    if not reply.get("ok"):
        raise from_reply(reply)
    _ALGORITHMS.pop(upload_id)
    response = _complete_response(request, bucket, key, reply["etag"], checksum, meta.get("checksum_type"))
    response.headers.update(version_headers(reply.get("vid")))
    return response


async def _retried_complete(ctx: Context, request: Any, bucket: str, key: str, upload_id: str,
                            listed: list[tuple[int, str, dict[str, str]]]) -> Response:
    """The upload is gone: if it was completed with this same part list, answer as then."""
    reply = await ctx.meta.write({"op": "complete_upload", "upload_id": upload_id, "bucket": bucket, "key": key,
                                  "parts": [[n, e] for n, e, _ in listed], "obj": {}, "ts": time.time()})
    if not reply.get("ok"):
        raise from_reply(reply)
    obj = (await meta_call(ctx.meta.read({"q": "object", "bucket": bucket, "key": key})))["obj"]
    same = obj["etag"] == reply["etag"]
    checksum = obj["meta"].get("checksum", {}) if same else {}
    response = _complete_response(request, bucket, key, reply["etag"], checksum,
                                  obj["meta"].get("checksum_type") if same else None)
    response.headers.update(version_headers(reply.get("vid")))
    return response


def _complete_response(request: Any, bucket: str, key: str, etag: str, checksum: dict[str, str],
                       checksum_type: str | None) -> Response:
    location = f"{request.scheme}://{request.host}/{bucket}/{key}"
    return xml_response(s3xml.complete_upload(location, bucket, key, etag, checksum, checksum_type))


# ---------------------------------------------------------------------- listings


async def list_parts(ctx: Context, bucket: str, key: str, params: dict[str, str]) -> Response:
    upload_id = params["uploadId"]
    max_parts = decimal(params.get("max-parts", "1000"))
    marker = decimal(params.get("part-number-marker", "0"))
    if max_parts is None or marker is None:
        raise S3Error("InvalidArgument", "max-parts and part-number-marker must be non-negative integers")
    max_parts = min(max_parts, 1000)
    page = await meta_call(ctx.meta.read({"q": "parts", "upload_id": upload_id, "bucket": bucket, "key": key,
                                          "after": marker, "limit": max_parts}))
    return xml_response(s3xml.list_parts(bucket, key, upload_id, page, marker, max_parts))


async def list_uploads(ctx: Context, bucket: str, params: dict[str, str]) -> Response:
    max_uploads = decimal(params.get("max-uploads", "1000"))
    if max_uploads is None:
        raise S3Error("InvalidArgument", "max-uploads must be a non-negative integer", ArgumentName="max-uploads")
    encoding = encoding_type(params)
    p = {"prefix": params.get("prefix", ""), "delimiter": params.get("delimiter", ""),
         "key_marker": params.get("key-marker", ""), "upload_id_marker": params.get("upload-id-marker", ""),
         "max_uploads": min(max_uploads, 1000), "encoding_type": encoding}
    page = await meta_call(ctx.meta.read({"q": "uploads", "bucket": bucket, **p}))
    return xml_response(s3xml.list_uploads(bucket, page, p))


# ---------------------------------------------------------------------- reading parts back


def part_range(obj: dict[str, Any], number: int) -> tuple[int, int, int]:
    """(first byte, last byte, parts count) of part ``number`` of a stored object."""
    table = obj.get("meta", {}).get("parts") or [[obj["size"], obj["etag"], len(obj["chunks"])]]
    if number > len(table):
        raise S3Error("InvalidPartNumber", PartNumberRequested=number, ActualPartCount=len(table))
    first = sum(p[0] for p in table[: number - 1])
    return first, first + table[number - 1][0] - 1, len(table)
