"""``bulkdm run``: plan if needed, then send, keeping the handoff file and the display in step."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path
from typing import Final, Protocol, TextIO

from bulkdm.checkpoint import Checkpoint, mark_removed, respell_senders, set_last_run
from bulkdm.collector import tuned_collector
from bulkdm.engine import Engine, FinishReason, RunReport, SenderState
from bulkdm.errors import (
    BulkdmError,
    CheckpointLockedError,
    ForeignFileError,
    LedgerError,
    LedgerUnreachableError,
    ProviderError,
)
from bulkdm.ledger import AccountPool, campaign_key, ledger_spec, open_ledger, realm_for
from bulkdm.naming import beside
from bulkdm.optouts import campaign_realm, open_store
from bulkdm.outbox import Outbox
from bulkdm.ownership import claim_replies_file, claim_the_campaign, refuse_a_copy
from bulkdm.planner import ensure_plan, planned_settings
from bulkdm.progress import (
    Progress,
    SenderView,
    Snapshot,
    format_duration,
    make_progress,
    summary_text,
)
from bulkdm.providers import open_provider
from bulkdm.providers.base import Provider, SenderAuth
from bulkdm.ratelimit import WindowLimiter
from bulkdm.replies import (
    REPLIES_SUFFIX,
    ReadSpend,
    replies_lock,
    sync_replies,
    write_replies_file,
)
from bulkdm.report import format_report
from bulkdm.rows import UNBOUND
from bulkdm.runlock import RunLock
from bulkdm.sandbox import SandboxConfig, running_sandbox
from bulkdm.secrets import Secret, read_secret
from bulkdm.settings import ProviderName, RunSettings, Settings, token_env_of
from bulkdm.timestamps import iso_utc, local_time
from bulkdm.waits import clock_time, next_send_at_s, time_left_s, wait_reason

__all__ = ["ExitCode", "RunOptions", "campaign_provider", "run_campaign"]

_SANDBOX_KEY: Final = "sandbox-key"
_DISPLAY_PERIOD_S: Final = 0.25
_RATE_WINDOW_S: Final = 10.0
#: how often the display counts the rows left per sender in the checkpoint
_LEFT_RECOUNT_S: Final = 5.0
_LEFT_STATES: Final = ("pending", "unknown", "sending")


class _SenderLike(Protocol):
    """What the display reads of an engine's sender."""

    @property
    def account(self) -> str: ...
    @property
    def usable(self) -> bool: ...
    state: SenderState
    note: str | None
    sent: int
    limiter: WindowLimiter
    pool_note: str | None
    pool_until_s: float


class ExitCode(IntEnum):
    DONE = 0
    ERROR = 1
    USAGE = 2
    DONE_WITH_FAILURES = 3
    STOPPED = 4
    #: the spend cap or the same-error breaker stopped the run: the same command sends nothing
    #: more (or fails the same way) until the cap is raised or the cause fixed
    STOPPED_BY_POLICY = 5


_POLICY_STOPS: Final = frozenset({FinishReason.STOPPED_AT_SPEND_CAP,
                                  FinishReason.STOPPED_BY_BREAKER})


@dataclass(frozen=True, kw_only=True, slots=True)
class RunOptions:
    campaign: Path
    checkpoint: Path
    out: Path
    sandbox: bool = False
    progress: str | None = None
    delimiter: str | None = None
    #: the command that resumes this run, as the summary prints it (default: built from these)
    resume_command: str | None = None
    #: apply an edited campaign file or settings to the running campaign (``run --amend``)
    amend: bool = False


