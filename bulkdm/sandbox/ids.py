"""Identifiers the sandbox hands out: X-style snowflakes, write-action ids, request ids."""

from __future__ import annotations

import time
import uuid

__all__ = ["IdSource"]

#: X's snowflake epoch (2010-11-04), in milliseconds
_X_EPOCH_MS = 1288834974657


class IdSource:
    """Strictly increasing snowflakes (19 digits, time-ordered like X's), and counters."""

    def __init__(self) -> None:
        self._last_snowflake = 0
        self._next_action = 10_001
        self._next_request = 1
        # a per-instance prefix keeps request ids from two sandbox runs apart
        self._request_prefix = uuid.uuid4().hex[:8]

    def snowflake(self) -> str:
        fresh = (int(time.time() * 1000) - _X_EPOCH_MS) << 22
        self._last_snowflake = max(fresh, self._last_snowflake + 1)
        return str(self._last_snowflake)

    def action_id(self) -> str:
        action_id = self._next_action
        self._next_action += 1
        return str(action_id)

    def request_id(self) -> str:
        request_id = self._next_request
        self._next_request += 1
        return f"req_{self._request_prefix}{request_id:010d}"
