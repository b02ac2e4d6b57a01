"""A request for server-side encryption is refused, and nothing is stored: Cairn does
not encrypt yet and never lets a client believe it did (``frontend.sse``)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.cluster


def test_sse_requests_are_refused_and_change_nothing(s3, bucket):
    key = b"k" * 32
    sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key.decode()}  # boto3 adds base64 and the MD5
    for extra, expected in (({"ServerSideEncryption": "AES256"}, "NotImplemented"),
                            (sse_c, "NotImplemented"),
                            ({**sse_c, "ServerSideEncryption": "AES256"}, "InvalidArgument")):
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket=bucket, Key="secret", Body=b"plain", **extra)
        assert e.value.response["Error"]["Code"] == expected, (extra, e.value.response["Error"])
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3.create_multipart_upload(Bucket=bucket, Key="secret", ServerSideEncryption="aws:kms")
    assert e.value.response["Error"]["Code"] == "NotImplemented"
    s3.put_object(Bucket=bucket, Key="plain", Body=b"p")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="plain", **sse_c)
    assert e.value.response["Error"]["Code"] == "InvalidRequest"
