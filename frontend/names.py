"""Validation of bucket names and object keys, as S3 defines them."""

from __future__ import annotations

import ipaddress
import re

from frontend.errors import NOT_XML, S3Error

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_KEY_BYTES = 1024


def check_bucket_name(name: str) -> None:
    """S3's general-purpose bucket naming rules; no '_' ever, so '/_cairn' is never a bucket."""
    ok = bool(_BUCKET.fullmatch(name)) and ".." not in name and ".-" not in name and "-." not in name
    if ok:
        try:
            ipaddress.IPv4Address(name)
            ok = False
        except ValueError:
            pass
    if ok and (name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
               or name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3"))):
        ok = False
    if not ok:
        raise S3Error("InvalidBucketName", BucketName=name)


def check_key(key: str) -> None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", Size=len(key.encode("utf-8", "surrogatepass")), MaxSizeAllowed=MAX_KEY_BYTES)
    if not key:
        raise S3Error("InvalidArgument", "Key must not be empty")
    if NOT_XML.search(key):  # such a key could never be listed in a document a client can parse
        raise S3Error("InvalidArgument", "Object keys cannot contain control characters that XML 1.0 cannot "
                      "represent (U+0000-U+0008, U+000B, U+000C, U+000E-U+001F).", ArgumentName="key")


def virtual_host_bucket(host: str, domains: tuple[str, ...]) -> str | None:
    """The bucket named by a virtual-hosted-style Host header, if any."""
    name = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else ""
    for domain in domains:
        suffix = "." + domain.lower()
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None
