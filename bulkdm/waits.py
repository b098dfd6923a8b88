"""Why a sender waits and how long the rest of a run takes: pure functions of the limiters.

The display asks these every quarter second; they read the limiters' state at a given ``now_s``
and never sleep, so tests drive them with plain numbers. The time left is the plan's estimate
(:func:`~bulkdm.report.estimate_duration`) of the rows still to send, each sender's starting
when its next slot opens: at the start of a run it equals the plan's estimate, and a sender
waiting for a full window adds that wait, instead of the ETA shrinking with a burst of sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from bulkdm.progress import format_duration
from bulkdm.ratelimit import WindowLimiter
from bulkdm.report import estimate_duration
from bulkdm.rows import UNBOUND
from bulkdm.settings import Settings

__all__ = [
    "SHOWN_WAIT_S", "WaitReason", "clock_time", "next_send_at_s", "time_left_s", "wait_reason",
]

#: a shorter wait is just the pace of sending: not worth a note
SHOWN_WAIT_S: Final = 1.0


def clock_time(epoch_s: float) -> str:
    """``14:02:05 CET``: the local time of day with its zone, as a person reads a clock (the
    notes beside it give UTC times); on another day than today, its date first."""
    when = time.localtime(epoch_s)
    today = time.localtime()[:3] == when[:3]
    return time.strftime("%H:%M:%S %Z" if today else "%Y-%m-%d %H:%M:%S %Z", when)


@dataclass(frozen=True, kw_only=True, slots=True)
class WaitReason:
    """What holds a sender back: ``who`` is ``"sender"`` or ``"api key"``; ``what`` is
    ``"rest"``, ``"pace"``, ``"jitter"`` or a rate whose window is full (``"5/1m"``)."""

    who: str
    what: str
    until_s: float

    def text(self, now_s: float, *, clock: Callable[[float], str] = clock_time) -> str:
        """``5/1m window full until 14:02:05 (49s)``, ``api key 120/1m window full ...``."""
        wait = f"until {clock(self.until_s)} ({format_duration(self.until_s - now_s)})"
        owner = "api key " if self.who == "api key" else ""
        if self.what == "rest":
            return f"{owner}resting (Retry-After) {wait}".strip()
        if self.what == "pace":
            return f"{owner}pacing: next send {wait}".strip()
        if self.what == "jitter":
            return f"jitter: next send {wait}"
        return f"{owner}{self.what} window full {wait}"


def wait_reason(
    sender: WindowLimiter, api_key: WindowLimiter, now_s: float, *, shown_s: float = SHOWN_WAIT_S,
    jitter_due_s: float | None = None,
) -> WaitReason | None:
    """The limit that holds the sender's next send longest, if that is ``shown_s`` or more.
    ``jitter_due_s``: when the sender's jittered gap lets its next send leave (``"jitter"``)."""
    holds = [("sender", what, until_s) for what, until_s in sender.holds(now_s)]
    holds += [("api key", what, until_s) for what, until_s in api_key.holds(now_s)]
    if jitter_due_s is not None and jitter_due_s > now_s:
        holds.append(("sender", "jitter", jitter_due_s))
    if not holds:
        return None
    who, what, until_s = max(holds, key=lambda hold: hold[2])
    if until_s - now_s < shown_s:
        return None
    return WaitReason(who=who, what=what, until_s=until_s)


def time_left_s(
    settings: Settings,
    left_by_sender: Mapping[str, int],
    *,
    first_wait_s: Mapping[str, float],
    api_key_wait_s: float = 0.0,
    now_s: float | None = None,
    first_sends: Mapping[str, float] | None = None,
) -> float | None:
    """Seconds until the last of the rows left is sent, ``None`` when no sender can send them.

    ``left_by_sender`` holds the rows left of the senders still in the run (and those bound to
    none yet, spread over the senders of ``first_wait_s``); ``first_wait_s``
    how long each waits for its next slot (:meth:`WindowLimiter.next_slot_in_s`), and
    ``api_key_wait_s`` the same for the key's shared budget. A sender with a send window sends
    only inside it, counted from ``now_s`` (default: the clock's now). ``first_sends``: each
    account's first send in the ledger, where its warm-up ramp counts from.
    """
    left = {account: n for account, n in left_by_sender.items() if n > 0}
    if not left:
        return 0.0
    if not set(left) - {UNBOUND} <= set(first_wait_s):
        return None  # a sender that is out still holds rows: they move, or they wait
    if UNBOUND in left and not first_wait_s:
        return None  # no sender left for the rows bound to none
    estimate = estimate_duration(settings, left, start_s=now_s, first_wait_s=first_wait_s,
                                 first_sends=first_sends)
    per_sender = [first_wait_s[a] + s for a, s in estimate.per_sender_s.items()
                  if s > 0 or left.get(a, 0) > 0]
    return max(max(per_sender, default=0.0), api_key_wait_s + estimate.api_key_s)


def next_send_at_s(
    senders: Iterable[tuple[WindowLimiter, float | None]], api_key: WindowLimiter, now_s: float
) -> float | None:
    """When the first of ``senders`` can send again: each is its limiter and when its next row
    is due (``None``: no row left); ``None`` when no sender has a row left."""
    key_s = api_key.next_allowed_s(now_s)
    times = [max(limiter.next_allowed_s(now_s), key_s, due_s)
             for limiter, due_s in senders if due_s is not None]
    return min(times, default=None)
