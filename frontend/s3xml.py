"""XML documents of the S3 API: rendering responses and parsing request bodies."""

from __future__ import annotations

import functools
import re
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as DefusedET

from core.acl import canonical_id
from frontend.errors import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
MAX_XML_BODY = 1024 * 1024
_CR = {"\r": "&#13;"}  # a bare CR would reach the client as LF (XML's line-end normalization)


@functools.lru_cache(maxsize=4096)
def _iso_seconds(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


_MILLIS = tuple(f".{n:03d}Z" for n in range(1000))


def iso8601(ts: float) -> str:
    # Objects written together share their second: a listing page formats few of them.
    return _iso_seconds(int(ts)) + _MILLIS[int(ts * 1000) % 1000]


_ESCAPED = re.compile(r"[&<>\r]").search


def _text(value: str) -> str:
    """``value`` as XML text; most keys need no escaping, and finding that is cheaper."""
    return escape(value, _CR) if _ESCAPED(value) else value


def _el(name: str, value: Any) -> str:
    return f"<{name}>{escape(str(value), _CR)}</{name}>"


def _key(value: str, url: bool) -> str:
    # encoding-type=url: keys and prefixes are percent-encoded (as AWS does, '/' kept).
    if url:
        return quote(value, safe="/~")
    # XML 1.0 cannot carry most control characters: such keys need encoding-type=url.
    return value


def list_buckets(buckets: list[list[Any]], owner: str, token: str | None = None, prefix: str | None = None) -> bytes:
    """ListAllMyBucketsResult; ``token``: the next page's ContinuationToken, ``prefix``
    the Prefix asked for (both only when there is one)."""
    items = "".join(
        f"<Bucket>{_el('Name', name)}{_el('CreationDate', iso8601(created))}</Bucket>" for name, created in buckets
    )
    return (
        f'{HEAD}<ListAllMyBucketsResult xmlns="{NS}">{_owner(owner)}'
        f"<Buckets>{items}</Buckets>{_el('ContinuationToken', token) if token else ''}"
        f"{_el('Prefix', prefix) if prefix is not None else ''}</ListAllMyBucketsResult>"
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
    owner = "" if v2 and not params.get("fetch_owner") else _owner(params["owner"])
    out.extend(_page_tail(page, params, url, "Contents", "", owner))
    out.append("</ListBucketResult>")
    return "".join(out).encode()


def _principal(user: str) -> str:
    """A user as S3 names one: its canonical id and display name."""
    return f"{_el('ID', canonical_id(user))}{_el('DisplayName', user)}"


def _owner(owner: str) -> str:
    return f"<Owner>{_principal(owner)}</Owner>"


def _page_tail(page: dict[str, Any], params: dict[str, Any], url: bool, tag: str, fields: str,
               owner: str) -> list[str]:
    """What every listing ends with: MaxKeys, Delimiter, EncodingType, IsTruncated, one
    ``tag`` element per object (with ``fields`` after its key), the common prefixes."""
    out = [_el("MaxKeys", params["max_keys"])]
    if params.get("delimiter"):
        out.append(_el("Delimiter", _key(params["delimiter"], url)))
    if url:
        out.append(_el("EncodingType", "url"))
    out.append(_el("IsTruncated", "true" if page["truncated"] else "false"))
    # ETags are hex digests (with a -N part count) and sizes are ints: only keys need escaping.
    # Rows are [key, size, etag, created] (``q_list`` with ``rows``).
    out.extend(
        f"<{tag}><Key>{_text(_key(key, url))}</Key>{fields}<LastModified>{iso8601(created)}"
        f"</LastModified><ETag>&quot;{etag}&quot;</ETag><Size>{int(size)}</Size>"
        f"<StorageClass>STANDARD</StorageClass>{owner}</{tag}>"
        for key, size, etag, created in page["contents"]
    )
    out.extend(f"<CommonPrefixes>{_el('Prefix', _key(prefix, url))}</CommonPrefixes>" for prefix in page["prefixes"])
    return out


def list_versions(page: dict[str, Any], params: dict[str, Any]) -> bytes:
    """ListVersionsResult: versions and delete markers in order (key ascending, newest
    first), then the common prefixes."""
    url = params.get("encoding_type") == "url"
    owner = _owner(params["owner"])
    out = [f'{HEAD}<ListVersionsResult xmlns="{NS}">', _el("Name", params["bucket"]),
           _el("Prefix", _key(params["prefix"], url)), _el("KeyMarker", _key(params["key_marker"], url)),
           _el("VersionIdMarker", params["version_marker"])]
    if page["truncated"]:
        out.append(_el("NextKeyMarker", _key(page["next_key"], url)))
        if page.get("next_vid"):
            out.append(_el("NextVersionIdMarker", page["next_vid"]))
    out.append(_el("MaxKeys", params["max_keys"]))
    if params.get("delimiter"):
        out.append(_el("Delimiter", _key(params["delimiter"], url)))
    if url:
        out.append(_el("EncodingType", "url"))
    out.append(_el("IsTruncated", "true" if page["truncated"] else "false"))
    for item in page["entries"]:
        head = (f"<Key>{escape(_key(item['key'], url), _CR)}</Key><VersionId>{item['vid']}</VersionId>"
                f"<IsLatest>{'true' if item['latest'] else 'false'}</IsLatest>"
                f"<LastModified>{iso8601(item['created'])}</LastModified>")
        if item["marker"]:
            out.append(f"<DeleteMarker>{head}{owner}</DeleteMarker>")
        else:
            out.append(f"<Version>{head}<ETag>&quot;{item['etag']}&quot;</ETag><Size>{int(item['size'])}</Size>"
                       f"<StorageClass>STANDARD</StorageClass>{owner}</Version>")
    out.extend(f"<CommonPrefixes>{_el('Prefix', _key(prefix, url))}</CommonPrefixes>" for prefix in page["prefixes"])
    out.append("</ListVersionsResult>")
    return "".join(out).encode()


def location(region: str) -> bytes:
    value = "" if region == "us-east-1" else escape(region)
    return f'{HEAD}<LocationConstraint xmlns="{NS}">{value}</LocationConstraint>'.encode()


def parse(body: bytes) -> ET.Element | None:
    """Parse a request body; empty -> None; anything not well-formed -> MalformedXML."""
    if not body.strip():
        return None
    try:
        # defusedxml refuses any DTD (and so any entity) from the parser's own events,
        # whatever the document's encoding: a byte search for "<!DOCTYPE" missed UTF-16.
        return DefusedET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError):
        raise S3Error("MalformedXML") from None


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _checksums(checksum: dict[str, str]) -> str:
    return "".join(_el(f"Checksum{algo.upper()}", value) for algo, value in checksum.items())


def initiate_upload(bucket: str, key: str, upload_id: str) -> bytes:
    return (f'{HEAD}<InitiateMultipartUploadResult xmlns="{NS}">{_el("Bucket", bucket)}{_el("Key", key)}'
            f"{_el('UploadId', upload_id)}</InitiateMultipartUploadResult>").encode()


def complete_upload(location: str, bucket: str, key: str, etag: str, checksum: dict[str, str],
                    checksum_type: str | None = None) -> bytes:
    kind = _el("ChecksumType", checksum_type) if checksum and checksum_type else ""
    return (f'{HEAD}<CompleteMultipartUploadResult xmlns="{NS}">{_el("Location", location)}{_el("Bucket", bucket)}'
            f'{_el("Key", key)}{_el("ETag", f"{chr(34)}{etag}{chr(34)}")}{_checksums(checksum)}{kind}'
            "</CompleteMultipartUploadResult>").encode()


def list_parts(bucket: str, key: str, upload_id: str, page: dict[str, Any], marker: int, max_parts: int) -> bytes:
    upload = page["upload"]
    owner = _principal(upload["initiator"])
    out = [f'{HEAD}<ListPartsResult xmlns="{NS}">', _el("Bucket", bucket), _el("Key", key), _el("UploadId", upload_id),
           f"<Initiator>{owner}</Initiator><Owner>{owner}</Owner><StorageClass>STANDARD</StorageClass>",
           _el("PartNumberMarker", marker)]
    if page["parts"]:
        out.append(_el("NextPartNumberMarker", page["parts"][-1]["number"]))
    out += [_el("MaxParts", max_parts), _el("IsTruncated", "true" if page["truncated"] else "false")]
    algo = upload["meta"].get("checksum_algorithm")
    if algo:
        out.append(_el("ChecksumAlgorithm", algo.upper()))
    for part in page["parts"]:
        out.append("<Part>" + _el("PartNumber", part["number"]) + _el("LastModified", iso8601(part["created"]))
                   + _el("ETag", f'"{part["etag"]}"') + _el("Size", part["size"]) + _checksums(part["checksum"])
                   + "</Part>")
    out.append("</ListPartsResult>")
    return "".join(out).encode()


def list_uploads(bucket: str, page: dict[str, Any], params: dict[str, Any]) -> bytes:
    url = params.get("encoding_type") == "url"
    out = [f'{HEAD}<ListMultipartUploadsResult xmlns="{NS}">', _el("Bucket", bucket),
           _el("KeyMarker", _key(params["key_marker"], url)), _el("UploadIdMarker", params["upload_id_marker"])]
    if page["truncated"]:
        last_key = page["uploads"][-1]["key"] if page["uploads"] else ""
        last_prefix = page["prefixes"][-1] if page["prefixes"] else ""
        if last_prefix > last_key:
            out += [_el("NextKeyMarker", _key(last_prefix, url)), _el("NextUploadIdMarker", "")]
        else:
            out += [_el("NextKeyMarker", _key(last_key, url)), _el("NextUploadIdMarker", page["uploads"][-1]["upload_id"])]
    out += [_el("Prefix", _key(params["prefix"], url)), _el("MaxUploads", params["max_uploads"]),
            _el("IsTruncated", "true" if page["truncated"] else "false")]
    if params["delimiter"]:
        out.append(_el("Delimiter", _key(params["delimiter"], url)))
    if url:
        out.append(_el("EncodingType", "url"))
    for up in page["uploads"]:
        who = _principal(up["initiator"])
        out.append("<Upload>" + _el("Key", _key(up["key"], url)) + _el("UploadId", up["upload_id"])
                   + f"<Initiator>{who}</Initiator><Owner>{who}</Owner><StorageClass>STANDARD</StorageClass>"
                   + _el("Initiated", iso8601(up["created"])) + "</Upload>")
    for prefix in page["prefixes"]:
        out.append(f"<CommonPrefixes>{_el('Prefix', _key(prefix, url))}</CommonPrefixes>")
    out.append("</ListMultipartUploadsResult>")
    return "".join(out).encode()


def copy_part_result(etag: str, created: float) -> bytes:
    return (f'{HEAD}<CopyPartResult xmlns="{NS}">{_el("LastModified", iso8601(created))}'
            f'{_el("ETag", f"{chr(34)}{etag}{chr(34)}")}</CopyPartResult>').encode()
