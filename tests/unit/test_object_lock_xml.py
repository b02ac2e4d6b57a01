"""Tests of Object Lock (frontend.s3.object_lock): the request bodies, the
``x-amz-object-lock-*`` headers, dates, bypass, and the handlers on a fake raftmeta."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from frontend.errors import S3Error
from frontend.s3 import object_lock as ol

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
FUTURE = "2030-02-01T00:00:00.000Z"
FUTURE_TS = 1896134400.0
FAR = "2999-01-01T00:00:00Z"  # for the tests on the real clock
FAR_TS = 32472144000.0
NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def code(exc: pytest.ExceptionInfo[S3Error]) -> str:
    return exc.value.code


def config_xml(inner: str, enabled: str = "<ObjectLockEnabled>Enabled</ObjectLockEnabled>") -> bytes:
    return f"<ObjectLockConfiguration{NS}>{enabled}{inner}</ObjectLockConfiguration>".encode()


def rule(fields: str) -> str:
    return f"<Rule><DefaultRetention>{fields}</DefaultRetention></Rule>"


@pytest.mark.parametrize("text,ts", [
    (FUTURE, FUTURE_TS), ("2030-02-01T00:00:00Z", FUTURE_TS), ("2030-02-01T00:00:00", FUTURE_TS),
    ("2030-02-01", FUTURE_TS), ("2030-02-01T01:00:00+01:00", FUTURE_TS), ("2030-02-01T00:00:00.250Z", FUTURE_TS + 0.25),
])
def test_parse_date(text: str, ts: float) -> None:
    assert ol.parse_date(text) == ts


@pytest.mark.parametrize("text", [None, "", "tomorrow", "2030-13-01T00:00:00Z", "2030-02-30", "١٢٣٤-01-01",
                                  "2030-02-01T00:00:00Zjunk", "9" * 80])
def test_parse_date_refuses(text: str | None) -> None:
    with pytest.raises(ValueError):
        ol.parse_date(text)


def test_iso() -> None:
    assert ol.iso(FUTURE_TS) == FUTURE
    assert ol.iso(FUTURE_TS + 0.123) == "2030-02-01T00:00:00.123Z"
    assert ol.iso(FUTURE_TS + 0.9996) == "2030-02-01T00:00:01.000Z"
    assert ol.parse_date(ol.iso(NOW + 0.5)) == NOW + 0.5


def test_lock_config_enabled_only() -> None:
    assert ol.parse_lock_config(config_xml("")) == {"enabled": True, "mode": None, "days": None, "years": None}


@pytest.mark.parametrize("fields,expected", [
    ("<Mode>GOVERNANCE</Mode><Days>1</Days>", ("GOVERNANCE", 1, None)),
    ("<Days> 30 </Days><Mode>COMPLIANCE</Mode>", ("COMPLIANCE", 30, None)),
    ("<Mode>COMPLIANCE</Mode><Years>100</Years>", ("COMPLIANCE", None, 100)),
    ("<Mode>GOVERNANCE</Mode><Days>36500</Days>", ("GOVERNANCE", 36500, None)),
])
def test_lock_config_rule(fields: str, expected: tuple[Any, ...]) -> None:
    config = ol.parse_lock_config(config_xml(rule(fields)))
    assert (config["mode"], config["days"], config["years"]) == expected and config["enabled"] is True


@pytest.mark.parametrize("body", [
    b"", b"<ObjectLockConfiguration", b"<Retention/>", config_xml("", enabled=""),
    config_xml("", enabled="<ObjectLockEnabled>Disabled</ObjectLockEnabled>"),
    config_xml("", enabled="<ObjectLockEnabled>enabled</ObjectLockEnabled>"),
    config_xml("<Unknown/>"), config_xml("<Rule/>"), config_xml("<Rule><Other/></Rule>"),
    config_xml(rule("")), config_xml(rule("<Days>1</Days>")),
    config_xml(rule("<Mode>invalid</Mode><Years>1</Years>")),
    config_xml(rule("<Mode>GOVERNANCE</Mode>")),
    config_xml(rule("<Mode>GOVERNANCE</Mode><Days>1</Days><Years>1</Years>")),
    config_xml(rule("<Mode>GOVERNANCE</Mode><Days>1</Days><Days>2</Days>")),
    config_xml(rule("<Mode>GOVERNANCE</Mode><Days>abc</Days>")),
    config_xml(rule("<Mode>GOVERNANCE</Mode><Days>1.5</Days>")),
    config_xml(rule("<Mode>GOVERNANCE</Mode><Days>99999999999</Days>")),
    config_xml(rule("<Mode>GOVERNANCE</Mode><Days>1</Days><DefaultEventHold/>")),
])
def test_lock_config_malformed(body: bytes) -> None:
    with pytest.raises(S3Error) as exc:
        ol.parse_lock_config(body)
    assert code(exc) == "MalformedXML"


@pytest.mark.parametrize("fields,name,message", [
    ("<Mode>GOVERNANCE</Mode><Days>0</Days>", "Days", "positive integer"),
    ("<Mode>GOVERNANCE</Mode><Years>-1</Years>", "Years", "positive integer"),
    ("<Mode>GOVERNANCE</Mode><Days>36501</Days>", "Days", "too large"),
    ("<Mode>COMPLIANCE</Mode><Years>101</Years>", "Years", "too large"),
])
def test_lock_config_invalid_period(fields: str, name: str, message: str) -> None:
    with pytest.raises(S3Error) as exc:
        ol.parse_lock_config(config_xml(rule(fields)))
    assert code(exc) == "InvalidRetentionPeriod" and exc.value.fields["ArgumentName"] == name
    assert message in exc.value.message


def retention_xml(inner: str) -> bytes:
    return f"<Retention{NS}>{inner}</Retention>".encode()


def test_retention() -> None:
    body = retention_xml(f"<Mode>GOVERNANCE</Mode><RetainUntilDate>{FUTURE}</RetainUntilDate>")
    assert ol.parse_retention(body, NOW) == ["GOVERNANCE", FUTURE_TS]
    body = retention_xml("<RetainUntilDate>2030-02-01T00:00:00Z</RetainUntilDate><Mode>COMPLIANCE</Mode>")
    assert ol.parse_retention(body, NOW) == ["COMPLIANCE", FUTURE_TS]
    assert ol.parse_retention(f"<Retention><Mode>COMPLIANCE</Mode><RetainUntilDate>{FAR}</RetainUntilDate>"
                              "</Retention>".encode()) == ["COMPLIANCE", FAR_TS]  # no namespace, real clock


def test_retention_empty_removes() -> None:
    assert ol.parse_retention(retention_xml(""), NOW) is None
    assert ol.parse_retention(b"<Retention/>", NOW) is None


@pytest.mark.parametrize("body", [
    b"", b"<Retention>", b"<LegalHold><Status>ON</Status></LegalHold>", retention_xml("<Mode>GOVERNANCE</Mode>"),
    retention_xml(f"<RetainUntilDate>{FUTURE}</RetainUntilDate>"),
    retention_xml(f"<Mode>invalid</Mode><RetainUntilDate>{FUTURE}</RetainUntilDate>"),
    retention_xml(f"<Mode>governance</Mode><RetainUntilDate>{FUTURE}</RetainUntilDate>"),
    retention_xml("<Mode>GOVERNANCE</Mode><RetainUntilDate>soon</RetainUntilDate>"),
    retention_xml("<Mode>GOVERNANCE</Mode><RetainUntilDate></RetainUntilDate>"),
    retention_xml(f"<Mode>GOVERNANCE</Mode><Mode>GOVERNANCE</Mode><RetainUntilDate>{FUTURE}</RetainUntilDate>"),
    retention_xml(f"<Mode>GOVERNANCE</Mode><RetainUntilDate>{FUTURE}</RetainUntilDate><Extra/>"),
])
def test_retention_malformed(body: bytes) -> None:
    with pytest.raises(S3Error) as exc:
        ol.parse_retention(body, NOW)
    assert code(exc) == "MalformedXML"


@pytest.mark.parametrize("date", ["2020-01-01T00:00:00Z", ol.iso(NOW)])
def test_retention_past(date: str) -> None:
    with pytest.raises(S3Error) as exc:
        ol.parse_retention(retention_xml(f"<Mode>COMPLIANCE</Mode><RetainUntilDate>{date}</RetainUntilDate>"), NOW)
    assert code(exc) == "InvalidArgument" and exc.value.message == ol.PAST_DATE


@pytest.mark.parametrize("status,hold", [("ON", True), ("OFF", False), (" ON ", True)])
def test_legal_hold(status: str, hold: bool) -> None:
    assert ol.parse_legal_hold(f"<LegalHold{NS}><Status>{status}</Status></LegalHold>".encode()) is hold


@pytest.mark.parametrize("body", [b"", b"<LegalHold/>", b"<LegalHold><Status>abc</Status></LegalHold>",
                                  b"<LegalHold><Status>on</Status></LegalHold>", b"<Retention/>",
                                  b"<LegalHold><Status>ON</Status><Status>ON</Status></LegalHold>",
                                  b"<LegalHold><Status>ON</Status><Other/></LegalHold>"])
def test_legal_hold_malformed(body: bytes) -> None:
    with pytest.raises(S3Error) as exc:
        ol.parse_legal_hold(body)
    assert code(exc) == "MalformedXML"


def test_lock_headers_none() -> None:
    assert ol.lock_headers({}, NOW) == {}
    assert ol.lock_headers({"content-type": "text/plain", ol.MODE_HEADER: ""}, NOW) == {}


def test_lock_headers() -> None:
    headers = {ol.MODE_HEADER: "COMPLIANCE", ol.DATE_HEADER: FUTURE, ol.HOLD_HEADER: "ON"}
    assert ol.lock_headers(headers, NOW) == {"retention": ["COMPLIANCE", FUTURE_TS], "hold": True}
    assert ol.lock_headers({ol.HOLD_HEADER: "OFF"}, NOW) == {"hold": False}
    assert ol.lock_headers({ol.MODE_HEADER: "GOVERNANCE", ol.DATE_HEADER: FAR}) == {"retention": ["GOVERNANCE", FAR_TS]}


@pytest.mark.parametrize("headers,argument,message", [
    ({"x-amz-object-lock-mode": "GOVERNANCE"}, ol.DATE_HEADER, ol.BOTH_HEADERS),
    ({"x-amz-object-lock-retain-until-date": FUTURE}, ol.MODE_HEADER, ol.BOTH_HEADERS),
    ({"x-amz-object-lock-mode": "SOMETHING", "x-amz-object-lock-retain-until-date": FUTURE}, ol.MODE_HEADER,
     "Unknown wormMode directive."),
    ({"x-amz-object-lock-mode": "GOVERNANCE", "x-amz-object-lock-retain-until-date": "later"}, ol.DATE_HEADER,
     "ISO 8601"),
    ({"x-amz-object-lock-mode": "GOVERNANCE", "x-amz-object-lock-retain-until-date": "2001-01-01T00:00:00Z"},
     ol.DATE_HEADER, ol.PAST_DATE),
    ({"x-amz-object-lock-legal-hold": "on"}, ol.HOLD_HEADER, "Legal Hold must be either"),
    ({"x-amz-object-lock-legal-hold": "YES"}, ol.HOLD_HEADER, "Legal Hold must be either"),
])
def test_lock_headers_invalid(headers: dict[str, str], argument: str, message: str) -> None:
    with pytest.raises(S3Error) as exc:
        ol.lock_headers(headers, NOW)
    assert code(exc) == "InvalidArgument" and exc.value.fields["ArgumentName"] == argument
    assert message in exc.value.message


@pytest.mark.parametrize("headers", [
    {"content-md5": "1B2M2Y8AsgTpgAmY7PhCfg=="}, {"x-amz-checksum-crc32": "AAAAAA=="},
    {"x-amz-checksum-crc64nvme": "AAAAAAAAAAA="}, {"x-amz-sdk-checksum-algorithm": "CRC32"},
    {"x-amz-trailer": "x-amz-checksum-crc32c"}, {"x-amz-trailer": "X-Amz-Checksum-SHA256"},
])
def test_integrity_header_present(headers: dict[str, str]) -> None:
    ol.require_integrity_header(headers)


@pytest.mark.parametrize("headers", [{}, {"content-md5": ""}, {"x-amz-checksum-type": "FULL_OBJECT"},
                                     {"x-amz-trailer": "x-amz-meta-foo"}, {"x-amz-checksum-md5": "x"}])
def test_integrity_header_missing(headers: dict[str, str]) -> None:
    with pytest.raises(S3Error) as exc:
        ol.require_integrity_header(headers)
    assert code(exc) == "InvalidRequest" and exc.value.message == ol.INTEGRITY


def test_response_headers() -> None:
    assert ol.response_headers({}) == {}
    assert ol.response_headers({"retention": ["GOVERNANCE", FUTURE_TS], "hold": True}) == {
        ol.MODE_HEADER: "GOVERNANCE", ol.DATE_HEADER: FUTURE, ol.HOLD_HEADER: "ON"}
    assert ol.response_headers({"hold": False, "retention": None}) == {ol.HOLD_HEADER: "OFF"}


class FakeMeta:
    """raftmeta as the handlers see it: the bucket's lock config, one object, the access."""

    def __init__(self, access: dict[str, Any] | None = None, config: Any = None, obj: Any = None,
                 failed: Any = None) -> None:
        self.access, self.config, self.obj, self.failed, self.writes = access, config, obj, failed, []

    async def read(self, query: dict[str, Any], linear: bool = True) -> dict[str, Any]:
        return {"ok": True, "value": self.config} if query["q"] == "bucket_config" else self.access

    async def read_many(self, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        obj = {"ok": True, "obj": {"meta": self.obj}} if self.obj is not None else {"ok": False, "err": "NoSuchKey"}
        return [await self.read(queries[0]), self.failed or obj]

    async def write(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(cmd)
        return self.failed or {"ok": True}


def request(user: str | None, admin: bool = False, body: bytes = b"", headers: Any = None) -> Any:
    async def chunks() -> Any:
        yield body
    return SimpleNamespace(principal=SimpleNamespace(user=user, admin=admin, bucket_access=None, access_bucket=""),
                           headers=headers or {}, content_length=len(body), body=chunks())


ACCESS = {"exists": True, "owner": "alice", "acl": "public-read", "permission": None}


@pytest.mark.parametrize("user,admin,permission,allowed", [
    ("root", True, None, True), ("alice", False, None, True),  # the owner
    ("bob", False, "full", True), ("bob", False, "write", False),
    (None, False, None, False),  # anonymous, even on a public-read bucket
])
async def test_bypass_allowed(user: str | None, admin: bool, permission: str | None, allowed: bool) -> None:
    ctx: Any = SimpleNamespace(meta=FakeMeta({**ACCESS, "permission": permission}))
    assert await ol.bypass_allowed(ctx, request(user, admin), "b") is allowed


async def test_bypass_allowed_missing_bucket() -> None:
    ctx: Any = SimpleNamespace(meta=FakeMeta({"exists": False}))
    with pytest.raises(S3Error) as exc:
        await ol.bypass_allowed(ctx, request("bob"), "b")
    assert code(exc) == "NoSuchBucket"


CONFIG = {"enabled": True, "mode": "GOVERNANCE", "days": 3, "years": None}


async def test_handlers_render() -> None:
    ctx: Any = SimpleNamespace(meta=FakeMeta(config=CONFIG, obj={"retention": ["COMPLIANCE", FUTURE_TS], "hold": False}))
    body = await (await ol.get_lock_config(ctx, "b")).get_data()
    assert b"<ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode>" \
           b"<Days>3</Days></DefaultRetention></Rule>" in body
    body = await (await ol.get_retention(ctx, request("bob"), "b", "k", {})).get_data()
    assert f"<Mode>COMPLIANCE</Mode><RetainUntilDate>{FUTURE}</RetainUntilDate>".encode() in body
    assert b"<Status>OFF</Status>" in await (await ol.get_legal_hold(ctx, request("bob"), "b", "k", {})).get_data()


@pytest.mark.parametrize("config,obj,expected", [
    (None, {"hold": True}, "InvalidRequest"), (None, None, "InvalidRequest"),  # the bucket is checked first
    (CONFIG, None, "NoSuchKey"), (CONFIG, {}, "NoSuchObjectLockConfiguration"),
])
async def test_get_object_lock_errors(config: Any, obj: Any, expected: str) -> None:
    ctx: Any = SimpleNamespace(meta=FakeMeta(config=config, obj=obj))
    for handler in (ol.get_retention, ol.get_legal_hold):
        with pytest.raises(S3Error) as exc:
            await handler(ctx, request("bob"), "b", "k", {})
        assert code(exc) == expected


async def test_get_lock_config_missing() -> None:
    with pytest.raises(S3Error) as exc:
        await ol.get_lock_config(SimpleNamespace(meta=FakeMeta()), "b")  # type: ignore[arg-type]
    assert code(exc) == "ObjectLockConfigurationNotFoundError"


@pytest.mark.parametrize("header,permission,bypass", [("TRUE", "full", True), ("true", "write", False),
                                                       (None, "full", False)])
async def test_put_handlers_write(header: str | None, permission: str, bypass: bool) -> None:
    meta = FakeMeta({**ACCESS, "permission": permission}, config=CONFIG)
    ctx: Any = SimpleNamespace(meta=meta)
    body = f"<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>{FAR}</RetainUntilDate></Retention>".encode()
    headers = {ol.BYPASS_HEADER: header} if header else {}
    assert (await ol.put_retention(ctx, request("bob", body=body, headers=headers), "b", "k", {"versionId": "v"})
            ).status_code == 200
    assert {k: v for k, v in meta.writes[-1].items() if k != "ts"} == {
        "op": "set_retention", "bucket": "b", "key": "k", "vid": "v", "retention": ["GOVERNANCE", FAR_TS],
        "bypass": bypass}
    await ol.put_legal_hold(ctx, request("bob", body=b"<LegalHold><Status>ON</Status></LegalHold>"), "b", "k", {})
    assert meta.writes[-1]["op"] == "set_legal_hold" and meta.writes[-1]["hold"] is True
    await ol.put_lock_config(ctx, request("bob", body=config_xml(""), headers={"x-amz-bucket-object-lock-token": "t"}),
                             "b")
    assert meta.writes[-1] == {"op": "set_object_lock", "bucket": "b", "token": "t",
                               "config": {"enabled": True, "mode": None, "days": None, "years": None}}


async def test_put_without_lock_config() -> None:
    ctx: Any = SimpleNamespace(meta=FakeMeta(config=None))
    with pytest.raises(S3Error) as exc:
        await ol.put_legal_hold(ctx, request("bob", body=b"<LegalHold><Status>ON</Status></LegalHold>"), "b", "k", {})
    assert code(exc) == "InvalidRequest" and exc.value.message == ol.MISSING_CONFIG
    with pytest.raises(S3Error) as exc:
        await ol.put_retention(ctx, request("bob", body=b"<Retention/>"), "b", "k", {"versionId": ""})
    assert code(exc) == "InvalidArgument"


async def test_delete_marker_headers() -> None:
    failed = {"ok": False, "err": "MethodNotAllowed", "msg": "", "marker": True, "vid": "v9"}
    ctx: Any = SimpleNamespace(meta=FakeMeta(config=CONFIG, failed=failed))
    with pytest.raises(S3Error) as exc:
        await ol.get_retention(ctx, request("bob"), "b", "k", {"versionId": "v9"})
    assert code(exc) == "MethodNotAllowed"
    assert exc.value.headers == {"x-amz-delete-marker": "true", "x-amz-version-id": "v9"}
    with pytest.raises(S3Error) as exc:
        await ol.put_legal_hold(ctx, request("bob", body=b"<LegalHold><Status>OFF</Status></LegalHold>"), "b", "k",
                                {"versionId": "v9"})
    assert code(exc) == "MethodNotAllowed" and exc.value.headers["x-amz-delete-marker"] == "true"
