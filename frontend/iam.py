"""Who is calling and what they may do.

Authentication: the access key named by the request is looked up (the root key from
the frontend's configuration, every other one in Raft with a linearizable read, so a
revoked key stops working everywhere the moment its revocation returns) and the SigV4
signature is verified with its secret.

Authorization: admins may do everything. On a bucket, its owner may do everything; a
Cairn grant (made by an operator) gives ``read`` (every object's GET/HEAD), ``write``
(PUT/DELETE objects, multipart), ``list`` (listings) or ``full`` (all of it, plus ACLs
and configuration); the bucket's ACL gives what S3's does (READ: listings, WRITE:
writes and deletes, READ_ACP / WRITE_ACP: its ACL). Reading an object, or its ACL, is
decided by that version's own ACL (``core.acl``) unless a Cairn grant covers it. With
BucketOwnerEnforced ownership, ACLs are off.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import trio

from core import access as access_rules
from core import wire
from frontend.context import Context
from frontend.errors import S3Error, from_wire
from frontend.recent import Recent
from frontend.sigv4 import AuthResult, verify_request

ROOT_USER = "root"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


@dataclass(frozen=True)
class Principal:
    user: str | None  # None: anonymous
    admin: bool = False
    access_key: str = ""
    bucket_access: dict[str, Any] | None = None  # access to ``access_bucket``, read with the key
    access_bucket: str = ""
    # (query, answer): the handler's first read, made with the key's (``app._prefetch``):
    # the object of a GetObject or HeadObject (``object_as``), used only by a handler whose
    # own read is that one with the same ACL check (``context.read_object``); the upload of
    # an UploadPart (``multipart.part_algorithm``). Read before authorization: used only after it.
    prefetched: tuple[dict[str, Any], dict[str, Any]] | None = None
    # the key was not read: the user and secret are the ones last confirmed for it, and
    # the write's commit checks key and access in the state machine (``commit_as``)
    deferred: bool = False
    secret_digest: str = ""  # a deferred principal's: SHA-256 of the secret its signature was checked with


ANONYMOUS = Principal(None)


def requested_access_key(headers: list[tuple[str, str]], query_string: bytes) -> str | None:
    """The access key a request names: SigV4's Credential (header or X-Amz-Credential),
    SigV2's ``Authorization: AWS AKID:signature`` or ``AWSAccessKeyId`` parameter."""
    for name, value in headers:
        if name.lower() == "authorization":
            scheme, _, rest = value.strip().partition(" ")
            if scheme == "AWS":  # SigV2; a malformed one is refused by sigv2 without a look-up
                akid, sep, signature = rest.strip().rpartition(":")
                return (akid.strip() or None) if sep and signature.strip() else None
            match = _CREDENTIAL.search(value)
            return match.group(1) if match else None
    match = re.search(rb"(?:^|&)X-Amz-Credential=([^&]+)", query_string)
    if match:
        return unquote(match.group(1).decode("latin-1")).split("/", 1)[0]
    match = re.search(rb"(?:^|&)AWSAccessKeyId=([^&]+)", query_string)
    if match:
        return unquote(match.group(1).decode("latin-1")) or None
    return None


async def lookup_key(ctx: Context, access_key: str | None, bucket: str = "",
                     prefetch: dict[str, Any] | None = None) -> tuple[str | None, Principal]:
    """(secret, principal) of an access key, or (None, ANONYMOUS) if unknown. For a user's
    key, the key, the user's access to ``bucket`` and ``prefetch``, the read the request
    will make first if it is authorized (``app._prefetch``, read as this key's), are read
    behind one Raft barrier."""
    if not access_key:
        return None, ANONYMOUS
    if access_key == ctx.root_access_key:
        return ctx.root_secret_key, Principal(ROOT_USER, True, access_key)
    queries = [{"q": "key", "access_key": access_key}]
    if bucket:
        queries.append({"q": "access", "bucket": bucket, "access_key": access_key})
        if prefetch is not None:
            queries.append({**prefetch, "access_key": access_key})
    try:
        results = await ctx.meta.read_many(queries)
    except wire.WireError as exc:
        raise from_wire(exc) from None
    key = results[0]
    if not key.get("found"):
        return None, ANONYMOUS
    prefetched = None
    if bucket and prefetch is not None:
        prefetched = (prefetch, results[2])
    return key["secret"], Principal(key["user"], key["admin"], access_key, results[1] if bucket else None, bucket,
                                    prefetched)


async def authenticate(ctx: Context, method: str, raw_path: bytes, query_string: bytes,
                       headers: list[tuple[str, str]], bucket: str = "",
                       prefetch: dict[str, Any] | None = None,
                       defer: bool = False) -> tuple[AuthResult | None, Principal]:
    """Verify the request's signature (if it carries one) and say who signed it.

    The signature is checked before any linearizable read: with the secret this frontend
    last confirmed for the key, else with the one on its local replica, else (a key this
    replica has not heard of) after a linearizable look-up that at most
    ``UNKNOWN_KEY_LOOKUPS`` requests wait for at once, so forged or random keys cannot
    turn into Raft work. Only a valid signature is then confirmed linearizably (the key
    may have been deleted a moment ago), together with the access to ``bucket`` and the
    ``prefetch`` read: a small GET or HEAD by a user's key costs one round trip.

    ``defer`` (a small PutObject, ``app.deferrable``): a key whose user this frontend has
    confirmed before is not read at all; the principal comes back ``deferred`` and the
    commit carries the key, the secret's digest and the need for the state machine to
    check in the same apply (``commit_as``, ``raftmeta.sm.iam.check_as``)."""
    access_key = requested_access_key(headers, query_string)
    if access_key == ctx.root_access_key or not access_key:
        secret, principal = await lookup_key(ctx, access_key, bucket)
        found = {access_key: secret} if access_key and secret is not None else {}
        auth = verify_request(method, raw_path, query_string, headers, found.get, region=ctx.region,
                              domains=ctx.domains)
        return auth, (principal if auth is not None else ANONYMOUS)
    known = _SECRETS.get(access_key)
    secret = known.secret if known is not None else await _candidate_secret(ctx, access_key)
    auth = verify_request(method, raw_path, query_string, headers, {access_key: secret}.get, region=ctx.region,
                          domains=ctx.domains)
    if auth is None:  # no signature at all after all (a credential-looking string elsewhere)
        return None, ANONYMOUS
    if defer and bucket and known is not None and not known.admin:
        return auth, Principal(known.user, False, access_key, deferred=True, secret_digest=_digest(secret))
    confirmed, principal = await lookup_key(ctx, access_key, bucket, prefetch)
    if confirmed != secret or principal.user is None:
        raise gone(access_key)
    _SECRETS.put(access_key, _Known(secret, principal.user, principal.admin))
    return auth, principal


