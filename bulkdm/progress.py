"""The run's progress display: a live table on a terminal, a plain line every so often elsewhere.

The engine hands :class:`Snapshot` values to a :class:`Progress` made by :func:`make_progress`;
this module never reads the checkpoint or the limiters itself. At the end, :func:`summary_text`
gives the closing report.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from bulkdm.rows import RowState
from bulkdm.timestamps import local_time

__all__ = [
    "LIVE_REFRESH_S",
    "Progress",
    "SenderView",
    "Snapshot",
    "format_duration",
    "format_rate",
    "make_progress",
    "plain_line",
    "summary_text",
]

#: the live table is redrawn at most this often (4 times a second)
LIVE_REFRESH_S: Final = 0.25
#: beyond this many senders the live table shows a count of the rest
_MAX_SENDER_ROWS: Final = 30
_STATE_ORDER: Final = (
    RowState.SENT, RowState.FAILED, RowState.SKIPPED, RowState.INVALID,
    RowState.UNKNOWN, RowState.SENDING, RowState.PENDING,
)  # fmt: skip
_STATE_STYLES: Final = {
    RowState.SENT: "green", RowState.FAILED: "red", RowState.SKIPPED: "yellow",
    RowState.INVALID: "magenta", RowState.UNKNOWN: "cyan",
}  # fmt: skip
_SENDER_STATES: Final = ("ready", "waiting", "resting", "out", "done")
_SENDER_STYLES: Final = {
    "ready": "green", "waiting": "cyan", "resting": "yellow", "out": "red", "done": "dim",
}  # fmt: skip


@dataclass(frozen=True, kw_only=True, slots=True)
class SenderView:
    """One sender as shown: ``state`` is ``ready``, ``waiting`` (for a rate window or its
    pace: ``note`` says which, until when), ``resting``, ``out`` or ``done``. ``sent`` counts
    this run's sends."""

    account: str
    state: str
    sent: int
    next_slot_in_s: float | None
    #: why it rests or is out, e.g. ``"x_daily_limit until 14:02"``
    note: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    """The run at one moment. ``counts`` maps :class:`~bulkdm.rows.RowState` values to rows of
    the whole campaign (earlier runs included); each sender's ``sent`` is this run's. ``eta_s``
    counts the waits for rate windows (see :mod:`bulkdm.waits`)."""

    campaign: str
    counts: Mapping[str, int]
    total: int
    #: recent sends per second
    rate_per_s: float
    eta_s: float | None
    elapsed_s: float
    senders: Sequence[SenderView] = ()


class Progress(Protocol):
    """Takes snapshots during a run (it decides how often to show them) and the final one."""

    def due(self) -> bool:
        """Whether an :meth:`update` now would be shown (a snapshot reads every sender: with
        thousands of them, one not shown should not be built)."""
        ...

    def update(self, snap: Snapshot) -> None: ...

    def close(self, final: Snapshot) -> None: ...


