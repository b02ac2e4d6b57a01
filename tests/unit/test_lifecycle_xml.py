"""Tests of the lifecycle configuration documents (frontend.s3.lifecycle): bodies as boto3
serializes them parse into the stored rules and render back into what boto3 reads as the
same configuration; every invalid input gets S3's error code; the integrity headers S3
requires on PutBucketLifecycleConfiguration."""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import zlib
from types import SimpleNamespace
from typing import Any

import botocore.session
import pytest
from botocore import parsers, serialize

from frontend.errors import S3Error
from frontend.s3.lifecycle import (
    check_integrity,
    delete_lifecycle,
    get_lifecycle,
    parse_lifecycle,
    put_lifecycle,
    render_lifecycle,
)

NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
UTC = datetime.UTC
_MODEL = botocore.session.get_session().get_service_model("s3")


def boto_body(rules: list[dict[str, Any]]) -> bytes:
    """The body boto3 sends for put_bucket_lifecycle_configuration(Rules=rules)."""
    operation = _MODEL.operation_model("PutBucketLifecycleConfiguration")
    request = serialize.create_serializer("rest-xml").serialize_to_request(
        {"Bucket": "b", "LifecycleConfiguration": {"Rules": rules}}, operation)
    return request["body"]


def boto_read(body: bytes) -> list[dict[str, Any]]:
    """The Rules boto3's get_bucket_lifecycle_configuration returns for a GET body."""
    operation = _MODEL.operation_model("GetBucketLifecycleConfiguration")
    response = {"status_code": 200, "headers": {}, "body": body}
    return parsers.create_parser("rest-xml").parse(response, operation.output_shape)["Rules"]


def doc(*rules: str) -> bytes:
    return f"<LifecycleConfiguration{NS}>{''.join(rules)}</LifecycleConfiguration>".encode()


def rule(inner: str, status: str = "Enabled", flt: str = "<Filter></Filter>") -> str:
    return f"<Rule><ID>r</ID>{flt}<Status>{status}</Status>{inner}</Rule>"


EXPIRE = "<Expiration><Days>1</Days></Expiration>"

# ------------------------------------------------------------------ round trips

