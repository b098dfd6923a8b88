"""Retry delays: capped exponential backoff with full jitter, never shorter than Retry-After."""

from __future__ import annotations

import random

from bulkdm.settings import RetrySettings

__all__ = ["retry_delay_s"]


def retry_delay_s(
    failures: int,
    retry: RetrySettings,
    *,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before try ``failures + 1``: uniform in [0, min(max, base * 2**(failures-1))].

    Full jitter spreads retries of many rows so they do not arrive together (AWS architecture
    blog, "Exponential Backoff And Jitter"); a server's ``Retry-After`` is a floor, not a hint.
    """
    ceiling_s = min(retry.max_delay_s, retry.base_delay_s * 2 ** max(0, failures - 1))
    delay_s = (rng or random).uniform(0.0, ceiling_s)
    return max(delay_s, retry_after_s or 0.0)
