"""ListObjectVersions (``GET /bucket?versions``): every version and delete marker, key
ascending and newest first within a key, with prefix, delimiter, max-keys and
encoding-type; a bucket never versioned lists each object as its ``null`` version.
Paging follows S3: ``key-marker`` alone continues after that key, with
``version-id-marker`` after that version of it; a truncated page names
NextKeyMarker and, after a version, NextVersionIdMarker."""

from __future__ import annotations

from typing import Any

from quart import Response

from frontend import s3xml
from frontend.context import Context, encoding_type, meta_call_many, xml_response
from frontend.errors import S3Error
from frontend.s3.bucket import max_keys


async def list_object_versions(ctx: Context, bucket: str, params: dict[str, str]) -> Response:
    key_marker = params.get("key-marker", "")
    version_marker = params.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise S3Error("InvalidArgument", "A version-id marker cannot be specified without a key marker.",
                      ArgumentName="version-id-marker", ArgumentValue=version_marker)
    p: dict[str, Any] = {
        "bucket": bucket, "prefix": params.get("prefix", ""), "delimiter": params.get("delimiter", ""),
        "max_keys": max_keys(params), "encoding_type": encoding_type(params), "key_marker": key_marker,
        "version_marker": version_marker,
    }
    bucket_info, page = await meta_call_many(ctx, [{"q": "bucket", "bucket": bucket}, {
        "q": "list_versions", "bucket": bucket, "prefix": p["prefix"], "delimiter": p["delimiter"],
        "key_marker": key_marker, "vid_marker": version_marker or None, "max_keys": p["max_keys"],
    }])
    p["owner"] = bucket_info["owner"]
    return xml_response(s3xml.list_versions(page, p))
