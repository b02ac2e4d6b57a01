"""Access control lists, as S3 defines them (pure: shared by the state machine, which
stores and enforces them inside its commands, and the frontends, which check bucket
access and render the documents).

An ACL is a list of grants ``[kind, who, permission]``: ``kind`` is ``user`` (``who``: a
user name) or ``group`` (``who``: AllUsers, AuthenticatedUsers or LogDelivery);
``permission`` one of ``PERMISSIONS``. The owner's own FULL_CONTROL grant is an ordinary
grant (it can be revoked; the owner keeps READ_ACP and WRITE_ACP all the same, as in S3).

A user's canonical id is a SHA-256 of its name (64 hex digits, the shape S3's have); its
display name is its name.
"""

from __future__ import annotations

import hashlib
from typing import Any

READ, WRITE, READ_ACP, WRITE_ACP, FULL_CONTROL = "READ", "WRITE", "READ_ACP", "WRITE_ACP", "FULL_CONTROL"
PERMISSIONS = (READ, WRITE, READ_ACP, WRITE_ACP, FULL_CONTROL)
GROUP_URI = "http://acs.amazonaws.com/groups/"
GROUPS = {"AllUsers": GROUP_URI + "global/AllUsers",
          "AuthenticatedUsers": GROUP_URI + "global/AuthenticatedUsers",
          "LogDelivery": GROUP_URI + "s3/LogDelivery"}
PUBLIC_GROUPS = ("AllUsers", "AuthenticatedUsers")
CANNED = ("private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
          "bucket-owner-read", "bucket-owner-full-control", "log-delivery-write")
# x-amz-grant-* headers and the permission each grants
GRANT_HEADERS = {"x-amz-grant-read": READ, "x-amz-grant-write": WRITE, "x-amz-grant-read-acp": READ_ACP,
                 "x-amz-grant-write-acp": WRITE_ACP, "x-amz-grant-full-control": FULL_CONTROL}
# Object ownership (PutBucketOwnershipControls)
OBJECT_WRITER, OWNER_PREFERRED, OWNER_ENFORCED = "ObjectWriter", "BucketOwnerPreferred", "BucketOwnerEnforced"
OWNERSHIPS = (OBJECT_WRITER, OWNER_PREFERRED, OWNER_ENFORCED)

Grant = list[Any]  # [kind, who, permission]


def canonical_id(user: str) -> str:
    return hashlib.sha256(b"cairn-user:" + user.encode()).hexdigest()


def group_of(uri: str) -> str | None:
    return next((name for name, full in GROUPS.items() if full == uri), None)


def canned_grants(canned: str, owner: str, bucket_owner: str | None = None) -> list[Grant]:
    """The grants a canned ACL stands for (``bucket_owner``: for an object's ACL)."""
    grants: list[Grant] = [["user", owner, FULL_CONTROL]]
    if canned in ("public-read", "public-read-write"):
        grants.append(["group", "AllUsers", READ])
    if canned == "public-read-write":
        grants.append(["group", "AllUsers", WRITE])
    if canned == "authenticated-read":
        grants.append(["group", "AuthenticatedUsers", READ])
    if canned == "log-delivery-write":
        grants += [["group", "LogDelivery", WRITE], ["group", "LogDelivery", READ_ACP]]
    if canned in ("bucket-owner-read", "bucket-owner-full-control") and bucket_owner and bucket_owner != owner:
        grants.append(["user", bucket_owner, READ if canned == "bucket-owner-read" else FULL_CONTROL])
    return grants


def is_public(grants: list[Grant]) -> bool:
    return any(kind == "group" and who in PUBLIC_GROUPS for kind, who, _ in grants)


def allows(grants: list[Grant], user: str | None, permission: str, ignore_public: bool = False) -> bool:
    """Whether ``grants`` give ``user`` (None: anonymous) ``permission``."""
    for kind, who, granted in grants:
        if granted != permission and granted != FULL_CONTROL:
            continue
        if kind == "user" and user is not None and who == user:
            return True
        if kind == "group" and not ignore_public and (
                who == "AllUsers" or (who == "AuthenticatedUsers" and user is not None)):
            return True
    return False


def may(grants: list[Grant], owner: str, user: str | None, permission: str, ignore_public: bool = False) -> bool:
    """``allows``, plus what an owner may always do: read and change the ACL."""
    if user is not None and user == owner and permission in (READ_ACP, WRITE_ACP):
        return True
    return allows(grants, user, permission, ignore_public)


def private(grants: list[Grant], owner: str) -> bool:
    """Whether ``grants`` say no more than the owner's full control (what
    BucketOwnerEnforced accepts)."""
    return all(kind == "user" and who == owner and perm == FULL_CONTROL for kind, who, perm in grants)
