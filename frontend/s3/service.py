"""The service: ListBuckets (``GET /``), with the paging AWS added in 2024
(``max-buckets``, ``continuation-token``, ``prefix``, ``bucket-region``)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from quart import Response

from frontend import s3xml
from frontend.context import Context, meta_call, xml_response
from frontend.errors import S3Error

MAX_BUCKETS = 10000


def _token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _after(token: str) -> str:
    try:
        name = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
        if not name:
            raise ValueError(token)
        return name
    except (binascii.Error, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                      ArgumentName="continuation-token") from None


async def list_buckets(ctx: Context, request: Any, params: dict[str, str] | None = None) -> Response:
    """The buckets the caller may see (every bucket for an admin); a signed user only.
    Without ``max-buckets`` every bucket in one page, as before AWS paged them."""
    params = params or {}
    limit = MAX_BUCKETS
    if "max-buckets" in params:
        text = params["max-buckets"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_BUCKETS:
            raise S3Error("InvalidArgument", "Argument max-buckets must be an integer between 1 and 10000.",
                          ArgumentName="max-buckets", ArgumentValue=text)
        limit = int(text)
    after = _after(params["continuation-token"]) if params.get("continuation-token") else ""
    prefix = params.get("prefix")
    principal = request.principal
    query = {"q": "buckets"} if principal.admin else {"q": "visible_buckets", "user": principal.user}
    reply = await meta_call(ctx.meta.read(query))
    buckets = sorted(b for b in reply["buckets"] if b[0] > after and b[0].startswith(prefix or ""))
    if params.get("bucket-region") not in (None, ctx.region):
        buckets = []  # every bucket lives in this cluster's one region
    page = buckets[:limit]
    token = _token(page[-1][0]) if len(buckets) > limit else None
    return xml_response(s3xml.list_buckets(page, principal.user, token, prefix))
