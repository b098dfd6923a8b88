"""What a provider call came to, as a value the engine acts on.

Every provider answer maps to one :class:`Action`. The classification tables (which error code
means which action) live with each provider; this module holds the shared vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Action", "Outcome", "Reconciliation"]


class Action(StrEnum):
    #: the call succeeded (a DM sent, a user resolved, a media id obtained)
    DONE = "done"
    #: permanent for this recipient (DMs closed, user not found, text too long): the row fails
    FAIL_ROW = "fail_row"
    #: this sender must pause until ``retry_after_s`` (X throttle, daily limit): not delivered
    REST_SENDER = "rest_sender"
    #: this sender cannot be used in this run (re-auth, suspended, restricted, not connected)
    DROP_SENDER = "drop_sender"
    #: no call can succeed (bad API key, out of credits): stop the run with the reason
    STOP_RUN = "stop_run"
    #: provably not performed; try again later (honour ``retry_after_s``)
    RETRY = "retry"
    #: may have been delivered; never re-send blindly: replay with the same key or reconcile
    VERIFY = "verify"


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """The result of one provider call.

    ``code`` is the provider's error code verbatim (``x_dm_not_allowed``), or a bulkdm code for
    transport results (``timeout``, ``connection_lost``, ``http_503``). ``value`` is the call's
    product: the message id of a DM, the user id of a lookup, the media id of an upload.
    """

    action: Action
    value: str | None = None
    code: str | None = None
    message: str | None = None
    http_status: int | None = None
    retry_after_s: float | None = None
    #: Xquik: a retry may (and must) use a new idempotency key (``safeToRetry``)
    new_key: bool = False
    request_id: str | None = None
    write_action_id: str | None = None
    #: provider's own timestamp of the delivery, ISO 8601 UTC, when it gave one
    sent_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.action is Action.DONE


@dataclass(frozen=True, kw_only=True, slots=True)
class Reconciliation:
    """What the conversation history says about a send whose outcome was unknown.

    ``found`` True: the message is there (``message_id`` set). False: it is provably absent.
    None: the history could not be read (``outcome`` says why); ask again later.
    """

    found: bool | None
    message_id: str | None = None
    sent_at: str | None = None
    outcome: Outcome | None = None
