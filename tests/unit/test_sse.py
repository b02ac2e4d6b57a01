"""Server-side encryption requests are checked as S3 checks them, then refused
(``frontend.sse``): never silently stored unencrypted."""

from __future__ import annotations

import base64
import hashlib

import pytest

from frontend import sse
from frontend.errors import S3Error

KEY = base64.b64encode(b"k" * 32).decode()
MD5 = base64.b64encode(hashlib.md5(b"k" * 32).digest()).decode()
SSE_C = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
         "x-amz-server-side-encryption-customer-key": KEY,
         "x-amz-server-side-encryption-customer-key-md5": MD5}


def code(operation: str, headers: dict[str, str]) -> str | None:
    try:
        sse.check(operation, headers)
    except S3Error as exc:
        return exc.code
    return None


@pytest.mark.parametrize("headers", [
    {"x-amz-server-side-encryption": "AES256"},
    {"x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": "k1"},
    SSE_C,
])
def test_well_formed_requests_are_not_implemented(headers: dict[str, str]) -> None:
    for operation in ("PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "PostObject"):
        assert code(operation, headers) == "NotImplemented"


@pytest.mark.parametrize("headers", [
    {**SSE_C, "x-amz-server-side-encryption-customer-key-md5": "AAAA"},  # wrong md5
    {k: v for k, v in SSE_C.items() if not k.endswith("md5")},
    {k: v for k, v in SSE_C.items() if not k.endswith("-key")},
    {k: v for k, v in SSE_C.items() if not k.endswith("algorithm")},
    {**SSE_C, "x-amz-server-side-encryption-customer-algorithm": "AES128"},
    {**SSE_C, "x-amz-server-side-encryption-customer-key": "c2hvcnQ="},
    {**SSE_C, "x-amz-server-side-encryption": "AES256"},
    {**SSE_C, "x-amz-server-side-encryption": "aws:kms"},
    {"x-amz-server-side-encryption": "AES256", "x-amz-server-side-encryption-aws-kms-key-id": "k1"},
    {"x-amz-server-side-encryption": "aes:kms"},
])
def test_malformed_or_conflicting_headers_are_invalid_arguments(headers: dict[str, str]) -> None:
    assert code("PutObject", headers) == "InvalidArgument"


def test_reads_and_other_operations() -> None:
    assert code("GetObject", SSE_C) == "InvalidRequest"  # no object here is SSE-C encrypted
    assert code("HeadObject", {}) is None and code("PutObject", {}) is None
    assert code("DeleteObject", SSE_C) is None
    copy_source = {k.replace("x-amz-", "x-amz-copy-source-"): v for k, v in SSE_C.items()}
    assert code("CopyObject", copy_source) == "InvalidRequest"