def commit_as(principal: Principal, bucket: str, need: str) -> dict[str, Any]:
    """What a deferred principal's commit carries for the state machine to authorize
    (``raftmeta.sm.iam.check_as``): the key, its secret's digest (the secret itself never
    enters the log), the user this frontend took it for, the bucket and the need."""
    return {"access_key": principal.access_key, "secret": principal.secret_digest, "user": principal.user,
            "bucket": bucket, "need": need}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def gone(access_key: str) -> S3Error:
    """The error for a key found missing (or not the one its signature was checked with),
    once its cached identity is dropped."""
    _SECRETS.pop(access_key)
    return S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key)


async def confirm(ctx: Context, principal: Principal, bucket: str, need: str) -> None:
    """The reads a deferred principal skipped: raise InvalidAccessKeyId, NoSuchBucket or
    AccessDenied as an undeferred request would have, before its handler ran."""
    secret, confirmed = await lookup_key(ctx, principal.access_key, bucket)
    if secret is None or _digest(secret) != principal.secret_digest or confirmed.user != principal.user:
        raise gone(principal.access_key)
    await authorize(ctx, confirmed, bucket, need)


async def settle(ctx: Context, request: Any, bucket: str) -> None:
    """Authorize now what a deferred principal's commit would have (``confirm``), for a
    handler that must know before its commit (a body too large to wait) or an error of
    the request's own that an unauthorized caller must not see before AccessDenied. Once
    taken for a commit (``take_commit_as``), or settled, there is nothing left to do."""
    pending = take_commit_as(request)
    if pending is not None:
        await confirm(ctx, request.principal, bucket, pending["need"])


def take_commit_as(request: Any) -> dict[str, Any] | None:
    """The request's pending ``commit_as``, for its commit to carry (once)."""
    pending, request.commit_as = getattr(request, "commit_as", None), None
    return pending


UNKNOWN_KEY_LOOKUPS = 4


@dataclass(frozen=True)
class _Known:
    secret: str
    user: str
    admin: bool


# Access key -> the secret, user and admin flag last confirmed linearizably for it. A key's
# secret and user never change (keys are created with them and deleted), so an entry can
# only be stale by the key being gone, which the confirming read (or, for a deferred
# write, its commit) finds.
_SECRETS: Recent[str, _Known] = Recent()
_UNKNOWN = trio.CapacityLimiter(UNKNOWN_KEY_LOOKUPS)


async def _candidate_secret(ctx: Context, access_key: str) -> str | None:
    """The key's secret from the local replica, or from a bounded linearizable read."""
    try:
        local = await ctx.meta.read({"q": "key", "access_key": access_key}, linear=False)
        if local.get("found"):
            return local["secret"]
        async with _UNKNOWN:
            reply = await ctx.meta.read({"q": "key", "access_key": access_key})
    except wire.WireError as exc:
        raise from_wire(exc) from None
    return reply["secret"] if reply.get("found") else None


OBJECT_NEEDS = access_rules.OBJECT_NEEDS


async def bucket_access(ctx: Context, principal: Principal, bucket: str) -> dict[str, Any]:
    """The bucket's owner, grants, ownership rule and public access block, with the
    caller's Cairn grant (read with the caller's key when that named this bucket)."""
    access = principal.bucket_access if bucket and principal.access_bucket == bucket else None
    if access is None:
        try:
            access = await ctx.meta.read({"q": "access", "bucket": bucket, "user": principal.user or ""})
        except wire.WireError as exc:
            raise from_wire(exc) from None
    return access


_bucket_allows = access_rules.bucket_allows


async def authorize(ctx: Context, principal: Principal, bucket: str, need: str) -> dict[str, Any] | None:
    """Raise AccessDenied (or NoSuchBucket) unless ``principal`` may ``need`` on ``bucket``.

    Bucket needs: list, write, full (the owner's: configuration), read_acp, write_acp,
    any (HeadBucket and the like). Object needs (``OBJECT_NEEDS``): read, obj_read_acp,
    obj_write_acp; unless a Cairn grant covers them, they return the check the object's
    read carries (``{"user", "need", "list"}``), decided by the version's ACL in the
    state machine, in the same snapshot as the version read."""
    if principal.admin:
        return None  # admins may do anything; a missing bucket is the handler's NoSuchBucket
    access = await bucket_access(ctx, principal, bucket)
    if not access.get("exists"):  # bucket names are one public namespace: S3 says so to anyone
        raise S3Error("NoSuchBucket", BucketName=bucket)
    if need in OBJECT_NEEDS:
        return access_rules.object_check(access, principal.user, need)
    if not _bucket_allows(access, principal.user, need):
        raise S3Error("AccessDenied")
    return None