async def run_campaign(
    options: RunOptions,
    settings: Settings,
    *,
    stream: TextIO,
    stop: asyncio.Event,
    environ: Mapping[str, str] | None = None,
) -> ExitCode:
    """Plan (if the checkpoint has no plan yet) and send; the same call resumes a run."""
    with RunLock(options.checkpoint):
        checkpoint = await Checkpoint.open(options.checkpoint, synchronous=settings.run.synchronous)
        try:
            report = await ensure_plan(options.campaign, settings, checkpoint,
                                       delimiter=options.delimiter, amend=options.amend)
            await refuse_a_copy(checkpoint)  # recorded with the plan (a new one replaces meta)
            if options.amend:  # the settings may spell an account in another case now
                await checkpoint.submit(respell_senders(s.account for s in settings.senders))
            await _claim_the_campaign(checkpoint, settings, environ)
            if report.status != "unchanged":
                # a new plan's invalid rows are shown before anything is sent
                stream.write(format_report(report) + "\n\n")
            settings = await planned_settings(settings, checkpoint)
            async with _provider(settings, options, environ) as (live, provider, auths, key):

                async def send_all(probe: bool) -> _Sent:
                    # the ledger opened for each start: after an outage of its server, the
                    # pool registers again and reads every campaign's sends, as a new run does
                    async with _account_pool(live, options, key, environ) as pool:
                        return await _send_all(options, live, checkpoint, provider, auths,
                                               stream, stop, pool, probe=probe)

                with tuned_collector():
                    return await _send_through_outages(send_all, live.run, stream, stop,
                                                       checkpoint)
        finally:
            await checkpoint.close()


async def _claim_the_campaign(checkpoint: Checkpoint, settings: Settings,
                              environ: Mapping[str, str] | None) -> None:
    """This checkpoint runs the campaign, by the account ledger (off: the local check only)."""
    ledger = await open_store(settings, environ)
    if ledger is not None:
        try:
            await claim_the_campaign(checkpoint, ledger, now_s=time.time())
        finally:
            await ledger.close()


#: how a start of the run ended: its exit code, its report, and the ledger error that stopped it
_Sent = tuple[ExitCode, RunReport, LedgerError | None]
_PROVIDER: Final = "the provider"
_LEDGER: Final = "the account ledger"
#: what the wait line says of each
_DOWN: Final = {_PROVIDER: "the provider looks down", _LEDGER: "the account ledger is unreachable"}


async def _send_through_outages(
    send_all: Callable[[bool], Awaitable[_Sent]], run: RunSettings,
    stream: TextIO, stop: asyncio.Event, checkpoint: Checkpoint,
) -> ExitCode:
    """Send; with ``--until-done``, a run stopped by an outage (the same-error breaker on
    the provider's passing errors, or the account ledger's server unreachable) starts again
    after ``outage_wait_s`` (doubled after each stop that sent nothing), as the same command
    run again would: it resumes from the checkpoint and the ledger, with one send (a probe)
    until the provider answers after its outage."""
    idle_stops = 0
    probe = started = False
    while True:
        try:
            code, report, ledger_error = await send_all(probe)
        except LedgerUnreachableError as exc:
            if not started:  # at the first start it is a setting to fix (a wrong port, host)
                raise
            code, report, ledger_error = ExitCode.STOPPED, _ledger_down(exc), exc
        started = True
        down = _waits_for(run, report, ledger_error)
        if down is None or stop.is_set():
            if ledger_error is not None:  # as a file that cannot be written is said: one line
                sys.stderr.write(f"bulkdm: stopped: {report.detail}\n")
            return code
        probe = report.outage or (probe and not report.sent_this_run)
        idle_stops = 0 if report.sent_this_run else idle_stops + 1
        wait_s = min(run.outage_wait_s * 2 ** max(idle_stops - 1, 0), 16 * run.outage_wait_s)
        if not await _wait_out(checkpoint, report, down, wait_s, stream, stop):
            return ExitCode.STOPPED


def _waits_for(run: RunSettings, report: RunReport, ledger_error: LedgerError | None) -> str | None:
    """What ``--until-done`` waits out after this stop: the provider, the account ledger, or
    nothing (the run ends: no flag, or a stop no wait mends, as a ledger that fails answering)."""
    if not run.until_done:
        return None
    if isinstance(ledger_error, LedgerUnreachableError):
        return _LEDGER
    return _PROVIDER if report.outage else None


