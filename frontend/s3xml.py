"""XML documents of the S3 API: rendering responses and parsing request bodies."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from frontend.errors import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
MAX_XML_BODY = 1024 * 1024


def iso8601(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _el(name: str, value: Any) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def _key(value: str, url: bool) -> str:
    # encoding-type=url: keys and prefixes are percent-encoded (as AWS does, '/' kept).
    if url:
        return quote(value, safe="/~")
    # XML 1.0 cannot carry most control characters: such keys need encoding-type=url.
    return value


def list_buckets(buckets: list[list[Any]], owner: str) -> bytes:
    items = "".join(
        f"<Bucket>{_el('Name', name)}{_el('CreationDate', iso8601(created))}</Bucket>" for name, created in buckets
    )
    return (
        f'{HEAD}<ListAllMyBucketsResult xmlns="{NS}"><Owner>{_el("ID", owner)}{_el("DisplayName", owner)}</Owner>'
        f"<Buckets>{items}</Buckets></ListAllMyBucketsResult>"
    ).encode()


def list_objects(page: dict[str, Any], params: dict[str, Any], v2: bool) -> bytes:
    url = params.get("encoding_type") == "url"
    out = [f'{HEAD}<ListBucketResult xmlns="{NS}">', _el("Name", params["bucket"])]
    out.append(_el("Prefix", _key(params.get("prefix", ""), url)))
    if v2:
        if params.get("start_after"):
            out.append(_el("StartAfter", _key(params["start_after"], url)))
        if params.get("token") is not None:
            out.append(_el("ContinuationToken", params["token"]))
        if page["truncated"]:
            out.append(_el("NextContinuationToken", params["next_token"]))
        out.append(_el("KeyCount", len(page["contents"]) + len(page["prefixes"])))
    else:
        out.append(_el("Marker", _key(params.get("marker", ""), url)))
        if page["truncated"] and params.get("delimiter"):
            out.append(_el("NextMarker", _key(page["last"], url)))
    out.append(_el("MaxKeys", params["max_keys"]))
    if params.get("delimiter"):
        out.append(_el("Delimiter", _key(params["delimiter"], url)))
    if url:
        out.append(_el("EncodingType", "url"))
    out.append(_el("IsTruncated", "true" if page["truncated"] else "false"))
    for item in page["contents"]:
        out.append(
            "<Contents>"
            + _el("Key", _key(item["key"], url))
            + _el("LastModified", iso8601(item["created"]))
            + _el("ETag", f'"{item["etag"]}"')
            + _el("Size", item["size"])
            + "<StorageClass>STANDARD</StorageClass>"
            + ("" if v2 and not params.get("fetch_owner") else f"<Owner>{_el('ID', params['owner'])}{_el('DisplayName', params['owner'])}</Owner>")
            + "</Contents>"
        )
    for prefix in page["prefixes"]:
        out.append(f"<CommonPrefixes>{_el('Prefix', _key(prefix, url))}</CommonPrefixes>")
    out.append("</ListBucketResult>")
    return "".join(out).encode()


def location(region: str) -> bytes:
    value = "" if region == "us-east-1" else escape(region)
    return f'{HEAD}<LocationConstraint xmlns="{NS}">{value}</LocationConstraint>'.encode()


def parse(body: bytes) -> ET.Element | None:
    """Parse a request body; empty -> None; anything not well-formed -> MalformedXML."""
    if not body.strip():
        return None
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise S3Error("MalformedXML")
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        raise S3Error("MalformedXML") from None


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
