"""What a sandbox simulates: injected faults and the limits it enforces (frozen values)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bulkdm.rates import Rate

__all__ = ["Faults", "SandboxConfig"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Faults:
    """Faults injected into DM sends, each drawn independently from ``random.Random(seed)``.

    ``arrival_jitter_ms`` delays a request before anything else looks at it. The others are
    applied after authentication, validation, the directory and the rate windows, in this order:
    ``rate_limit_rate`` (a spurious 429, not delivered), ``fail_rate`` (a 5xx, not delivered), the
    delivery itself, ``drop_rate`` (the connection is cut with no answer after the delivery is
    recorded), ``accept_rate`` (Xquik: 202 and a non-terminal action), then the latency.

    Example: ``Faults(drop_rate=0.05, latency_ms=40, jitter_ms=10, seed=7)``.
    """

    #: added before every answer (sends after the delivery is recorded, reads too)
    latency_ms: float = 0
    #: the latency varies uniformly within plus or minus this much
    jitter_ms: float = 0
    #: each request waits a random 0 to this many ms before it is handled, as in a provider's
    #: queue: deliveries are stamped, and the sandbox's rate windows count them, that much late
    arrival_jitter_ms: float = 0
    fail_rate: float = 0
    rate_limit_rate: float = 0
    accept_rate: float = 0
    drop_rate: float = 0
    #: GetXAPI sends only: this share of sends is held without an answer, delivered
    #: ``late_ms`` after it arrived, and then its connection is cut (a provider finishing a
    #: request the client may have given up on; drawn after ``fail_rate``, instead of the
    #: delivery and ``drop_rate``)
    late_rate: float = 0
    late_ms: float = 0
    #: reads (lookups, polls, histories) answered 429 with ``Retry-After: 1`` and not served,
    #: before the read windows: a provider throttling the key's reads (1.0: every read)
    read_throttle_rate: float = 0
    #: a 202-accepted Xquik action turns terminal on this poll of ``GET /x/write-actions/{id}``
    accept_polls: int = 1
    #: when above 0, a 202-accepted Xquik DM instead stays pending (dispatching, not yet in any
    #: history) for this long whatever is polled or replayed, then is delivered and turns
    #: terminal: X confirming slowly
    accept_after_ms: float = 0
    seed: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class SandboxConfig:
    """Everything that shapes a sandbox's answers; swap it at runtime with ``Sandbox.reconfigure``.

    Rate windows are sliding windows keyed by API key (``key_rates`` on DM sends and media uploads,
    ``read_rates`` on reads) or by sender account (``sender_rates``); ``()`` means unlimited.
    ``credits`` is the Xquik balance (10 per DM, 10 per media upload, 1 per user returned by a
    lookup); ``None`` is unlimited. ``valid_api_keys`` ``None`` accepts any non-empty key except one
    starting with ``bad``.
    """

    faults: Faults = field(default_factory=Faults)
    legacy: bool = False
    key_rates: tuple[Rate, ...] = ()
    sender_rates: tuple[Rate, ...] = ()
    read_rates: tuple[Rate, ...] = ()
    credits: int | None = None
    valid_api_keys: frozenset[str] | None = None
    #: ``reply_*``, ``stopper_*`` and ``polite_*`` recipients answer this long after a DM
    #: (see :mod:`bulkdm.sandbox.people`)
    reply_after_ms: float = 200
    #: messages per history page (Xquik history, GetXAPI dm/list and dm/conversation)
    history_page_size: int = 20