def _ledger_down(error: LedgerUnreachableError) -> RunReport:
    """The report of a start that could not open the ledger again (it sent nothing)."""
    return RunReport(finish_reason=FinishReason.INTERRUPTED, sent_this_run=0,
                     detail=f"{error}. Nothing is lost: once the account ledger answers, run "
                            "the same command to resume")


async def _wait_out(checkpoint: Checkpoint, report: RunReport, down: str, wait_s: float,
                    stream: TextIO, stop: asyncio.Event) -> bool:
    """Wait ``wait_s`` for ``down`` to answer again; False when a stop ended the wait."""
    again_s = time.time() + wait_s
    await _record_wait(checkpoint, report, down, again_s)
    stream.write(f"--until-done: {_DOWN[down]}; trying again at {local_time(again_s)} "
                 f"(in {format_duration(wait_s)}); Ctrl-C stops\n\n")
    stream.flush()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=wait_s)
    if not stop.is_set():
        return True
    # the command ends on the stop (exit 4), as a run interrupted does: so its record says
    await _record_wait(checkpoint, replace(report, finish_reason=FinishReason.INTERRUPTED),
                       down, None)
    stream.write(f"stopped while waiting for {down}; run the same command to resume\n")
    return False


async def _record_wait(checkpoint: Checkpoint, report: RunReport, down: str,
                       again_s: float | None) -> None:
    """For `status`: the run is not over, it waits until ``again_s`` (this process holds the
    checkpoint), and its senders wait for ``down``; ``None``: it waits no more (stopped)."""
    detail = report.detail if again_s is None else (
        f"{report.detail}; --until-done waits out the outage and tries again at "
        f"{iso_utc(again_s)}")
    await checkpoint.submit(set_last_run(
        finish_reason=report.finish_reason.value, ended_at=iso_utc(time.time()), detail=detail,
        waits_for=None if again_s is None else down,
        waits_until=None if again_s is None else iso_utc(again_s)))
    await checkpoint.flush()


@contextlib.asynccontextmanager
async def _provider(
    settings: Settings, options: RunOptions, environ: Mapping[str, str] | None
) -> AsyncIterator[tuple[Settings, Provider, dict[str, SenderAuth], Secret]]:
    async with contextlib.AsyncExitStack() as stack:
        if options.sandbox:
            sandbox = await stack.enter_async_context(running_sandbox(SandboxConfig()))
            url = sandbox.xquik_url if settings.provider.name is ProviderName.XQUIK \
                else sandbox.getxapi_url
            settings = replace(settings, provider=replace(settings.provider, base_url=url))
            api_key = Secret(_SANDBOX_KEY)
        else:
            api_key = read_secret(settings.provider.api_key_env, purpose="provider API key",
                                  environ=environ, source=settings.source,
                                  key="provider.api_key_env")
        auths = _sender_auths(settings, sandbox=options.sandbox, environ=environ)
        provider = await open_provider(settings.provider, api_key,
                                       concurrency=settings.run.concurrency)
        stack.push_async_callback(provider.aclose)
        yield settings, provider, auths, api_key