ROUND_TRIPS: list[list[dict[str, Any]]] = [
    [{"ID": "all", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 30}}],
    [{"ID": "p", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 1},
      "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}],
    [{"ID": "empty-prefix", "Status": "Disabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 3}}],
    [{"ID": "tag", "Status": "Enabled", "Filter": {"Tag": {"Key": "class", "Value": "tmp & <x>"}},
      "Expiration": {"Date": datetime.datetime(2030, 1, 1, tzinfo=UTC)}}],
    [{"ID": "gt", "Status": "Enabled", "Filter": {"ObjectSizeGreaterThan": 1024},
      "NoncurrentVersionExpiration": {"NoncurrentDays": 10}}],
    [{"ID": "lt", "Status": "Enabled", "Filter": {"ObjectSizeLessThan": 1},
      "NoncurrentVersionExpiration": {"NoncurrentDays": 10, "NewerNoncurrentVersions": 100}}],
    [{"ID": "and", "Status": "Enabled",
      "Filter": {"And": {"Prefix": "a/", "Tags": [{"Key": "k1", "Value": "v1"}, {"Key": "k2", "Value": ""}],
                         "ObjectSizeGreaterThan": 0, "ObjectSizeLessThan": 500}},
      "Expiration": {"Days": 365},
      "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}, {"Days": 0, "StorageClass": "GLACIER_IR"},
                      {"Days": 180, "StorageClass": "DEEP_ARCHIVE"}],
      "NoncurrentVersionTransitions": [{"NoncurrentDays": 30, "StorageClass": "ONEZONE_IA",
                                        "NewerNoncurrentVersions": 2},
                                       {"NoncurrentDays": 0, "StorageClass": "GLACIER"}]}],
    [{"ID": "and-tags", "Status": "Enabled",
      "Filter": {"And": {"Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}},
      "Transitions": [{"Date": datetime.datetime(2031, 6, 1, tzinfo=UTC), "StorageClass": "INTELLIGENT_TIERING"}]}],
    [{"ID": "marker", "Status": "Enabled", "Filter": {"Prefix": "x"},
      "Expiration": {"ExpiredObjectDeleteMarker": True}},
     {"ID": "no-marker", "Status": "Disabled", "Filter": {}, "Expiration": {"ExpiredObjectDeleteMarker": False}}],
    [{"ID": "legacy", "Status": "Enabled", "Prefix": "old/", "Expiration": {"Days": 2},
      "NoncurrentVersionExpiration": {"NoncurrentDays": 4},
      "Transitions": [{"Days": 40, "StorageClass": "STANDARD_IA"}],
      "NoncurrentVersionTransitions": [{"NoncurrentDays": 45, "StorageClass": "GLACIER"}]},
     {"ID": "legacy-empty", "Status": "Enabled", "Prefix": "", "AbortIncompleteMultipartUpload":
      {"DaysAfterInitiation": 1}}],
    [{"ID": "k\n\tspace ", "Status": "Enabled", "Filter": {"Prefix": " lead\ttrail "}, "Expiration": {"Days": 5}}],
]


@pytest.mark.parametrize("rules", ROUND_TRIPS, ids=[r[0]["ID"].strip() for r in ROUND_TRIPS])
def test_boto3_round_trip(rules: list[dict[str, Any]]) -> None:
    stored = parse_lifecycle(boto_body(rules))
    assert boto_read(render_lifecycle(copy.deepcopy(stored))) == rules


def test_stored_format() -> None:
    [stored] = parse_lifecycle(boto_body(ROUND_TRIPS[6]))
    assert stored["id"] == "and" and stored["status"] == "Enabled"
    assert stored["filter"] == {"prefix": "a/", "tags": {"k1": "v1", "k2": ""}, "gt": 0, "lt": 500}
    assert stored["expiration"] == {"days": 365}
    assert stored["noncurrent"] is None and stored["abort_days"] is None
    assert stored["transitions"][0] == {"storage_class": "STANDARD_IA", "days": 30}
    assert stored["noncurrent_transitions"][0] == {"storage_class": "ONEZONE_IA", "newer": 2, "days": 30}
    [tagged] = parse_lifecycle(boto_body(ROUND_TRIPS[3]))
    assert tagged["expiration"] == {"date": 1893456000.0}
    assert tagged["filter"] == {"prefix": "", "tags": {"class": "tmp & <x>"}, "gt": None, "lt": None}
    [legacy, _] = parse_lifecycle(boto_body(ROUND_TRIPS[9]))
    assert legacy["filter"] == {"prefix": "old/", "tags": {}, "gt": None, "lt": None}
    assert legacy["noncurrent"] == {"days": 4, "newer": None}
    [marker, _] = parse_lifecycle(boto_body(ROUND_TRIPS[8]))
    assert marker["expiration"] == {"marker": True}


def test_render_is_the_s3_document() -> None:
    body = render_lifecycle(parse_lifecycle(doc(rule(EXPIRE))))
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<LifecycleConfiguration xmlns="http://s3')
    assert b"<Rule><ID>r</ID><Filter></Filter><Status>Enabled</Status><Expiration><Days>1</Days>" in body
    legacy = render_lifecycle(parse_lifecycle(doc(rule(EXPIRE, flt="<Prefix>p/</Prefix>"))))
    assert b"<ID>r</ID><Prefix>p/</Prefix><Status>" in legacy and b"<Filter>" not in legacy
    dated = render_lifecycle(parse_lifecycle(doc(rule("<Expiration><Date>2030-01-01</Date></Expiration>"))))
    assert b"<Date>2030-01-01T00:00:00.000Z</Date>" in dated
    anded = render_lifecycle(parse_lifecycle(doc(rule(EXPIRE, flt="<Filter><And><Prefix></Prefix>"
                                                                   "<ObjectSizeLessThan>9</ObjectSizeLessThan>"
                                                                   "</And></Filter>"))))
    assert b"<Filter><And><Prefix></Prefix><ObjectSizeLessThan>9</ObjectSizeLessThan></And></Filter>" in anded


def test_carriage_returns_survive() -> None:
    # a raw CR reaches the parser as LF (XML line ends): only &#13; carries one, both ways
    [stored] = parse_lifecycle(doc(rule(EXPIRE, flt="<Filter><Prefix>a&#13;b</Prefix></Filter>")))
    assert stored["filter"]["prefix"] == "a\rb"
    assert boto_read(render_lifecycle([stored]))[0]["Filter"] == {"Prefix": "a\rb"}


def test_rules_without_id_get_unique_ones() -> None:
    body = doc(*[f"<Rule><Filter/><Status>Enabled</Status>{EXPIRE}</Rule>"] * 3,
               f"<Rule><ID></ID><Filter/><Status>Enabled</Status>{EXPIRE}</Rule>")
    ids = [r["id"] for r in parse_lifecycle(body)]
    assert len(set(ids)) == 4 and all(0 < len(i) <= 255 for i in ids)
    assert all(len(base64.b64decode(i)) == 36 for i in ids)  # a UUID, as S3 names them


@pytest.mark.parametrize("date,ts", [("2030-01-01T00:00:00.000Z", 1893456000.0), ("2030-01-01T00:00:00Z", 1893456000.0),
                                     ("2030-01-01", 1893456000.0), ("2030-01-01T01:00:00+01:00", 1893456000.0),
                                     ("1970-01-01T00:00:00Z", 0.0)])
def test_dates(date: str, ts: float) -> None:
    [stored] = parse_lifecycle(doc(rule(f"<Expiration><Date>{date}</Date></Expiration>")))
    assert stored["expiration"] == {"date": ts}


def test_limits_accepted() -> None:
    rules = [rule(EXPIRE).replace("<ID>r</ID>", f"<ID>{n}</ID>") for n in range(1000)]
    assert len(parse_lifecycle(doc(*rules))) == 1000
    longest = rule(EXPIRE).replace("<ID>r</ID>", f"<ID>{'i' * 255}</ID>")
    tag = f"<Filter><Tag><Key>{'k' * 128}</Key><Value>{'v' * 256}</Value></Tag></Filter>"
    assert parse_lifecycle(doc(longest))[0]["id"] == "i" * 255
    assert parse_lifecycle(doc(rule(EXPIRE, flt=tag)))[0]["filter"]["tags"] == {"k" * 128: "v" * 256}


# ------------------------------------------------------------------- bad input

IA = "<Transition><Days>29</Days><StorageClass>STANDARD_IA</StorageClass></Transition>"
TAG = "<Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter>"
SIZE = "<Filter><ObjectSizeGreaterThan>5</ObjectSizeGreaterThan></Filter>"
LEGACY = "<Prefix>p</Prefix>"

BAD: list[tuple[str, bytes, str, str]] = [
    ("empty body", b"", "MalformedXML", ""),
    ("not xml", b"<LifecycleConfiguration>", "MalformedXML", ""),
    ("wrong root", b"<CORSConfiguration/>", "MalformedXML", ""),
    ("no rules", doc(), "MalformedXML", ""),
    ("too many rules", doc(*[rule(EXPIRE).replace("<ID>r</ID>", "")] * 1001), "MalformedXML", ""),
    ("other element in root", doc(rule(EXPIRE), "<Junk/>"), "MalformedXML", ""),
    ("unknown rule element", doc(rule(EXPIRE + "<Junk/>")), "MalformedXML", ""),
    ("two Expirations", doc(rule(EXPIRE + EXPIRE)), "MalformedXML", ""),
    ("no status", doc(f"<Rule><Filter/>{EXPIRE}</Rule>"), "MalformedXML", ""),
    ("bad status", doc(rule(EXPIRE, status="enabled")), "MalformedXML", ""),
    ("long id", doc(rule(EXPIRE).replace("<ID>r</ID>", f"<ID>{'i' * 256}</ID>")), "InvalidArgument",
     "ID length should not exceed allowed limit of 255"),
    ("duplicate id", doc(rule(EXPIRE), rule(EXPIRE)), "InvalidArgument",
     "Rule ID must be unique. Found same ID for more than one rule"),
    ("neither Filter nor Prefix", doc(f"<Rule><Status>Enabled</Status>{EXPIRE}</Rule>"), "MalformedXML", ""),
    ("Filter and Prefix", doc(rule(EXPIRE, flt="<Prefix>a</Prefix><Filter/>")), "MalformedXML", ""),
    ("two filter members", doc(rule(EXPIRE, flt="<Filter><Prefix>a</Prefix>"
                                                "<ObjectSizeLessThan>4</ObjectSizeLessThan></Filter>")),
     "MalformedXML", ""),
    ("two tags outside And", doc(rule(EXPIRE, flt=TAG.replace("</Filter>", "<Tag><Key>a</Key><Value>b</Value>"
                                                                          "</Tag></Filter>"))), "MalformedXML", ""),
    ("unknown filter member", doc(rule(EXPIRE, flt="<Filter><Suffix>a</Suffix></Filter>")), "MalformedXML", ""),
    ("And with one condition", doc(rule(EXPIRE, flt="<Filter><And><Prefix>a</Prefix></And></Filter>")),
     "MalformedXML", ""),
    ("tag without value", doc(rule(EXPIRE, flt="<Filter><Tag><Key>k</Key></Tag></Filter>")), "MalformedXML", ""),
    ("empty tag key", doc(rule(EXPIRE, flt=TAG.replace("<Key>k</Key>", "<Key></Key>"))), "InvalidRequest",
     "A Tag's Key must be a length between 1 and 128."),
    ("long tag value", doc(rule(EXPIRE, flt=TAG.replace("<Value>v</Value>", f"<Value>{'v' * 257}</Value>"))),
     "InvalidRequest", "A Tag's Value must be a length between 0 and 256."),
    ("duplicate tag keys", doc(rule(EXPIRE, flt="<Filter><And><Tag><Key>k</Key><Value>1</Value></Tag>"
                                                "<Tag><Key>k</Key><Value>2</Value></Tag></And></Filter>")),
     "InvalidRequest", "Duplicate Tag Keys are not allowed."),
    ("size not a number", doc(rule(EXPIRE, flt=SIZE.replace(">5<", ">five<"))), "MalformedXML", ""),
    ("negative size", doc(rule(EXPIRE, flt=SIZE.replace(">5<", ">-5<"))), "InvalidRequest", "ObjectSizeGreaterThan"),
    ("sizes crossed", doc(rule(EXPIRE, flt="<Filter><And><ObjectSizeGreaterThan>10</ObjectSizeGreaterThan>"
                                           "<ObjectSizeLessThan>10</ObjectSizeLessThan></And></Filter>")),
     "InvalidRequest", "'ObjectSizeLessThan' has to be a value greater than 'ObjectSizeGreaterThan'."),
    ("no action", doc(rule("")), "InvalidRequest", "At least one action needs to be specified in a rule"),
    ("empty Expiration", doc(rule("<Expiration/>")), "MalformedXML", ""),
    ("Days and Date", doc(rule("<Expiration><Days>1</Days><Date>2030-01-01</Date></Expiration>")), "MalformedXML", ""),
    ("marker with Days", doc(rule("<Expiration><Days>1</Days><ExpiredObjectDeleteMarker>true"
                                  "</ExpiredObjectDeleteMarker></Expiration>")), "MalformedXML", ""),
    ("marker not boolean", doc(rule("<Expiration><ExpiredObjectDeleteMarker>yes</ExpiredObjectDeleteMarker>"
                                    "</Expiration>")), "MalformedXML", ""),
    ("marker with a tag filter", doc(rule("<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker>"
                                          "</Expiration>", flt=TAG)),
     "InvalidRequest", "ExpiredObjectDeleteMarker cannot be specified with Tags."),
    ("marker with a size filter", doc(rule("<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker>"
                                           "</Expiration>", flt=SIZE)),
     "InvalidRequest", "ExpiredObjectDeleteMarker cannot be specified with Object Size."),
    ("zero days", doc(rule("<Expiration><Days>0</Days></Expiration>")), "InvalidArgument",
     "'Days' for Expiration action must be a positive integer"),
    ("negative days", doc(rule("<Expiration><Days>-3</Days></Expiration>")), "InvalidArgument",
     "'Days' for Expiration action must be a positive integer"),
    ("days not a number", doc(rule("<Expiration><Days>1.5</Days></Expiration>")), "MalformedXML", ""),
    ("days beyond an int", doc(rule("<Expiration><Days>2147483648</Days></Expiration>")), "MalformedXML", ""),
    ("date not midnight", doc(rule("<Expiration><Date>2030-01-01T00:00:01Z</Date></Expiration>")), "InvalidArgument",
     "'Date' must be at midnight GMT"),
    ("date at another zone's midnight", doc(rule("<Expiration><Date>2030-01-01T00:00:00+02:00</Date></Expiration>")),
     "InvalidArgument", "'Date' must be at midnight GMT"),
    ("date not a date", doc(rule("<Expiration><Date>tomorrow</Date></Expiration>")), "MalformedXML", ""),
    ("noncurrent without days", doc(rule("<NoncurrentVersionExpiration><NewerNoncurrentVersions>1"
                                         "</NewerNoncurrentVersions></NoncurrentVersionExpiration>")),
     "MalformedXML", ""),
    ("noncurrent zero days", doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>0</NoncurrentDays>"
                                      "</NoncurrentVersionExpiration>")), "InvalidArgument",
     "'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer"),
    ("newer zero", doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays><NewerNoncurrentVersions>0"
                            "</NewerNoncurrentVersions></NoncurrentVersionExpiration>")), "InvalidArgument",
     "'NewerNoncurrentVersions' for NoncurrentVersionExpiration action must be a positive integer"),
    ("newer over 100", doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays>"
                                "<NewerNoncurrentVersions>101</NewerNoncurrentVersions>"
                                "</NoncurrentVersionExpiration>")), "InvalidArgument", "NewerNoncurrentVersions"),
    ("newer in a legacy rule", doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays>"
                                        "<NewerNoncurrentVersions>1</NewerNoncurrentVersions>"
                                        "</NoncurrentVersionExpiration>", flt=LEGACY)),
     "InvalidRequest", "NewerNoncurrentVersions element can only be used in Lifecycle V2."),
    ("abort without days", doc(rule("<AbortIncompleteMultipartUpload/>")), "MalformedXML", ""),
    ("abort zero days", doc(rule("<AbortIncompleteMultipartUpload><DaysAfterInitiation>0</DaysAfterInitiation>"
                                 "</AbortIncompleteMultipartUpload>")), "InvalidArgument",
     "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer"),
    ("abort with a tag filter", doc(rule("<AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>"
                                         "</AbortIncompleteMultipartUpload>", flt=TAG)),
     "InvalidRequest", "AbortIncompleteMultipartUpload cannot be specified with Tags."),
    ("abort with a size filter", doc(rule("<AbortIncompleteMultipartUpload><DaysAfterInitiation>1"
                                          "</DaysAfterInitiation></AbortIncompleteMultipartUpload>", flt=SIZE)),
     "InvalidRequest", "AbortIncompleteMultipartUpload cannot be specified with Object Size."),
    ("transition without class", doc(rule("<Transition><Days>1</Days></Transition>")), "MalformedXML", ""),
    ("transition unknown class", doc(rule("<Transition><Days>1</Days><StorageClass>COLD</StorageClass></Transition>")),
     "MalformedXML", ""),
    ("transition to STANDARD", doc(rule("<Transition><Days>1</Days><StorageClass>STANDARD</StorageClass>"
                                        "</Transition>")), "InvalidArgument",
     "Invalid target Storage class for Transition action"),
    ("transition neither Days nor Date", doc(rule("<Transition><StorageClass>GLACIER</StorageClass></Transition>")),
     "MalformedXML", ""),
    ("transition negative days", doc(rule("<Transition><Days>-1</Days><StorageClass>GLACIER</StorageClass>"
                                          "</Transition>")), "InvalidArgument",
     "'Days' in Transition action must be nonnegative"),
    ("transition to IA too soon", doc(rule(IA)), "InvalidArgument",
     "'Days' in Transition action for StorageClass 'STANDARD_IA' must be greater than or equal to 30"),
    ("noncurrent transition to IA too soon", doc(rule(
        "<NoncurrentVersionTransition><NoncurrentDays>3</NoncurrentDays><StorageClass>ONEZONE_IA</StorageClass>"
        "</NoncurrentVersionTransition>")), "InvalidArgument", "'NoncurrentDays' in NoncurrentVersionTransition"),
    ("noncurrent transition with a Date", doc(rule(
        "<NoncurrentVersionTransition><Date>2030-01-01</Date><StorageClass>GLACIER</StorageClass>"
        "</NoncurrentVersionTransition>")), "MalformedXML", ""),
    ("same class twice", doc(rule("<Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition>" * 2)),
     "InvalidRequest", "'StorageClass' must be different"),
    ("legacy and Filter rules mixed", doc(rule(EXPIRE), rule(EXPIRE, flt=LEGACY).replace(">r<", ">s<")),
     "InvalidRequest", "Filter element can only be used in Lifecycle V2."),
]


