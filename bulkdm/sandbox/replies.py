"""Building answers: JSON bodies through orjson, and cutting a connection without any answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

__all__ = ["cut_connection", "json_reply", "read_json_object"]


def json_reply(
    body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response; orjson keeps the hot path cheap."""
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def cut_connection(request: web.Request) -> web.Response:
    """Close the TCP connection now, so the client sees a disconnect and no response bytes.

    The returned response is never written (aiohttp finds the transport closed and drops it).
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


async def read_json_object(request: web.Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None if it is not valid JSON or not an object."""
    try:
        value = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