def campaign_provider(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> contextlib.AbstractAsyncContextManager[
        tuple[Settings, Provider, dict[str, SenderAuth], Secret]]:
    """The provider, sender auths and API key a campaign's runs use (``bulkdm replies``)."""
    return _provider(settings, RunOptions(campaign=Path(), checkpoint=Path(), out=Path()),
                     environ)


@contextlib.asynccontextmanager
async def _account_pool(
    settings: Settings, options: RunOptions, api_key: Secret, environ: Mapping[str, str] | None
) -> AsyncIterator[AccountPool | None]:
    """The shared ledger's pool for this campaign's accounts and key (None: the ledger is off)."""
    spec = ledger_spec(settings.accounts.ledger, environ)
    if spec is None:
        yield None
        return
    # the run reserves: a ledger of an earlier bulkdm is upgraded (a row a grant)
    ledger = await open_ledger(spec, now_s=time.time(), upgrade=True)
    try:
        pool = await AccountPool.open(
            ledger, realm=realm_for(settings.provider.base_url, sandbox=options.sandbox),
            campaign=campaign_key(settings.campaign.name, settings.campaign.campaign_id),
            api_key=api_key.reveal(),
            accounts={s.account: s.windows for s in settings.senders},
            key_rates=settings.provider.rates)
        try:
            yield pool
        finally:
            await _close_pool(pool)
    finally:
        await ledger.close()


async def _close_pool(pool: AccountPool) -> None:
    """Write what the pool holds. A ledger that fails here never hides how the run ended (an
    error raised before, or a summary): a failure the run reported is not reported again, and
    a new one is a note, as the sends it could not record count until their lease ends."""
    reported = pool.failure is not None
    try:
        await pool.close()
    except LedgerError as exc:
        if not reported:
            sys.stderr.write(f"bulkdm: note: {exc}; the last sends' times were not recorded "
                             "there, so the ledger counts them until their lease ends\n")


def _sender_auths(
    settings: Settings, *, sandbox: bool, environ: Mapping[str, str] | None
) -> dict[str, SenderAuth]:
    auths = {}
    for number, sender in enumerate(settings.senders, start=1):
        token = None
        if settings.provider.name is ProviderName.GETXAPI:
            if sandbox:
                token = Secret(f"tok-{sender.account}")
            else:
                token = read_secret(sender.auth_token_env or token_env_of(sender.account),
                                    purpose=f"X session token of {sender.account}",
                                    environ=environ, source=settings.source,
                                    key=f"senders[{number}].auth_token_env")
        auths[sender.account] = SenderAuth(account=sender.account, auth_token=token)
    return auths


async def _send_all(
    options: RunOptions, settings: Settings, checkpoint: Checkpoint, provider: Provider,
    auths: dict[str, SenderAuth], stream: TextIO, stop: asyncio.Event,
    pool: AccountPool | None = None, *, probe: bool = False,
) -> _Sent:
    # the engine's own stop: a halt it decides (a breaker, the spend cap) ends this run, not the
    # command, which may start again (_send_through_outages); a stop asked for reaches it
    run_stop = asyncio.Event()
    engine = Engine(settings=settings, checkpoint=checkpoint, provider=provider, auths=auths,
                    stop=run_stop, pool=pool, probe=probe)
    if pool is not None:
        # a ledger that fails stops the run as a Ctrl-C does: no new send starts, the sends in
        # flight end and are recorded in the checkpoint, and the summary says why
        pool.on_failure(lambda _error: run_stop.set())
    outbox = await Outbox.open(checkpoint, options.out, campaign=settings.campaign.name,
                               provider=settings.provider.name.value,
                               source_endpoint=provider.send_endpoint)
    display = make_progress(stream, interval_s=settings.run.progress_interval_s,
                            force=options.progress)
    started_s = time.monotonic()
    done = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_forward_stop(stop, run_stop, done, pool))
            tasks.create_task(outbox.follow(done, run_stop))
            replies = tasks.create_task(_sync_replies_while_running(
                options, settings, checkpoint, provider, auths, pool, done, run_stop, stream,
                engine))
            counted = checkpoint if options.progress != "none" else None
            tasks.create_task(_show(engine, settings, counted, display, started_s, done))
            ledger_error: LedgerError | None = None
            try:
                report = await _run_with_grace(engine, settings.run, run_stop)
            except LedgerError as exc:
                ledger_error = exc
            finally:
                done.set()
    except* BulkdmError as group:
        # a live table ends where it stood (rows left are not read again from a failed store)
        display.close(_snapshot(engine, settings, started_s, {}))
        # one task's error ends the run; show it, not the group that carried it
        raise group.exceptions[0] from None
    finally:
        await outbox.close()
    # the first the ledger failed on: a send's reservation, the pool's writes, a reply's opt-out
    ledger_error = ledger_error or (pool.failure if pool is not None else None) \
        or replies.result()
    if ledger_error is not None:
        report = _stopped_by_ledger(engine, ledger_error)
    elif engine.spend_cap_note is not None:  # the last sync's reads, after the sends ended
        report = replace(report, finish_reason=FinishReason.STOPPED_AT_SPEND_CAP,
                         detail=engine.spend_cap_note)
    left = _RowsLeft()
    await left.refresh(checkpoint, engine, force=True)
    final = _snapshot(engine, settings, started_s, left.now(engine))
    display.close(final)
    # a write failed while in-flight sends outlived the grace: still a storage stop, not a pause
    checkpoint.raise_if_failed()
    # how it ended, for `status` (and its --json)
    unnamed = await checkpoint.in_doubt_unnamed(s.account for s in settings.senders)
    await checkpoint.submit([*set_last_run(finish_reason=report.finish_reason.value,
                                           detail=report.detail, ended_at=iso_utc(time.time())),
                             *mark_removed(unnamed)])  # what status says of them
    await checkpoint.flush()
    failures = await checkpoint.failure_counts()
    again_s = await _run_again_at_s(engine, checkpoint) \
        if report.finish_reason is FinishReason.PAUSED else None
    stream.write(summary_text(final, finish_reason=report.finish_reason.value,
                              failures_by_code=failures, run_again_at_s=again_s,
                              unnamed=unnamed,
                              resume_command=None if report.finish_reason is FinishReason.COMPLETED
                              else _resume_command(options)) + "\n")
    if report.detail:
        stream.write(f"note: {report.detail}\n")
    stream.flush()
    return _exit_code(report, final), report, ledger_error


