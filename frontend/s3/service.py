"""The service: ListBuckets (``GET /``)."""

from __future__ import annotations

from typing import Any

from quart import Response

from frontend import s3xml
from frontend.context import Context, meta_call, xml_response


async def list_buckets(ctx: Context, request: Any) -> Response:
    """The buckets the caller may see (every bucket for an admin); a signed user only."""
    principal = request.principal
    query = {"q": "buckets"} if principal.admin else {"q": "visible_buckets", "user": principal.user}
    reply = await meta_call(ctx.meta.read(query))
    return xml_response(s3xml.list_buckets(reply["buckets"], principal.user))