def make_progress(
    stream: TextIO,
    *,
    interval_s: float,
    force: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Progress:
    """A live table if ``stream`` is a terminal, else a plain line every ``interval_s`` seconds.

    ``force`` is ``"live"``, ``"plain"`` or ``"none"`` (show nothing) to override the detection.

    :raises ValueError: for another ``force`` value or a negative ``interval_s``.
    """
    if force not in (None, "live", "plain", "none"):
        raise ValueError(f"force must be 'live', 'plain' or 'none', not {force!r}")
    if interval_s < 0:
        raise ValueError(f"interval_s must be >= 0, got {interval_s}")
    if force == "none":
        return _NoProgress()
    if force == "live" or (force is None and stream.isatty()):
        return _LiveProgress(stream, clock=clock)
    return _PlainProgress(stream, interval_s=interval_s, clock=clock)


class _NoProgress:
    def due(self) -> bool:
        return False

    def update(self, snap: Snapshot) -> None:
        pass

    def close(self, final: Snapshot) -> None:
        pass


class _PlainProgress:
    def __init__(self, stream: TextIO, *, interval_s: float, clock: Callable[[], float]) -> None:
        self._stream = stream
        self._interval_s = interval_s
        self._clock = clock
        self._last_s: float | None = None

    def due(self) -> bool:
        return self._last_s is None or self._clock() - self._last_s >= self._interval_s

    def update(self, snap: Snapshot) -> None:
        if not self.due():
            return
        self._last_s = self._clock()
        self._write(snap)

    def close(self, final: Snapshot) -> None:
        self._write(final)

    def _write(self, snap: Snapshot) -> None:
        print(plain_line(snap), file=self._stream, flush=True)


class _LiveProgress:
    def __init__(self, stream: TextIO, *, clock: Callable[[], float]) -> None:
        console = Console(file=stream, force_terminal=True)
        # no stdout redirection: that would swap sys.stdout for the whole process. stderr on the
        # same screen (the Ctrl-C notice) goes through the live display, printed above it: a
        # line written past it would shift the frame, and the next redraw would leave its title
        # and bar behind
        self._live = Live(
            console=console, auto_refresh=False, redirect_stdout=False,
            redirect_stderr=stream.isatty() and sys.stderr.isatty(),
        )
        self._clock = clock
        self._last_s: float | None = None
        self._live.start()

    def due(self) -> bool:
        return self._last_s is None or self._clock() - self._last_s >= LIVE_REFRESH_S

    def update(self, snap: Snapshot) -> None:
        if not self.due():
            return
        self._last_s = self._clock()
        self._live.update(live_view(snap), refresh=True)

    def close(self, final: Snapshot) -> None:
        self._live.update(live_view(final), refresh=True)
        self._live.stop()


def plain_line(snap: Snapshot) -> str:
    """``[welcome] 1234/5000 sent, 12 failed, 3750 pending | 4.9/s | ETA 12m30s | senders: ...``"""
    sent = snap.counts.get(RowState.SENT.value, 0)
    parts = [f"{sent}/{snap.total} sent"]
    parts += [
        f"{snap.counts[s.value]} {s.value}" for s in _STATE_ORDER[1:] if snap.counts.get(s.value, 0)
    ]
    eta = "--" if snap.eta_s is None else format_duration(snap.eta_s)
    line = f"[{snap.campaign}] {', '.join(parts)} | {format_rate(snap.rate_per_s)} | ETA {eta}"
    senders = _senders_brief(snap.senders)
    return f"{line} | {senders}" if senders else line


def _senders_brief(senders: Sequence[SenderView]) -> str:
    if not senders:
        return ""
    by_state = {state: sum(1 for s in senders if s.state == state) for state in _SENDER_STATES}
    text = "senders: " + ", ".join(f"{n} {state}" for state, n in by_state.items() if n)
    waiting = [s for s in senders if s.state not in ("out", "done")
               and s.next_slot_in_s is not None and s.next_slot_in_s >= 1.0]
    if not by_state["ready"] and waiting:
        # nothing can send now: say when something can, and why, so a quiet log does not look
        # stuck
        first = min(waiting, key=lambda s: s.next_slot_in_s or 0.0)
        text += f", next slot in {format_duration(first.next_slot_in_s or 0.0)}"
        if first.note:
            text += f" ({first.account}: {first.note})"
    # a ready sender's note says why it sends nothing (a failing lookup, a refused connection)
    notes = [f"{s.account}: {s.note}" for s in senders if s.state == "ready" and s.note]
    return "; ".join([text, *notes])


def live_view(snap: Snapshot) -> RenderableType:
    """The live display of one snapshot: a header, the row counts and the senders."""
    done = sum(snap.counts.get(s.value, 0) for s in _STATE_ORDER[:4])
    eta = "--" if snap.eta_s is None else format_duration(snap.eta_s)
    header = Text.assemble(
        (f"{snap.campaign}  ", "bold"),
        f"{done}/{snap.total} done  {format_rate(snap.rate_per_s)}  ETA {eta}  "
        f"elapsed {format_duration(snap.elapsed_s)}",
    )
    # a bare ProgressBar ends no line; a one-cell grid puts the next table below it
    bar = Table.grid()
    bar.add_row(ProgressBar(total=max(snap.total, 1), completed=done, width=60))
    return Group(header, bar, _counts_table(snap), _senders_table(snap.senders))


def _counts_table(snap: Snapshot) -> Table:
    table = Table(box=None, show_header=True, pad_edge=False)
    for state in _STATE_ORDER:
        table.add_column(state.value, justify="right", style=_STATE_STYLES.get(state))
    table.add_row(*(str(snap.counts.get(s.value, 0)) for s in _STATE_ORDER))
    return table


def _senders_table(senders: Sequence[SenderView]) -> Table:
    table = Table("sender", "state", "sent", "next slot", "note", box=None, pad_edge=False)
    for view in senders[:_MAX_SENDER_ROWS]:
        next_slot = "" if view.next_slot_in_s is None else format_duration(view.next_slot_in_s)
        table.add_row(
            view.account,
            Text(view.state, style=_SENDER_STYLES.get(view.state, "")),
            str(view.sent),
            next_slot,
            view.note or "",
        )
    if len(senders) > _MAX_SENDER_ROWS:
        table.add_row(f"... {len(senders) - _MAX_SENDER_ROWS} more", "", "", "", "")
    return table


def summary_text(
    final: Snapshot,
    *,
    finish_reason: str,
    failures_by_code: Mapping[str, int],
    resume_command: str | None,
    run_again_at_s: float | None = None,
    unnamed: Mapping[str, int] | None = None,
) -> str:
    """The end-of-run report: why it ended, rows by state, failures by code, senders, next step
    (``run_again_at_s``: when a paused run's next send can leave; ``unnamed``: rows in doubt
    of accounts the settings no longer name, by account)."""
    lines = [
        f"Campaign {final.campaign!r}: {finish_reason} after {format_duration(final.elapsed_s)}",
        "Rows (whole campaign, earlier runs included):",
    ]
    width = max((len(s.value) for s in _STATE_ORDER), default=0)
    for state in _STATE_ORDER:
        count = final.counts.get(state.value, 0)
        if count or state in (RowState.SENT, RowState.FAILED):
            of_total = f" of {final.total}" if state is RowState.SENT else ""
            lines.append(f"  {state.value:<{width}}  {count:>7}{of_total}")
    in_doubt = sum(final.counts.get(s.value, 0) for s in (RowState.UNKNOWN, RowState.SENDING))
    if in_doubt:
        lines.append(
            f"  {in_doubt} row(s) may have been delivered; the next run settles them "
            "before sending anything to those recipients"
        )
    for account, n in sorted((unnamed or {}).items()):
        # only its own key and conversation can settle them: nothing else ever will
        lines.append(f"  {n} of them were sent by {account}, which the settings no longer "
                     f"name: add {account} back to settle them (no other account sends them)")
    if failures_by_code:
        lines.append("Failures by code:")
        ranked = sorted(failures_by_code.items(), key=lambda item: (-item[1], item[0]))
        code_width = max(len(code) for code, _ in ranked)
        lines += [f"  {code:<{code_width}}  {n:>7}" for code, n in ranked]
    if final.senders:
        lines.append("Senders (this run):")
        lines += [_summary_sender(view) for view in final.senders]
    if run_again_at_s is not None:
        when = local_time(run_again_at_s)
        wait = format_duration(max(0.0, run_again_at_s - time.time()))
        lines.append(f"Next send possible at {when} (in {wait}): run again then, or run with "
                     "--until-done to wait in one run")
    if resume_command is not None:
        lines.append(f"To resume: {resume_command}")
    return "\n".join(lines) + "\n"


def _summary_sender(view: SenderView) -> str:
    note = f" ({view.note})" if view.note else ""
    return f"  {view.account}: {view.sent} sent this run, {view.state}{note}"


def format_rate(per_s: float) -> str:
    """``4.9/s``; slow rates per minute or hour (``1.0/min``, ``20.0/h``) so they do not read 0."""
    if per_s >= 1.0 or per_s <= 0.0 or not math.isfinite(per_s):
        return f"{per_s:.1f}/s" if math.isfinite(per_s) else "--/s"
    if per_s * 60.0 >= 1.0:
        return f"{per_s * 60.0:.1f}/min"
    return f"{per_s * 3600.0:.1f}/h"


def format_duration(seconds: float) -> str:
    """A short duration, two units at most: ``45s``, ``12m30s``, ``2h05m``, ``3d04h``."""
    if not math.isfinite(seconds):
        return "--"
    total_s = max(int(seconds), 0)
    days, rest_s = divmod(total_s, 86400)
    hours, rest_s = divmod(rest_s, 3600)
    minutes, secs = divmod(rest_s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