@pytest.mark.parametrize("body,code,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(body: bytes, code: str, message: str) -> None:
    with pytest.raises(S3Error) as exc:
        parse_lifecycle(body)
    assert exc.value.code == code
    assert message in exc.value.message


# ------------------------------------------------------------ integrity headers

BODY = doc(rule(EXPIRE))
MD5 = base64.b64encode(hashlib.md5(BODY).digest()).decode()
CRC32 = base64.b64encode(zlib.crc32(BODY).to_bytes(4, "big")).decode()


@pytest.mark.parametrize("headers", [{"content-md5": MD5}, {"x-amz-checksum-crc32": CRC32},
                                     {"x-amz-sdk-checksum-algorithm": "CRC32", "x-amz-checksum-crc32": CRC32},
                                     {"x-amz-sdk-checksum-algorithm": "CRC32"},
                                     {"content-md5": MD5, "x-amz-checksum-crc32": CRC32}])
def test_integrity_accepted(headers: dict[str, str]) -> None:
    check_integrity(headers, BODY)


@pytest.mark.parametrize("headers,code", [
    ({}, "InvalidRequest"),
    ({"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, "InvalidRequest"),
    ({"content-md5": base64.b64encode(hashlib.md5(b"other").digest()).decode()}, "BadDigest"),
    ({"content-md5": "not base64!"}, "InvalidDigest"),
    ({"content-md5": base64.b64encode(b"short").decode()}, "InvalidDigest"),
    ({"x-amz-checksum-crc32": base64.b64encode(b"\0\0\0\0").decode()}, "BadDigest"),
    ({"x-amz-checksum-crc32": "AAAA"}, "InvalidRequest"),
])
def test_integrity_refused(headers: dict[str, str], code: str) -> None:
    with pytest.raises(S3Error) as exc:
        check_integrity(headers, BODY)
    assert exc.value.code == code
    if not headers or "content-md5" not in headers and "x-amz-checksum-crc32" not in headers:
        assert exc.value.message == "Missing required header for this request: Content-MD5"


# ------------------------------------------------------------------- handlers

class FakeMeta:
    def __init__(self) -> None:
        self.value: Any = None
        self.writes: list[dict[str, Any]] = []

    async def write(self, command: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(command)
        self.value = command["value"]
        return {"ok": True}

    async def read(self, query: dict[str, Any]) -> dict[str, Any]:
        assert query == {"q": "bucket_config", "bucket": "b", "name": "lifecycle"}
        return {"ok": True, "value": self.value}


class FakeRequest:
    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.headers, self.content_length, self._body = headers, len(body), body

    @property
    async def body(self) -> Any:
        yield self._body


async def test_handlers() -> None:
    meta = FakeMeta()
    ctx: Any = SimpleNamespace(meta=meta)
    with pytest.raises(S3Error) as exc:
        await get_lifecycle(ctx, "b")
    assert exc.value.code == "NoSuchLifecycleConfiguration" and exc.value.fields == {"BucketName": "b"}
    with pytest.raises(S3Error) as exc:
        await put_lifecycle(ctx, FakeRequest(BODY, {}), "b")
    assert exc.value.code == "InvalidRequest" and not meta.writes
    response = await put_lifecycle(ctx, FakeRequest(BODY, {"content-md5": MD5}), "b")
    assert response.status_code == 200
    assert meta.writes[0]["op"] == "set_bucket_config" and meta.writes[0]["name"] == "lifecycle"
    assert meta.writes[0]["value"] == parse_lifecycle(BODY)
    response = await get_lifecycle(ctx, "b")
    assert response.status_code == 200 and await response.get_data() == render_lifecycle(parse_lifecycle(BODY))
    response = await delete_lifecycle(ctx, "b")
    assert response.status_code == 204 and meta.writes[-1]["value"] is None
    big = doc(*[rule(EXPIRE).replace("<ID>r</ID>", f"<ID>{n:0>80}</ID>") for n in range(1000)])
    with pytest.raises(S3Error) as exc:
        await put_lifecycle(ctx, FakeRequest(big, {"content-md5": MD5}), "b")
    assert exc.value.code == "MaxMessageLengthExceeded"
