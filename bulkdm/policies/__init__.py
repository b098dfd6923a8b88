"""Pacing policies for campaigns that run for days: pure functions of ``now`` (and an
account's history), asked by the engine where it takes a slot; they never await."""

from __future__ import annotations

from bulkdm.policies.windows import SendWindow, parse_send_window, windowed_duration_s

__all__ = ["SendWindow", "parse_send_window", "windowed_duration_s"]