def _stopped_by_ledger(engine: Engine, error: LedgerError) -> RunReport:
    """The report of a run the account ledger stopped (its sends in flight ended): interrupted,
    and each sender with rows left says why (the same command resumes)."""
    why = "unreachable" if isinstance(error, LedgerUnreachableError) else "failing"
    for sender in engine.senders:
        if sender.state is SenderState.READY:  # a rest or a fault keeps its own note
            sender.note = f"stopped: the account ledger is {why}"
    return RunReport(finish_reason=FinishReason.INTERRUPTED,
                     detail=f"{error}. Nothing is lost: once the account ledger answers, run "
                            "the same command to resume",
                     sent_this_run=sum(s.sent for s in engine.senders))


async def _forward_stop(stop: asyncio.Event, run_stop: asyncio.Event, done: asyncio.Event,
                        pool: AccountPool | None) -> None:
    """A stop asked for (Ctrl-C, SIGTERM) stops the run, until the run is done; no sender
    waits for the account ledger then (a hung one would hold the run)."""
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(done.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    if stop.is_set():
        run_stop.set()
        if pool is not None:
            pool.stop()


async def _sync_replies_while_running(
    options: RunOptions, settings: Settings, checkpoint: Checkpoint, provider: Provider,
    auths: dict[str, SenderAuth], pool: AccountPool | None, done: asyncio.Event,
    stop: asyncio.Event, stream: TextIO, budget: ReadSpend,
) -> LedgerError | None:
    """With ``[replies] sync_every``, read replies that often while the run goes on, and once
    more when it ends (not when it was stopped), each conversation when it is due (old quiet
    ones less often, :mod:`bulkdm.policies.rereads`): reads only, beside the engine's sends, within
    the spend cap they share (``budget``: a read that would cross it stops the run at the cap).
    A ledger that fails (an opt-out cannot be shared) stops the run as a send's would: it is
    returned, and the run ends as stopped by the ledger."""
    every_s = settings.replies.sync_every_s
    if every_s <= 0:
        return None
    out = beside(options.campaign, REPLIES_SUFFIX)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=every_s)
        if stop.is_set():
            return None
        try:
            with replies_lock(checkpoint.path):
                out = await claim_replies_file(checkpoint, out)
                await sync_replies(checkpoint, settings, provider, auths,
                                   ledger=None if pool is None else pool.ledger,
                                   realm=campaign_realm(settings) if pool is None else pool.realm,
                                   now_s=time.time, budget=budget, due_only=True)
                await write_replies_file(checkpoint, out, campaign=settings.campaign.name)
        except CheckpointLockedError:
            pass  # `bulkdm replies` is reading them now
        except (ProviderError, ForeignFileError) as exc:  # reading replies never stops the sends
            stream.write(f"note: replies not read: {exc}\n")
            return None
        except LedgerError as exc:
            # the reply that said STOP is read again by the next sync (the ledger is written
            # first); sending on meanwhile would hide that opt-outs are not being shared
            stop.set()
            return exc
        if done.is_set():
            return None


