"""Provider clients for the hosted DM APIs, behind one interface (:class:`Provider`).

Build one per run with :func:`open_provider` and close it with ``await provider.aclose()``::

    provider = await open_provider(settings.provider, api_key, concurrency=64)
    try:
        outcome = await provider.send(request)
    finally:
        await provider.aclose()
"""

from __future__ import annotations

from bulkdm.providers.base import DmRequest, Provider, SenderAuth
from bulkdm.providers.getxapi import GetXapiProvider
from bulkdm.providers.http import HttpClient
from bulkdm.providers.xquik import XquikProvider
from bulkdm.secrets import Secret
from bulkdm.settings import ProviderName, ProviderSettings

__all__ = [
    "DmRequest",
    "GetXapiProvider",
    "HttpClient",
    "Provider",
    "SenderAuth",
    "XquikProvider",
    "open_provider",
]


async def open_provider(
    settings: ProviderSettings, api_key: Secret, *, concurrency: int = 64
) -> Provider:
    """The client ``settings.name`` names, with its own session and connection pool.

    :param concurrency: sends in flight at once; the pool holds that many connections plus a
        few for lookups, history reads and polls, which keep ``settings.read_limits``
    """
    http = HttpClient.open(concurrency=concurrency, request_timeout_s=settings.request_timeout_s,
                           read_rates=settings.read_limits)
    if settings.name is ProviderName.GETXAPI:
        return GetXapiProvider(http=http, base_url=settings.base_url, api_key=api_key)
    return XquikProvider(
        http=http,
        base_url=settings.base_url,
        api_key=api_key,
        poll_timeout_s=settings.poll_timeout_s,
    )
