"""GetObjectAttributes: ``GET /bucket/key?attributes`` with ``x-amz-object-attributes``.

The attributes a client names (ETag, Checksum, ObjectParts, StorageClass, ObjectSize)
come from the version's manifest alone: no byte is read. The version is addressed as
GET addresses it (``versionId``; a latest delete marker is 404, a version id naming
one 405, both with ``x-amz-delete-marker``), and the answer carries ``Last-Modified``
and ``x-amz-version-id`` like GET's.

- ETag is unquoted, as AWS sends it here (GET's header is quoted).
- Checksum: the object's stored checksum with its ChecksumType; a multipart object's
  COMPOSITE value keeps its ``-N`` suffix, a FULL_OBJECT one is the whole object's CRC.
- ObjectParts only for an object built by CompleteMultipartUpload: PartsCount (the
  element AWS sends and the SDKs read; the documentation calls it TotalPartsCount),
  paged by ``x-amz-part-number-marker`` (parts after it) and ``x-amz-max-parts``
  (default and at most 1,000), each Part with its number, size and checksums. AWS's
  general purpose buckets leave Part out when the upload had no additional checksum;
  Cairn lists the parts either way (as AWS's directory buckets do: a client gets the
  part sizes it needs for part-wise downloads, and one written for AWS ignores them).
  Parts of uploads completed before part checksums were kept have no checksums.
"""

from __future__ import annotations

import email.utils
from typing import Any

from quart import Response

from frontend.context import Context, decimal, meta_call, object_query, version_headers, version_param, xml_response
from frontend.errors import S3Error
from frontend.s3xml import HEAD, NS, _checksums, _el

ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
MAX_PARTS = 1000
STORAGE_CLASS = "STANDARD"


def parse_attributes(header: str | None) -> set[str]:
    """The attribute names of ``x-amz-object-attributes`` (a comma-separated list, as
    an SDK sends it; AWS's exact spellings). Missing, empty or an unknown name:
    InvalidArgument."""
    names = {name.strip() for name in (header or "").split(",") if name.strip()}
    if not names:
        raise S3Error("InvalidArgument", "The x-amz-object-attributes header specifying the attributes to be "
                      "retrieved is either missing or empty", ArgumentName="x-amz-object-attributes")
    unknown = sorted(names - set(ATTRIBUTES))
    if unknown:
        raise S3Error("InvalidArgument", "Invalid attribute name specified.", ArgumentName="x-amz-object-attributes",
                      ArgumentValue=unknown[0][:64])
    return names


def parse_paging(headers: Any) -> tuple[int, int]:
    """(part number marker, max parts) from ``x-amz-part-number-marker`` (default 0)
    and ``x-amz-max-parts`` (default 1,000; more is 1,000)."""
    out = []
    for name, default in (("x-amz-part-number-marker", 0), ("x-amz-max-parts", MAX_PARTS)):
        value = headers.get(name)
        number = default if value is None else decimal(value.strip())
        if number is None:
            raise S3Error("InvalidArgument", f"{name} must be a non-negative integer", ArgumentName=name,
                          ArgumentValue=value[:64])
        out.append(number)
    return out[0], min(out[1], MAX_PARTS)


def part_table(obj: dict[str, Any]) -> list[list[Any]] | None:
    """A multipart object's parts ([size, etag, chunk count, {algorithm: base64}?]), else None."""
    return obj.get("meta", {}).get("parts") or None


def part_checksum(entry: list[Any]) -> dict[str, str]:
    """The checksums kept for one part of the part table (none for older objects)."""
    return entry[3] if len(entry) > 3 and isinstance(entry[3], dict) else {}


def checksum_type(obj: dict[str, Any]) -> str:
    return obj.get("meta", {}).get("checksum_type") or "FULL_OBJECT"


def part_checksum_headers(obj: dict[str, Any], number: int) -> dict[str, str]:
    """The checksum headers of a GET of part ``number`` (checksum mode enabled): that
    part's own checksum with the object's ChecksumType, as S3 answers; an object not
    built from parts is its own part 1, whose checksum is the object's."""
    table = part_table(obj)
    if table is None:
        checksum = obj.get("meta", {}).get("checksum") or {}
    else:
        checksum = part_checksum(table[number - 1])
    headers = {f"x-amz-checksum-{algo}": value for algo, value in checksum.items()}
    if headers:
        headers["x-amz-checksum-type"] = checksum_type(obj)
    return headers


def render(obj: dict[str, Any], names: set[str], marker: int = 0, max_parts: int = MAX_PARTS) -> bytes:
    """The GetObjectAttributesResponse document for a version's manifest."""
    out = [f'{HEAD}<GetObjectAttributesResponse xmlns="{NS}">']
    if "ETag" in names:
        out.append(_el("ETag", obj["etag"]))
    checksum = obj.get("meta", {}).get("checksum") or {}
    if "Checksum" in names and checksum:
        out.append(f"<Checksum>{_checksums(checksum)}{_el('ChecksumType', checksum_type(obj))}</Checksum>")
    table = part_table(obj)
    if "ObjectParts" in names and table is not None:
        after = [(n, entry) for n, entry in enumerate(table, 1) if n > marker]
        page = after[:max_parts]
        out += ["<ObjectParts>", _el("PartsCount", len(table)), _el("PartNumberMarker", marker)]
        if page:
            out.append(_el("NextPartNumberMarker", page[-1][0]))
        out += [_el("MaxParts", max_parts), _el("IsTruncated", "true" if len(after) > len(page) else "false")]
        for number, entry in page:
            out.append(f"<Part>{_el('PartNumber', number)}{_el('Size', entry[0])}"
                       f"{_checksums(part_checksum(entry))}</Part>")
        out.append("</ObjectParts>")
    if "StorageClass" in names:
        out.append(_el("StorageClass", STORAGE_CLASS))
    if "ObjectSize" in names:
        out.append(_el("ObjectSize", obj["size"]))
    out.append("</GetObjectAttributesResponse>")
    return "".join(out).encode()


async def get_object_attributes(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    names = parse_attributes(request.headers.get("x-amz-object-attributes"))
    marker, max_parts = parse_paging(request.headers)
    obj = (await meta_call(ctx.meta.read(object_query(request, bucket, key, version_param(params)))))["obj"]
    response = xml_response(render(obj, names, marker, max_parts))
    response.headers["Last-Modified"] = email.utils.formatdate(obj["created"], usegmt=True)
    response.headers.update(version_headers(obj.get("vid")))
    return response