async def _run_again_at_s(engine: Engine, checkpoint: Checkpoint) -> float | None:
    """When a paused run's first send could leave: its senders' windows and rests, the key's,
    and when their rows are due (an out sender sends nothing until it is fixed). Rows bound to
    no sender yet are any usable sender's."""
    unbound_s = await checkpoint.next_unbound_due_s()
    senders = [(s.limiter, _not_before(_earliest(await checkpoint.next_due_s(s.account),
                                                 unbound_s), s.free_at_s))
               for s in engine.senders if s.usable]
    return next_send_at_s(senders, engine.api_key_limiter, time.time())


def _not_before(due_s: float | None, free_s: float | None) -> float | None:
    # a sender that stopped for the run knows when it is free (the shared ledger's refusal:
    # another campaign filled the day), which this run's own limiters do not
    return None if due_s is None else max(due_s, free_s or due_s)


def _earliest(*times: float | None) -> float | None:
    return min((t for t in times if t is not None), default=None)


async def _run_with_grace(engine: Engine, run: RunSettings, stop: asyncio.Event) -> RunReport:
    """Run the engine; once a stop is asked for, in-flight sends get ``stop_grace_s`` to end."""
    task = asyncio.create_task(engine.run())
    await asyncio.wait([task, asyncio.create_task(stop.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout=run.stop_grace_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # rows still in flight stay "sending": the next run settles them before anything
            return RunReport(finish_reason=FinishReason.INTERRUPTED,
                             detail="in-flight sends did not finish in time; the next run "
                                    "settles them", sent_this_run=0)
    return task.result()


async def _show(engine: Engine, settings: Settings, checkpoint: Checkpoint | None,
                display: Progress, started_s: float, done: asyncio.Event) -> None:
    """Hand the display a snapshot every quarter second; ``checkpoint`` is where the rows left
    are counted for the ETA (``None`` when nothing is shown: no query then)."""
    left = _RowsLeft()
    while not done.is_set():
        # empty until the engine has read the checkpoint; and a snapshot reads every sender,
        # so none is built that the display would not show (10,000 senders, shown nowhere:
        # 0.4 of a core at four snapshots a second)
        if engine.counts and display.due():
            if checkpoint is not None:
                await left.refresh(checkpoint, engine)
            display.update(_snapshot(engine, settings, started_s, left.now(engine)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=_DISPLAY_PERIOD_S)


class _RowsLeft:
    """Rows left per sender for the ETA: counted in the checkpoint every few seconds (one
    indexed query a state), less what each sender sent since."""

    def __init__(self) -> None:
        self._counted: dict[str, int] = {}
        self._sent_then: dict[str, int] = {}
        self._counted_at_s: float | None = None

    async def refresh(self, checkpoint: Checkpoint, engine: Engine, *, force: bool = False) -> None:
        now_s = time.monotonic()
        if not force and self._counted_at_s is not None \
                and now_s - self._counted_at_s < _LEFT_RECOUNT_S:
            return
        counted: Counter[str] = Counter()
        for state in _LEFT_STATES:
            counted.update(await checkpoint.sender_counts(state))
        self._counted = dict(counted)
        self._sent_then = {s.account: s.sent for s in engine.senders}
        self._counted_at_s = now_s

    def now(self, engine: Engine) -> dict[str, int]:
        left = dict(self._counted)
        for sender in engine.senders:
            since = sender.sent - self._sent_then.get(sender.account, sender.sent)
            own = left.get(sender.account, 0)
            left[sender.account] = max(0, own - since)
            if since > own and left.get(UNBOUND):  # the rest were unbound rows it claimed
                left[UNBOUND] = max(0, left[UNBOUND] - (since - own))
        return left


def _snapshot(
    engine: Engine, settings: Settings, started_s: float, left_by_sender: Mapping[str, int]
) -> Snapshot:
    now = time.time()
    recent = [t for t in engine.recent_sends_s if t >= now - _RATE_WINDOW_S]
    engine.recent_sends_s[:] = recent
    elapsed_s = time.monotonic() - started_s
    rate = len(recent) / min(_RATE_WINDOW_S, max(elapsed_s, 1e-3))
    counts = {k: v for k, v in engine.counts.items() if v}
    senders = [_sender_view(engine, s, now) for s in engine.senders]
    waits = {v.account: v.next_slot_in_s for v in senders if v.next_slot_in_s is not None}
    eta_s = time_left_s(settings, left_by_sender, first_wait_s=waits,
                        api_key_wait_s=engine.api_key_limiter.next_slot_in_s(now), now_s=now,
                        first_sends=engine.first_sends)
    return Snapshot(campaign=settings.campaign.name, counts=counts, total=sum(counts.values()),
                    rate_per_s=rate, eta_s=eta_s, elapsed_s=elapsed_s, senders=senders)


def _sender_view(engine: Engine, sender: _SenderLike, now_s: float) -> SenderView:
    """A sender as shown, with why it waits (which window, until when) when its note is empty."""
    state = sender.state.value
    if not sender.usable:
        return SenderView(account=sender.account, state=state, sent=sender.sent,
                          next_slot_in_s=None, note=sender.note)
    reason = wait_reason(sender.limiter, engine.api_key_limiter, now_s,
                         jitter_due_s=engine.jitter_due_s(sender.account))
    pooled = sender.pool_until_s > now_s  # the shared ledger holds it back
    if sender.limiter.is_resting(now_s):
        state = "resting"
    elif state == "ready" and (reason is not None or pooled):
        state = "waiting"
    note = sender.note
    if note is None and pooled and state != "done":
        note = f"{sender.pool_note} until {clock_time(sender.pool_until_s)}"
    if note is None and reason is not None and state != "done":
        note = reason.text(now_s)
    next_s = max(engine.next_slot_in_s(sender.account),
                 sender.pool_until_s - now_s if pooled else 0.0)
    return SenderView(account=sender.account, state=state, sent=sender.sent,
                      next_slot_in_s=max(0.0, next_s), note=note)


def _resume_command(options: RunOptions) -> str:
    if options.resume_command is not None:
        return options.resume_command
    parts = ["bulkdm", "run", str(options.campaign), "--checkpoint", str(options.checkpoint)]
    if options.sandbox:
        parts.append("--sandbox")
    return shlex.join(parts)


def _exit_code(report: RunReport, final: Snapshot) -> ExitCode:
    if report.finish_reason in _POLICY_STOPS:
        return ExitCode.STOPPED_BY_POLICY
    if report.finish_reason is not FinishReason.COMPLETED:
        return ExitCode.STOPPED
    if final.counts.get("failed") or final.counts.get("invalid"):
        return ExitCode.DONE_WITH_FAILURES
    return ExitCode.DONE
