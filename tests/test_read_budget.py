"""The API key's read budget: every lookup, poll and history read of both clients takes one read
from an ``aiolimiter`` bucket; sends take none; an empty bucket holds reads, never sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bulkdm.outcomes import Action
from bulkdm.providers import DmRequest, GetXapiProvider, HttpClient, SenderAuth, XquikProvider
from bulkdm.providers.readbudget import ReadBudget
from bulkdm.rates import Rate
from bulkdm.sandbox import Faults, Sandbox, SandboxConfig, running_sandbox
from bulkdm.secrets import Secret
from bulkdm.settings import DEFAULT_READ_RATES, ProviderName, ProviderSettings, load_settings

SINCE = "2000-01-01T00:00:00Z"
#: a budget no test drains by time: what is taken stays taken for the test's length
HOURLY = Rate(count=10, period_s=3600.0)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(SandboxConfig()) as running:
        yield running


def _http(*rates: Rate) -> HttpClient:
    return HttpClient.open(concurrency=4, request_timeout_s=10.0, read_rates=rates)


def _xquik(sandbox: Sandbox, http: HttpClient) -> XquikProvider:
    return XquikProvider(http=http, base_url=sandbox.xquik_url, api_key=Secret("xq_k"),
                         poll_timeout_s=10.0)


def _getxapi(sandbox: Sandbox, http: HttpClient) -> GetXapiProvider:
    return GetXapiProvider(http=http, base_url=sandbox.getxapi_url, api_key=Secret("gx_k"))


def _dm(sandbox: Sandbox, recipient: str, *, key: str = "k-1") -> DmRequest:
    return DmRequest(recipient_id=sandbox.directory.register(recipient),
                     sender=SenderAuth(account="alice", auth_token=Secret("tok-alice")),
                     text=f"hello {recipient}", idempotency_key=key)


async def test_xquik_lookups_polls_and_history_each_take_one_read(sandbox: Sandbox) -> None:
    http = _http(HOURLY)
    xquik = _xquik(sandbox, http)
    try:
        for name in ("amy", "ben"):
            assert (await xquik.resolve(name, SenderAuth(account="alice"))).ok
        assert http.reads.room() == 8
        assert (await xquik.send(_dm(sandbox, "cat"))).ok
        assert http.reads.room() == 8  # a send is a write: the window log meters it, not this
        sandbox.reconfigure(SandboxConfig(faults=Faults(accept_rate=1.0, accept_polls=2)))
        assert (await xquik.send(_dm(sandbox, "dee", key="k-2"))).ok
        assert http.reads.room() == 6  # 202, then two polls of the write action
        found = await xquik.reconcile(_dm(sandbox, "dee", key="k-2"), SINCE)
        assert found.found is True
        assert http.reads.room() == 5  # one page of history
    finally:
        await xquik.aclose()


async def test_getxapi_lookups_and_conversation_reads_each_take_one_read(
        sandbox: Sandbox) -> None:
    http = _http(HOURLY)
    getxapi = _getxapi(sandbox, http)
    request = _dm(sandbox, "amy")
    try:
        assert (await getxapi.resolve("amy", request.sender)).ok
        assert (await getxapi.send(request)).ok
        assert http.reads.room() == 9
        assert (await getxapi.reconcile(request, SINCE)).found is True
        assert http.reads.room() == 7  # dm/list (the sender's own id), then one conversation page
        assert (await getxapi.reconcile(request, SINCE)).found is True
        assert http.reads.room() == 6  # the own id is asked once
    finally:
        await getxapi.aclose()


async def test_an_empty_read_budget_holds_reads_and_lets_sends_go(sandbox: Sandbox) -> None:
    http = _http(Rate(count=1, period_s=3600.0))
    xquik = _xquik(sandbox, http)
    try:
        assert (await xquik.resolve("amy", SenderAuth(account="alice"))).ok
        waiting = asyncio.create_task(xquik.resolve("ben", SenderAuth(account="alice")))
        sent = await xquik.send(_dm(sandbox, "cat"))
        assert sent.action is Action.DONE
        # the send went out and came back while the read still waits for the bucket to drain
        assert not waiting.done()
        assert http.reads.room() == 0
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        await xquik.aclose()


async def test_several_read_rates_are_all_kept() -> None:
    budget = ReadBudget([Rate(count=5, period_s=3600.0), Rate(count=3, period_s=7200.0)])
    for _ in range(2):
        await budget.acquire()
    assert budget.room() == 1
    assert ReadBudget().room() is None
    assert repr(budget) == "ReadBudget(5/3600s, 3/7200s)"


@pytest.mark.parametrize("provider", list(ProviderName))
def test_each_provider_has_its_own_default_read_rate(tmp_path: Path, provider: str) -> None:
    campaign = tmp_path / "c.jsonl"
    campaign.write_text("")
    config = tmp_path / "c.toml"
    token = '\nauth_token_env = "T"' if provider == "getxapi" else ""
    senders = f'[[senders]]\naccount = "a"{token}\n'
    config.write_text(f'[provider]\nname = "{provider}"\n{senders}')
    default = load_settings(campaign).provider.read_limits
    assert default == DEFAULT_READ_RATES[ProviderName(provider)]
    config.write_text(f'[provider]\nname = "{provider}"\nread_rate = "7/1s"\n{senders}')
    assert load_settings(campaign).provider.read_limits == (Rate(count=7, period_s=1.0),)
    # settings built in code take the named provider's default too
    built = ProviderSettings(name=ProviderName(provider))
    assert built.read_limits == DEFAULT_READ_RATES[ProviderName(provider)]


def test_the_defaults_are_half_of_what_the_providers_publish() -> None:
    # the bucket's burst lets up to twice its rate through in one period (readbudget's docstring)
    published = {ProviderName.XQUIK: Rate(count=300, period_s=1.0),
                 ProviderName.GETXAPI: Rate(count=900, period_s=900.0)}
    for name, (rate,) in DEFAULT_READ_RATES.items():
        assert 2 * rate.count <= published[name].count
        assert rate.period_s == published[name].period_s
