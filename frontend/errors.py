"""Every S3 error the frontend can return, defined once.

A handler raises ``S3Error(code, message=None, **fields)``; a failed internal call
becomes one in ``from_wire`` (a call that did not complete, ``WireError``) or
``from_reply`` (raftmeta's answer naming an error). ``frontend.app.error_response``, the
one place where exceptions become responses, renders it as AWS does: the HTTP status of
the code and an XML body ``<Error><Code/><Message/><Resource/><RequestId/>...</Error>``.
HEAD responses carry no body, only the status.
"""

from __future__ import annotations

import email.utils
import logging
import re
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

from core import wire

log = logging.getLogger("frontend")

# What an XML 1.0 document cannot carry, not even as a character reference: keys holding
# it are refused (``names.check_key``), a request path's is percent-encoded in <Resource>.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode("utf-8", "surrogatepass"))

# code -> (HTTP status, AWS's default message)
ERRORS: dict[str, tuple[int, str]] = {
    "AccessControlListNotSupported": (400, "The bucket does not allow ACLs"),
    "AccessDenied": (403, "Access Denied"),
    "AccessForbidden": (403, "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec."),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (400, "Error parsing the query parameters of the presigned request."),
    "BadDigest": (400, "The Content-MD5 or checksum value that you specified did not match what the server received."),
    "BadRequest": (400, "Bad Request"),
    "BucketAlreadyExists": (409, "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again."),
    "BucketAlreadyOwnedByYou": (409, "Your previous request to create the named bucket succeeded and you already own it."),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "ConditionalRequestConflict": (409, "A conflicting operation occurred. If using PutObject you can retry the request. If using multipart upload you should initiate another CreateMultipartUpload request and re-upload each part."),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed size"),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IllegalVersioningConfigurationException": (400, "Indicates that the versioning configuration specified in the request is invalid."),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length HTTP header."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (403, "The AWS Access Key Id you provided does not exist in our records."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketAclWithObjectOwnership": (400, "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidBucketState": (409, "The request is not valid with the current state of the bucket."),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidPart": (400, "One or more of the specified parts could not be found."),
    "InvalidPartNumber": (416, "The requested partnumber is not satisfiable"),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order. The parts list must be specified in order by part number."),
    "InvalidPolicyDocument": (400, "The content of the form does not meet the conditions specified in the policy document."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidRetentionPeriod": (400, "The retention period specified is not valid."),
    "InvalidTag": (400, "The tag provided was not a valid tag."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedACLError": (400, "The XML you provided was not well-formed or did not validate against our published schema"),
    "MalformedPOSTRequest": (400, "The body of your POST request is not well-formed multipart/form-data."),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate against our published schema."),
    "MaxMessageLengthExceeded": (400, "Your request was too big."),
    "MaxPostPreDataLengthExceeded": (400, "Your POST request fields preceding the upload file were too large."),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingSecurityHeader": (400, "Your request is missing a required header."),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchCORSConfiguration": (404, "The CORS configuration does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchLifecycleConfiguration": (404, "The lifecycle configuration does not exist."),
    "NoSuchObjectLockConfiguration": (404, "The specified object does not have a ObjectLock configuration."),
    "NoSuchPublicAccessBlockConfiguration": (404, "The public access block configuration was not found"),
    "NoSuchTagSet": (404, "The TagSet does not exist"),
    "NoSuchUpload": (404, "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented."),
    "ObjectLockConfigurationNotFoundError": (404, "Object Lock configuration does not exist for this bucket"),
    "OwnershipControlsNotFoundError": (404, "The bucket ownership controls were not found"),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the current time is too large."),
    "RequestTimeout": (400, "Your socket connection to the server was not read from or written to within the timeout period."),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
    "SignatureDoesNotMatch": (403, "The request signature we calculated does not match the signature you provided. Check your key and signing method."),
    "SlowDown": (503, "Please reduce your request rate."),
    "UnexpectedContent": (400, "This request does not support content"),
    "UnresolvableGrantByEmailAddress": (400, "The e-mail address you provided does not match any account on record."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match what was computed."),
}


class S3Error(Exception):
    """An S3 error response. ``fields`` become extra XML elements (e.g. BucketName)."""

    def __init__(self, code: str, message: str | None = None, headers: Mapping[str, str] | None = None,
                 **fields: object) -> None:
        status, default = ERRORS[code]
        super().__init__(f"{code}: {message or default}")
        self.code = code
        self.status = status
        self.message = message or default
        self.fields = fields
        self.headers = dict(headers or {})  # response headers the error carries (x-amz-delete-marker)

    def to_xml(self, resource: str = "", request_id: str = "") -> bytes:
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
            f"<Code>{self.code}</Code>",
            f"<Message>{escape(self.message)}</Message>",
        ]
        for name, value in self.fields.items():
            parts.append(f"<{name}>{escape(str(value))}</{name}>")
        if resource:
            parts.append(f"<Resource>{escape(NOT_XML.sub(_percent, resource))}</Resource>")
        if request_id:
            parts.append(f"<RequestId>{request_id}</RequestId>")
        parts.append("</Error>")
        return "".join(parts).encode()


METADATA_UNAVAILABLE = "The metadata service is unavailable. Please retry."
SERVICE_UNAVAILABLE = "A service this request needs is unavailable. Please retry."


def from_wire(exc: wire.WireError, message: str = METADATA_UNAVAILABLE) -> S3Error:
    """The one mapping of an internal call that failed (no raftmeta or blob node
    answered, or raftmeta refused a whole batch) to an S3 error: ServiceUnavailable,
    which clients retry, never InternalError; an S3 code raftmeta named is kept."""
    if exc.code != wire.ERR_UNAVAILABLE and exc.code in ERRORS:
        return S3Error(exc.code)
    log.warning("internal call failed: %s", exc)
    return S3Error("ServiceUnavailable", message)


def from_reply(reply: Mapping[str, Any]) -> S3Error:
    """The S3 error of a raftmeta reply with ``ok`` false: its code (and message) when it
    is one of S3's (NoSuchBucket, PreconditionFailed...), with the delete-marker headers
    when the reply names a marker; ServiceUnavailable when no leader could decide, else
    InternalError (logged: raftmeta and the frontend disagree)."""
    code = reply.get("err", "InternalError")
    if code == wire.ERR_UNAVAILABLE:
        return S3Error("ServiceUnavailable", METADATA_UNAVAILABLE)
    if code not in ERRORS:
        log.error("raftmeta error %s: %s", code, reply.get("msg"))
        return S3Error("InternalError")
    headers = {}
    if reply.get("marker"):  # the version named (or the latest) is a delete marker
        headers["x-amz-delete-marker"] = "true"
        if reply.get("vid") is not None:
            headers["x-amz-version-id"] = str(reply["vid"])
        if code == "MethodNotAllowed" and isinstance(reply.get("created"), (int, float)):
            headers["Last-Modified"] = email.utils.formatdate(reply["created"], usegmt=True)
    return S3Error(code, reply.get("msg") or None, headers=headers)
