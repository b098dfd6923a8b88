"""Breakers: stop sending from an account that X keeps refusing, and stop a run whose sends all
fail the same way. Pure functions of the recent outcomes; the engine feeds them and acts.

* The **refusal breaker** watches an account's last ``sample`` sends: when more than
  ``threshold`` of that sample were refused by their recipients (DMs closed, not found,
  protected, blocked), the account rests for ``cooldown_s``. The share is of the whole sample
  from the first send on, so a run of refusals trips it within the sample.
* The **same-error breaker** watches the answers of the campaign's last ``sample`` calls to the
  provider (every sender's sends, final or not, and its lookups, uploads and reads): when one
  error code is most of them (``share``), the run stops (an outage, a bad template, a bad list)
  instead of burning through the list. A throttled read (429) is pacing and no error; but reads
  refused with none answered for ``max_read_throttle_s`` are an outage too: a provider that
  throttles without end would hold the run for ever.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["REFUSAL_CODES", "RefusalBreaker", "SameErrorBreaker"]

#: a recipient's refusal of a DM: X reads many of them as spam
REFUSAL_CODES: Final = frozenset({
    "x_dm_not_allowed", "x_target_not_found", "user_not_found", "x_account_protected",
    "x_blocked", "blocked", "recipient_not_found",
})


@dataclass(frozen=True, kw_only=True, slots=True)
class RefusalBreaker:
    sample: int = 20
    threshold: float = 0.3
    cooldown_s: float = 6 * 3600.0

    def trips(self, refused: Sequence[bool]) -> bool:
        """True when the last ``sample`` sends (``True``: refused) hold too many refusals."""
        return sum(refused[-self.sample:]) > self.threshold * self.sample

    def why(self, refused: Sequence[bool]) -> str:
        count = sum(refused[-self.sample:])
        return (f"refusal breaker: {count} of its last {min(len(refused), self.sample)} sends "
                f"refused (over {self.threshold * 100:g}% of {self.sample})")


@dataclass(frozen=True, kw_only=True, slots=True)
class SameErrorBreaker:
    sample: int = 10
    share: float = 0.8
    max_read_throttle_s: float = 600.0

    def throttled_too_long(self, refused_since_s: float, now_s: float) -> bool:
        """True when reads have been refused as throttled, none answered, since
        ``refused_since_s`` for longer than ``max_read_throttle_s`` (never with ``sample = 0``)."""
        return self.sample > 0 and now_s - refused_since_s > self.max_read_throttle_s

    def trips(self, codes: Sequence[str | None]) -> str | None:
        """The error code that holds ``share`` or more of the last ``sample`` calls (``None``
        a success), once there are that many; else ``None``."""
        if self.sample <= 0 or len(codes) < self.sample:
            return None
        recent = [c for c in codes[-self.sample:] if c is not None]
        if not recent:
            return None
        code, count = Counter(recent).most_common(1)[0]
        return code if count >= self.share * self.sample else None
