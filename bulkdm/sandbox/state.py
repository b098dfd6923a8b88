"""Everything a running sandbox remembers, and the one place a DM gets delivered."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence

from bulkdm.sandbox.actions import ActionStore
from bulkdm.sandbox.config import SandboxConfig
from bulkdm.sandbox.directory import Directory
from bulkdm.sandbox.faults import FaultDice
from bulkdm.sandbox.ids import IdSource
from bulkdm.sandbox.ledger import Delivery, Entry, Ledger, pair_key
from bulkdm.sandbox.limits import Credits, SlidingWindows
from bulkdm.sandbox.people import answers_of

__all__ = ["SandboxState"]


class SandboxState:
    """Mutable state behind both providers' routes; :meth:`reconfigure` keeps what was delivered.

    ``clock`` (monotonic seconds) drives the rate windows; deliveries are stamped with
    ``time.time()``.
    """

    def __init__(
        self, config: SandboxConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.directory = Directory()
        self.ledger = Ledger()
        self.actions = ActionStore()
        self.ids = IdSource()
        #: media id -> public URL, for history's ``mediaUrl``
        self.media_urls: dict[str, str] = {}
        #: history pages served per conversation (its two user ids, lower first): what a
        #: provider bills reading replies for
        self.history_reads: Counter[tuple[str, str]] = Counter()
        self.config = config
        self._restart_limits()

    def reconfigure(self, config: SandboxConfig) -> None:
        """Swap faults and limits; a window or the balance restarts only if its setting changed."""
        old, self.config = self.config, config
        if config.faults != old.faults:
            self.dice = FaultDice(config.faults)
        if config.key_rates != old.key_rates:
            self.key_windows = SlidingWindows(config.key_rates, self.clock)
        if config.sender_rates != old.sender_rates:
            self.sender_windows = SlidingWindows(config.sender_rates, self.clock)
        if config.read_rates != old.read_rates:
            self.read_windows = SlidingWindows(config.read_rates, self.clock)
        if config.credits != old.credits:
            self.credits = Credits(config.credits)

    def reset(self) -> None:
        """Forget every delivery, action, window and user; the configuration stays."""
        self.directory.clear()
        self.ledger.clear()
        self.actions.clear()
        self.media_urls.clear()
        self.history_reads.clear()
        self._restart_limits()

    def _restart_limits(self) -> None:
        config = self.config
        self.dice = FaultDice(config.faults)
        self.key_windows = SlidingWindows(config.key_rates, self.clock)
        self.sender_windows = SlidingWindows(config.sender_rates, self.clock)
        self.read_windows = SlidingWindows(config.read_rates, self.clock)
        self.credits = Credits(config.credits)

    def read_wait_s(self, api_key: str) -> float | None:
        """None if a read of ``api_key`` is served (and counted in the read windows); else the
        seconds until one would be: a throttle the dice drew (1 s), or the read windows'."""
        if self.dice.read_throttled():
            return 1.0
        return self.read_windows.admit(api_key)

    def history_page(self, user_a: str, user_b: str) -> Sequence[Entry]:
        """The conversation of two users, counted as one history page served."""
        self.history_reads[pair_key(user_a, user_b)] += 1
        return self.ledger.conversation(user_a, user_b)

    def api_key_valid(self, api_key: str) -> bool:
        allowed = self.config.valid_api_keys
        if allowed is not None:
            return api_key in allowed
        return bool(api_key) and not api_key.startswith("bad")

    def deliver(
        self,
        *,
        provider: str,
        sender: str,
        recipient_id: str,
        text: str,
        media_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Delivery:
        """Record one delivered DM now: the ledger entry is the ground truth of what X received."""
        delivery = Delivery(
            provider=provider,
            sender=sender,
            recipient_id=recipient_id,
            text=text,
            media_id=media_id,
            message_id=self.ids.snowflake(),
            idempotency_key=idempotency_key,
            at_s=time.time(),
        )
        self.ledger.record(delivery, sender_id=self.directory.sender_id(sender))
        self.directory.count_delivery(sender)
        answers = answers_of(self.directory.username_for(recipient_id))
        if answers:
            self._answer_later(delivery, answers)
        return delivery

    def _answer_later(self, delivery: Delivery, answers: tuple[str, ...]) -> None:
        """The recipient writes back ``reply_after_ms`` after the DM (one message a moment)."""
        sender_id = self.directory.sender_id(delivery.sender)

        def answer() -> None:
            for text in answers:
                reply = Delivery(provider=delivery.provider, sender=delivery.recipient_id,
                                 recipient_id=sender_id, text=text, media_id=None,
                                 message_id=self.ids.snowflake(), idempotency_key=None,
                                 at_s=time.time())
                self.ledger.record_reply(reply, sender_id=delivery.recipient_id)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # delivered outside a server (a unit test of the state): at once
            answer()
            return
        loop.call_later(self.config.reply_after_ms / 1000, answer)
