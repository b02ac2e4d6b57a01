"""GetObjectAttributes: the x-amz-object-attributes and paging headers, the response
document (read back with botocore's own parser, as an SDK reads it), the part checksum
headers of a GET by part number, and the part checksums Complete keeps in the state
machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.parsers import RestXMLParser

from frontend.errors import S3Error
from frontend.s3 import attributes
from frontend.s3xml import parse
from tests.unit.metastate import Replica, chunk, create, replica

ALL = set(attributes.ATTRIBUTES)
MIB = 1024 * 1024


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


def sdk_parse(body: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The response as boto3 gives it to a caller."""
    model = botocore.session.get_session().get_service_model("s3").operation_model("GetObjectAttributes")
    parsed = RestXMLParser().parse({"body": body, "headers": headers or {}, "status_code": 200},
                                   model.output_shape)
    parsed.pop("ResponseMetadata", None)
    return parsed


def plain(checksum: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"etag": "acbd18db4cc2f85cedef654fccc4a4d8", "size": 3, "created": 1.5,
            "meta": {"checksum": checksum or {}, **meta}, "chunks": []}


def multipart_obj(n: int = 3, checksums: bool = True) -> dict[str, Any]:
    table = [[5 * MIB if i < n else 7, f"e{i}", 1] + ([{"sha256": f"c{i}="}] if checksums else [])
             for i in range(1, n + 1)]
    return {"etag": f"abc-{n}", "size": sum(p[0] for p in table), "created": 1.0, "chunks": [],
            "meta": {"parts": table, "checksum": {"sha256": f"comp=-{n}"} if checksums else {},
                     "checksum_type": "COMPOSITE" if checksums else None}}


# ---------------------------------------------------------------------- request headers


def test_attribute_names() -> None:
    assert attributes.parse_attributes("ETag,Checksum,ObjectParts,StorageClass,ObjectSize") == ALL
    assert attributes.parse_attributes(" ETag , ObjectSize ,") == {"ETag", "ObjectSize"}


@pytest.mark.parametrize("header", [None, "", " , ", "Etag", "ETag,Owner", "etag"])
def test_missing_or_unknown_attribute_is_invalid_argument(header: str | None) -> None:
    with pytest.raises(S3Error) as exc:
        attributes.parse_attributes(header)
    assert exc.value.code == "InvalidArgument"


def test_paging_headers() -> None:
    assert attributes.parse_paging({}) == (0, 1000)
    assert attributes.parse_paging({"x-amz-part-number-marker": "3", "x-amz-max-parts": "1"}) == (3, 1)
    assert attributes.parse_paging({"x-amz-max-parts": "5000"}) == (0, 1000)
    for bad in ("-1", "x", "1.5", "9" * 19):
        with pytest.raises(S3Error) as exc:
            attributes.parse_paging({"x-amz-max-parts": bad})
        assert exc.value.code == "InvalidArgument"


# ---------------------------------------------------------------------- the document


def test_plain_object() -> None:
    out = sdk_parse(attributes.render(plain({"sha256": "arcu6553sHVAiX4MjW0j7I7vD4w6R+Gz9Ok0Q9lTa+0="}), ALL))
    assert out == {"ETag": "acbd18db4cc2f85cedef654fccc4a4d8", "StorageClass": "STANDARD", "ObjectSize": 3,
                   "Checksum": {"ChecksumSHA256": "arcu6553sHVAiX4MjW0j7I7vD4w6R+Gz9Ok0Q9lTa+0=",
                                "ChecksumType": "FULL_OBJECT"}}


def test_only_what_is_asked_and_no_checksum_when_none() -> None:
    assert sdk_parse(attributes.render(plain(), ALL)) == {"ETag": "acbd18db4cc2f85cedef654fccc4a4d8",
                                                          "StorageClass": "STANDARD", "ObjectSize": 3}
    assert sdk_parse(attributes.render(plain({"crc32": "AAAAAA=="}), {"ObjectSize"})) == {"ObjectSize": 3}


def test_document_is_namespaced_and_well_formed() -> None:
    root = parse(attributes.render(multipart_obj(), ALL))
    assert root is not None and root.tag == "{http://s3.amazonaws.com/doc/2006-03-01/}GetObjectAttributesResponse"
    assert [child.tag.split("}")[1] for child in root] == list(attributes.ATTRIBUTES)


def test_multipart_object_all_parts() -> None:
    out = sdk_parse(attributes.render(multipart_obj(), ALL))
    assert out["ETag"] == "abc-3"
    assert out["Checksum"] == {"ChecksumSHA256": "comp=-3", "ChecksumType": "COMPOSITE"}
    parts = out["ObjectParts"]
    assert parts["TotalPartsCount"] == 3 and parts["PartNumberMarker"] == 0 and parts["MaxParts"] == 1000
    assert parts["IsTruncated"] is False and parts["NextPartNumberMarker"] == 3
    assert parts["Parts"] == [{"PartNumber": 1, "Size": 5 * MIB, "ChecksumSHA256": "c1="},
                              {"PartNumber": 2, "Size": 5 * MIB, "ChecksumSHA256": "c2="},
                              {"PartNumber": 3, "Size": 7, "ChecksumSHA256": "c3="}]
    assert out["ObjectSize"] == 10 * MIB + 7


