"""Server-side encryption requests, refused honestly until Cairn encrypts.

Cairn stores objects unencrypted (SSE is a later piece of work). A store that accepted
``x-amz-server-side-encryption`` or an SSE-C key and ignored it would let a client
believe its data is encrypted, or that only holders of its key can read it. So every
request naming SSE is first checked as S3 checks it (malformed or conflicting headers:
400 InvalidArgument, exactly as AWS answers them), then answered NotImplemented; a read
naming an SSE-C key gets S3's answer for an object that is not SSE-C encrypted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping

from frontend.errors import S3Error

SSE = "x-amz-server-side-encryption"
KMS_KEY = "x-amz-server-side-encryption-aws-kms-key-id"
KMS_CONTEXT = "x-amz-server-side-encryption-context"
BUCKET_KEY = "x-amz-server-side-encryption-bucket-key-enabled"
CUSTOMER = "x-amz-server-side-encryption-customer-"
COPY_CUSTOMER = "x-amz-copy-source-server-side-encryption-customer-"
# the operations whose requests may carry SSE headers (routes.ROUTES' names)
WRITES = ("PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy", "PostObject")
READS = ("GetObject", "HeadObject", "GetObjectAttributes")
_NOT_YET = "Server-side encryption is not implemented: Cairn stores objects unencrypted and will not pretend otherwise."


def _bad(message: str, name: str, value: str | None = None) -> S3Error:
    return S3Error("InvalidArgument", message, ArgumentName=name,
                   **({"ArgumentValue": value} if value is not None else {}))


def _customer_key(headers: Mapping[str, str], prefix: str) -> bool:
    """Check one set of SSE-C headers (``prefix``: the object's or the copy source's);
    True if the request carries one."""
    algorithm, key, md5 = (headers.get(prefix + part) for part in ("algorithm", "key", "key-md5"))
    if algorithm is None and key is None and md5 is None:
        return False
    if algorithm is None:
        raise _bad("Requests specifying Server Side Encryption with Customer provided keys must provide a valid "
                   "encryption algorithm.", prefix + "algorithm")
    if algorithm != "AES256":
        raise _bad("The encryption algorithm specified is not valid.", prefix + "algorithm", algorithm)
    if key is None:
        raise _bad("Requests specifying Server Side Encryption with Customer provided keys must provide an "
                   "appropriate secret key.", prefix + "key")
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise _bad("The secret key was invalid for the specified algorithm.", prefix + "key")
    if md5 is None:
        raise _bad("Requests specifying Server Side Encryption with Customer provided keys must provide the "
                   "client calculated MD5 of the secret key.", prefix + "key-md5")
    if base64.b64encode(hashlib.md5(raw).digest()).decode() != md5.strip():
        raise _bad("The calculated MD5 hash of the key did not match the hash that was provided.", prefix + "key-md5")
    return True


def check(operation: str, headers: Mapping[str, str]) -> None:
    """Refuse a request of ``operation`` that asks for server-side encryption."""
    if operation not in WRITES and operation not in READS:
        return
    customer = _customer_key(headers, CUSTOMER)
    copy_customer = _customer_key(headers, COPY_CUSTOMER) if operation in ("CopyObject", "UploadPartCopy") else False
    mode = headers.get(SSE)
    if operation in READS:
        if customer:
            raise S3Error("InvalidRequest", "The encryption parameters are not applicable to this object.")
        return
    if mode is not None and mode not in ("AES256", "aws:kms", "aws:kms:dsse"):
        raise _bad("The encryption method specified is not supported", SSE, mode)
    if customer and mode is not None:
        raise _bad("Server Side Encryption with Customer provided key is incompatible with the encryption method "
                   "specified", SSE, mode)
    if (headers.get(KMS_KEY) is not None or headers.get(KMS_CONTEXT) is not None) and mode not in (
            "aws:kms", "aws:kms:dsse"):
        raise _bad("Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-"
                   "encryption : aws:kms", SSE, mode)
    if copy_customer:
        raise S3Error("InvalidRequest", "The encryption parameters are not applicable to this object.")
    if customer or mode is not None:
        raise S3Error("NotImplemented", _NOT_YET)
