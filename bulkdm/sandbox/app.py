"""The sandbox server: both providers' routes on one aiohttp app, plus ``/_sandbox`` controls."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
from aiohttp import web

from bulkdm.sandbox.config import SandboxConfig
from bulkdm.sandbox.directory import Directory
from bulkdm.sandbox.getxapi import GetXapiRoutes
from bulkdm.sandbox.ledger import Delivery
from bulkdm.sandbox.replies import json_reply
from bulkdm.sandbox.state import SandboxState
from bulkdm.sandbox.xquik import PREFIX as XQUIK_PREFIX
from bulkdm.sandbox.xquik import XquikRoutes
from bulkdm.sandbox.xquik_input import MAX_MEDIA_BYTES

__all__ = ["DEFAULT_CONFIG", "Sandbox", "running_sandbox"]

DEFAULT_CONFIG = SandboxConfig()
#: how long ``stop`` lets in-flight requests (say, ones sleeping out a latency) finish
STOP_GRACE_S = 2.0
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Sandbox:
    """A local server that answers like Xquik and GetXAPI, records deliveries and injects faults.

    Example::

        async with running_sandbox(SandboxConfig(faults=Faults(drop_rate=0.1))) as sandbox:
            provider = XquikProvider(base_url=sandbox.xquik_url, ...)
            ...
            assert len(sandbox.ledger) == sent

    :param clock: monotonic seconds for the rate windows (tests may pass a fake one)
    """

    def __init__(
        self, config: SandboxConfig = DEFAULT_CONFIG, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._state = SandboxState(config, clock=clock)
        self._runner: web.AppRunner | None = None
        self._root_url: str | None = None

    @property
    def config(self) -> SandboxConfig:
        return self._state.config

    @property
    def ledger(self) -> list[Delivery]:
        """Every delivered DM, in delivery order (the same list for the sandbox's lifetime)."""
        return self._state.ledger.deliveries

    @property
    def replies(self) -> list[Delivery]:
        """Every answer a recipient wrote back (see :mod:`bulkdm.sandbox.people`), in order."""
        return self._state.ledger.replies

    @property
    def uploads(self) -> dict[str, str]:
        """Every media upload accepted: its media id and the public URL history shows."""
        return self._state.media_urls

    @property
    def history_reads(self) -> Counter[tuple[str, str]]:
        """History pages served (Xquik's history, GetXAPI's ``dm/conversation``) per
        conversation, by its two user ids, lower first."""
        return self._state.history_reads

    @property
    def directory(self) -> Directory:
        """The sandbox's users: ``directory.register("alice")`` gives alice's id."""
        return self._state.directory

    @property
    def root_url(self) -> str:
        if self._root_url is None:
            raise RuntimeError("the sandbox is not running; await sandbox.start() first")
        return self._root_url

    @property
    def xquik_url(self) -> str:
        """The Xquik ``base_url`` (``.../api/v1``)."""
        return self.root_url + XQUIK_PREFIX

    @property
    def getxapi_url(self) -> str:
        """The GetXAPI ``base_url`` (paths start ``/twitter/``)."""
        return self.root_url

    def reconfigure(self, config: SandboxConfig) -> None:
        """Swap faults and limits now; the ledger, actions and idempotency keys are kept."""
        self._state.reconfigure(config)

    def reset(self) -> None:
        """Forget every delivery, action, idempotency key, window and user."""
        self._state.reset()

    def build_app(self) -> web.Application:
        """The aiohttp application (what :meth:`start` serves)."""
        app = web.Application(
            middlewares=[self._latency], client_max_size=MAX_MEDIA_BYTES + 1024 * 1024
        )
        app.add_routes(XquikRoutes(self._state).routes())
        app.add_routes(GetXapiRoutes(self._state).routes())
        app.add_routes(
            [
                web.get("/_sandbox/ledger", self._ledger_route),
                web.post("/_sandbox/reset", self._reset_route),
            ]
        )
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host:port`` (0 picks a free port); the URLs are set once this returns."""
        if self._runner is not None:
            raise RuntimeError("the sandbox is already running")
        runner = web.AppRunner(
            self.build_app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=STOP_GRACE_S,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self._root_url = f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        """Stop serving and close every connection; the ledger stays readable."""
        runner, self._runner, self._root_url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    @web.middleware
    async def _latency(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        own = request.path.startswith("/_sandbox/")
        arrival_s = 0.0 if own else self._state.dice.arrival_delay_s()
        if arrival_s > 0:
            # before the handler: the delivery's stamp is taken that much later
            await asyncio.sleep(arrival_s)
        response = await handler(request)
        delay_s = self._state.dice.delay_s()
        if delay_s > 0 and not own:
            await asyncio.sleep(delay_s)
        return response

    async def _ledger_route(self, request: web.Request) -> web.StreamResponse:
        """``GET /_sandbox/ledger?offset=N``: the deliveries from the N-th on."""
        offset_text = request.query.get("offset", "0")
        offset = int(offset_text) if offset_text.isdigit() else 0
        deliveries = self.ledger[offset:]
        body = orjson.dumps({"deliveries": deliveries, "total": len(self.ledger)})
        return web.Response(body=body, content_type="application/json")

    async def _reset_route(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return json_reply({"status": "reset"})


@asynccontextmanager
async def running_sandbox(
    config: SandboxConfig = DEFAULT_CONFIG, *, port: int = 0
) -> AsyncIterator[Sandbox]:
    """A started :class:`Sandbox` on 127.0.0.1, stopped on exit."""
    sandbox = Sandbox(config)
    await sandbox.start(port=port)
    try:
        yield sandbox
    finally:
        await sandbox.stop()