def test_multipart_paging() -> None:
    obj = multipart_obj(6, checksums=False)
    page = sdk_parse(attributes.render(obj, {"ObjectParts"}, marker=3, max_parts=1))["ObjectParts"]
    assert (page["PartNumberMarker"], page["NextPartNumberMarker"], page["MaxParts"], page["IsTruncated"]) == (
        3, 4, 1, True)
    assert page["Parts"] == [{"PartNumber": 4, "Size": 5 * MIB}]
    page = sdk_parse(attributes.render(obj, {"ObjectParts"}, marker=4, max_parts=10))["ObjectParts"]
    assert page["IsTruncated"] is False and [p["PartNumber"] for p in page["Parts"]] == [5, 6]
    page = sdk_parse(attributes.render(obj, {"ObjectParts"}, marker=6))["ObjectParts"]
    assert page["TotalPartsCount"] == 6 and "Parts" not in page and "NextPartNumberMarker" not in page


def test_parts_of_objects_completed_before_part_checksums_were_kept() -> None:
    obj = multipart_obj(2, checksums=False)
    obj["meta"]["checksum"] = {"crc32": "AAAAAA=="}  # the whole object's, kept then too
    obj["meta"]["checksum_type"] = "FULL_OBJECT"
    out = sdk_parse(attributes.render(obj, ALL))
    assert out["ObjectParts"]["Parts"] == [{"PartNumber": 1, "Size": 5 * MIB}, {"PartNumber": 2, "Size": 7}]
    assert out["Checksum"] == {"ChecksumCRC32": "AAAAAA==", "ChecksumType": "FULL_OBJECT"}


def test_etag_and_values_are_escaped() -> None:
    body = attributes.render({**plain(), "etag": "a<&>b"}, {"ETag"})
    assert b"<ETag>a&lt;&amp;&gt;b</ETag>" in body


def test_part_checksum_headers() -> None:
    obj = multipart_obj()
    assert attributes.part_checksum_headers(obj, 2) == {"x-amz-checksum-sha256": "c2=",
                                                         "x-amz-checksum-type": "COMPOSITE"}
    assert attributes.part_checksum_headers(multipart_obj(checksums=False), 1) == {}
    assert attributes.part_checksum_headers(plain({"crc64nvme": "Qeh8oXvGiSo="}), 1) == {
        "x-amz-checksum-crc64nvme": "Qeh8oXvGiSo=", "x-amz-checksum-type": "FULL_OBJECT"}


# ---------------------------------------------------------------------- the state machine


def _upload(rep: Replica, upload_id: str, key: str, checksums: list[dict[str, str]]) -> list[list[Any]]:
    rep.apply({"op": "create_upload", "upload_id": upload_id, "bucket": "b", "key": key, "ts": 1.0,
               "meta": {"checksum_algorithm": "sha256", "checksum_type": "COMPOSITE"}})
    for n, checksum in enumerate(checksums, 1):
        rep.apply({"op": "put_part", "upload_id": upload_id, "bucket": "b", "key": key, "number": n, "ts": 1.0,
                   "part": {"size": 5 * MIB if n < len(checksums) else 9, "etag": f"e{n}", "checksum": checksum,
                            "chunks": [chunk(f"{upload_id}-{n}")]}})
    return [[n, f"e{n}"] for n in range(1, len(checksums) + 1)]


def _complete(rep: Replica, upload_id: str, key: str, listed: list[list[Any]], **extra: Any) -> dict[str, Any]:
    obj = {"etag": "x-2", "sha256": "", "content_type": "a/b", "created": 2.0, "meta": {}}
    reply = rep.apply({"op": "complete_upload", "upload_id": upload_id, "bucket": "b", "key": key,
                       "parts": listed, "obj": obj, "ts": 2.0, **extra})
    assert reply["ok"], reply
    return rep.q(q="object", bucket="b", key=key)["obj"]


def test_complete_keeps_part_checksums(rep: Replica) -> None:
    rep.apply(create())
    listed = _upload(rep, "u1", "k", [{"sha256": "AAA="}, {}])
    obj = _complete(rep, "u1", "k", listed, part_checksums=True)
    assert obj["meta"]["parts"] == [[5 * MIB, "e1", 1, {"sha256": "AAA="}], [9, "e2", 1]]
    assert sdk_parse(attributes.render(obj, {"ObjectParts"}))["ObjectParts"]["Parts"] == [
        {"PartNumber": 1, "Size": 5 * MIB, "ChecksumSHA256": "AAA="}, {"PartNumber": 2, "Size": 9}]


def test_complete_without_the_flag_replays_as_before(rep: Replica) -> None:
    """A command logged before part checksums were kept builds the table it built then."""
    rep.apply(create())
    listed = _upload(rep, "u2", "k", [{"sha256": "AAA="}, {"sha256": "BBB="}])
    obj = _complete(rep, "u2", "k", listed)
    assert obj["meta"]["parts"] == [[5 * MIB, "e1", 1], [9, "e2", 1]]
