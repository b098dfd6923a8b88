"""When a run's sync reads a conversation again (``[replies] sync_every``).

Replies mostly come soon after a DM, and every read is billed, so a conversation whose last
read found nothing new is due again after a quarter of the DM's age at that read, never sooner
than ``sync_every`` and never later than a day: a DM an hour old is read again 15 minutes on,
a week-old one once a day. A conversation whose last read found an answer is due at the next
sync (the person may be writing). Pure: the sync asks :func:`due` with the times it recorded;
the plan counts the reads with :func:`read_ages_s`.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["AGE_SHARE", "MAX_INTERVAL_S", "due", "read_ages_s", "reread_interval_s", "run_reads"]

#: a quiet conversation is read again after its DM's age divided by this ...
AGE_SHARE: Final = 4.0
#: ... and at least once a day
MAX_INTERVAL_S: Final = 86_400.0


def reread_interval_s(*, age_s: float, sync_every_s: float) -> float:
    """How long after a read that found nothing new, at ``age_s`` of the DM, it is due again."""
    return max(sync_every_s, min(age_s / AGE_SHARE, MAX_INTERVAL_S))


def due(*, now_s: float, dm_at_s: float | None, read_at_s: float | None, answered: bool,
        sync_every_s: float) -> bool:
    """Whether a run's sync reads this conversation now: never read (or its times unknown),
    answered at its last read and a sync later, or quiet and its interval passed."""
    if read_at_s is None or dm_at_s is None:
        return True
    interval_s = sync_every_s if answered else \
        reread_interval_s(age_s=read_at_s - dm_at_s, sync_every_s=sync_every_s)
    return now_s - read_at_s >= interval_s


def read_ages_s(*, sync_every_s: float, until_s: float) -> list[float]:
    """The ages of a quiet DM at which a run's syncs read it, up to ``until_s``: the first
    sync after it, then on :func:`reread_interval_s`."""
    ages: list[float] = []
    age_s = sync_every_s
    while sync_every_s > 0 and age_s <= until_s:
        ages.append(age_s)
        age_s += reread_interval_s(age_s=age_s, sync_every_s=sync_every_s)
    return ages


def run_reads(*, conversations: int, sync_every_s: float, run_s: float) -> int:
    """About how many conversation reads a run's syncs make over ``run_s``: the DMs sent
    evenly over it, each quiet one read at :func:`read_ages_s` while the run lasts, and each
    once more by the run's last sync."""
    if sync_every_s <= 0 or conversations == 0:
        return 0
    if run_s <= 0:
        return conversations
    # a DM sent at a share s of the run is read at age a if a <= (1 - s) run_s: a share
    # 1 - a / run_s of the DMs
    spread = sum(1 - age / run_s for age in read_ages_s(sync_every_s=sync_every_s, until_s=run_s))
    return math.ceil(conversations * (spread + 1))
