"""Recipients who answer like people do: a while after a DM, some of them write back.

``reply_*`` answer with :data:`REPLY_TEXTS` (several messages, so history spans pages with a
small ``history_page_size``), ``stopper_*`` answer ``STOP``, ``polite_*`` answer
:data:`POLITE_TEXT` (an opt-out only if the client's rules match it). Everyone else stays quiet.
"""

from __future__ import annotations

from typing import Final

__all__ = ["POLITE_TEXT", "REPLY_TEXTS", "STOP_TEXT", "answers_of"]

REPLY_TEXTS: Final = ("Thanks for writing!", "Tell me more about it", "Is there a discount?")
STOP_TEXT: Final = "STOP"
POLITE_TEXT: Final = "no thanks, please stop messaging me"


def answers_of(username: str) -> tuple[str, ...]:
    """What ``username`` writes back after a DM (nothing for most)."""
    name = username.lower()
    if name.startswith("reply_"):
        return REPLY_TEXTS
    if name.startswith("stopper_"):
        return (STOP_TEXT,)
    if name.startswith("polite_"):
        return (POLITE_TEXT,)
    return ()
