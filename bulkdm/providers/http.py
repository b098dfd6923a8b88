"""The one door to the network for both providers: a session, a request helper, and the wire.

:class:`HttpClient` sends a request and hands back an :class:`Answer` (status, headers, body
bytes) or, when no answer came, a transport :class:`Outcome`. aiohttp's exceptions stop here and
keep the one distinction exactly-once depends on:

* the request never left (connection refused, DNS, connect timeout): ``RETRY``;
* it may have been delivered (a timeout or a cut connection after the request was written):
  ``VERIFY`` for a write, ``RETRY`` for a read (a read has nothing to deliver twice).

"Written" is observed, not guessed: a trace hook flags the request once aiohttp starts writing
its headers. The module also reads the wire formats both providers share: JSON fields, the
``Retry-After`` family, ISO 8601 timestamps.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp.abc import AbstractStreamWriter
from aiohttp.connector import Connection
from yarl import URL

from bulkdm.outcomes import Action, Outcome, Reconciliation
from bulkdm.providers.base import HistoryMessage
from bulkdm.providers.readbudget import ReadBudget
from bulkdm.rates import Rate
from bulkdm.secrets import MASK
from bulkdm.timestamps import normalize_iso, parse_iso

__all__ = [
    "MAX_MESSAGE_CHARS",
    "Answer",
    "BaseUrl",
    "HttpClient",
    "JsonObject",
    "bool_field",
    "history_messages",
    "number_field",
    "object_field",
    "parse_iso",
    "path_segment",
    "redact",
    "retry_after_s",
    "search_messages",
    "text_field",
    "transport_outcome",
]

JsonObject = Mapping[str, object]

#: connections beyond ``concurrency``: reads (lookups, history, polls) must not wait on sends
EXTRA_CONNECTIONS: Final = 4
#: a connect that takes longer than this is a dead host, whatever the request timeout
MAX_CONNECT_TIMEOUT_S: Final = 10.0
#: how long every read waits after one was refused with a 429: its Retry-After (at most a
#: minute: a longer one is the caller's to act on, e.g. a sync leaves that conversation), else 1 s
_READ_PAUSE_S: Final = 1.0
_MAX_READ_PAUSE_S: Final = 60.0
#: provider texts copied into an Outcome are cut to this length
MAX_MESSAGE_CHARS: Final = 300

_log = logging.getLogger("bulkdm.providers")


class Answer:
    """An HTTP answer, fully read. ``headers`` answers to lower-case names (any case for aiohttp's)."""

    # a plain class, not a frozen dataclass: one is built per request, and a frozen
    # dataclass's __init__ costs four times as much (object.__setattr__ for every field)
    __slots__ = ("body", "headers", "status")

    def __init__(self, *, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Answer(status={self.status}, body={len(self.body)} bytes)"

    def json_object(self) -> JsonObject | None:
        """The body as a JSON object, or None when it is empty, not JSON or not an object."""
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None


class BaseUrl:
    """A provider's base URL, parsed once; :meth:`at` appends an already encoded path.

    yarl parses every distinct URL string anew (its caches only help a URL seen before): for a
    DM to a new recipient that parse was the client's largest single cost over a bare loop.
    """

    __slots__ = ("_path", "_text", "_url")

    def __init__(self, base_url: str) -> None:
        self._text = base_url.rstrip("/")
        self._url: URL | None
        try:
            self._url = URL(self._text)
        except ValueError:
            # not a URL (a port out of range...): the request fails on it as it always did,
            # an answer-less ClientError, not an error while the provider is built
            self._url = None
        self._path = "" if self._url is None else self._url.raw_path.rstrip("/")

    def at(self, encoded_path: str) -> URL | str:
        """The base with ``encoded_path`` (``/x/dm/123``, segments from :func:`path_segment`)
        after its own path; no query, no fragment."""
        if self._url is None:
            return self._text + encoded_path
        return self._url.with_path(self._path + encoded_path, encoded=True)


def path_segment(value: str) -> str:
    """``value`` percent-encoded as one path segment (a ``/`` in it is encoded too)."""
    if value.isascii() and value.isdigit():
        return value  # a user id: nothing to encode, and quote() is 1 us a call
    return quote(value, safe="")


@dataclass(slots=True)
class _Dispatch:
    """What became of one request on the wire, told by :class:`_Request`."""

    #: set once the request may have reached the peer (aiohttp began writing it)
    written: bool = False
    #: told the wall-clock time the body reached the socket (the engine's rate windows count
    #: from then: on Python 3.11 aiohttp writes the body in a task of its own, which runs after
    #: everything else that is ready on the loop)
    on_sent: Callable[[float], None] | None = None


#: the request being sent in this task (and the body-writing task aiohttp starts from it)
_DISPATCH: Final[ContextVar[_Dispatch | None]] = ContextVar("bulkdm_dispatch", default=None)


class _Request(aiohttp.ClientRequest):
    """aiohttp's request, telling the :data:`_DISPATCH` of its task when it starts writing and
    when its body is written. Trace hooks told the same, but with any trace configured aiohttp
    awaits every one of its ten signals for every request: a sixth of the client's CPU here
    (benchmarks/README.md)."""

    def send(self, conn: Connection) -> Coroutine[Any, Any, aiohttp.ClientResponse]:
        # not a coroutine of its own: aiohttp awaits the one returned at once, and a wrapper
        # coroutine is one more frame to build and resume for every request
        dispatch = _DISPATCH.get()
        if dispatch is not None:
            dispatch.written = True  # a connection is held: from here on bytes may leave
        return super().send(conn)

    async def write_bytes(
        self, writer: AbstractStreamWriter, conn: Connection, content_length: int | None = None
    ) -> None:
        await super().write_bytes(writer, conn, content_length)
        dispatch = _DISPATCH.get()
        if dispatch is not None and dispatch.on_sent is not None:
            on_sent, dispatch.on_sent = dispatch.on_sent, None  # once
            on_sent(time.time())


class HttpClient:
    """One aiohttp session and connection pool for a whole run; see :meth:`open`.

    Every read (``write=False``) first takes one from :attr:`reads`, the API key's read budget.
    """

    def __init__(self, session: aiohttp.ClientSession, reads: ReadBudget | None = None) -> None:
        self._session = session
        self.reads = reads or ReadBudget()

    @classmethod
    def open(
        cls, *, concurrency: int, request_timeout_s: float, read_rates: Sequence[Rate] = ()
    ) -> HttpClient:
        """A client whose pool holds ``concurrency`` sends plus a few reads, and whose reads
        keep ``read_rates`` (none: reads are not metered).

        Call it inside the running event loop (aiohttp binds the session to it).
        """
        timeout = aiohttp.ClientTimeout(
            total=request_timeout_s,
            sock_connect=min(MAX_CONNECT_TIMEOUT_S, request_timeout_s),
        )
        connector = aiohttp.TCPConnector(limit=max(1, concurrency) + EXTRA_CONNECTIONS)
        session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, request_class=_Request,
            raise_for_status=False
        )
        return cls(session, ReadBudget(read_rates))

    def __repr__(self) -> str:
        return f"HttpClient(closed={self._session.closed})"

    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str],
        write: bool,
        json_body: object = None,
        form: aiohttp.FormData | None = None,
        params: Mapping[str, str] | None = None,
        on_sent: Callable[[float], None] | None = None,
    ) -> Answer | Outcome:
        """Send one request and read the whole answer; a transport failure is an Outcome.

        ``write`` says whether the request changes something (a DM, an upload): only then can a
        failure after the request was written mean "maybe done". A read waits for the read
        budget first, outside the request's timeout.
        """
        if not write:
            await self.reads.acquire()
        data: bytes | aiohttp.FormData | None = form
        if json_body is not None:
            data = orjson.dumps(json_body)
            headers = {**headers, "Content-Type": "application/json"}
        dispatch = _Dispatch(on_sent=on_sent)
        started_s = time.monotonic()
        token = _DISPATCH.set(dispatch)
        try:
            async with self._session.request(
                method, url, headers=headers, data=data, params=params
            ) as response:
                # aiohttp's headers answer to any case of a name: no copy per answer
                answer = Answer(status=response.status, headers=response.headers,
                                body=await response.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            outcome = transport_outcome(exc, written=dispatch.written, write=write)
            _log.debug("%s %s -> %s (%s)", method, _path(url), outcome.code, outcome.action)
            return outcome
        finally:
            _DISPATCH.reset(token)
        if _log.isEnabledFor(logging.DEBUG):  # the path and the time only for a log that shows
            elapsed_ms = (time.monotonic() - started_s) * 1000
            _log.debug("%s %s -> %d in %.0f ms", method, _path(url), answer.status, elapsed_ms)
        if answer.status == 429 and not write:
            # the key's reads are over the provider's budget: all of them wait, as long as it
            # says (a second when it does not)
            hint = retry_after_s(answer.headers, answer.json_object())
            self.reads.pause(min(hint if hint is not None else _READ_PAUSE_S, _MAX_READ_PAUSE_S))
        return answer

    async def aclose(self) -> None:
        await self._session.close()


def _path(url: str | URL) -> str:
    # logs name the endpoint, never a query string (it may carry names) or any header
    return url.path if isinstance(url, URL) else url.split("?", 1)[0]


def transport_outcome(exc: BaseException, *, written: bool, write: bool) -> Outcome:
    """What a failed exchange means for delivery (see the module docstring).

    Connector errors are checked first: they subclass the OS and timeout errors below, and say
    for certain that no byte of the request left.
    """
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        code, certain = "connect_timeout", True
    elif isinstance(exc, aiohttp.ClientConnectorError):
        code, certain = "connect_failed", True
    elif isinstance(exc, TimeoutError):
        code, certain = "timeout", False
    elif isinstance(exc, aiohttp.ClientConnectionError):
        # server disconnected, connection reset, an OS error on the socket
        code, certain = "connection_lost", False
    elif isinstance(exc, aiohttp.ClientPayloadError):
        code, certain = "truncated_answer", False
    else:
        code, certain = "client_error", False
    never_left = certain or not written
    maybe_done = write and not never_left
    reason = str(exc) or type(exc).__name__
    if maybe_done:
        message = f"{reason}; the request was sent and may have been delivered"
    else:
        message = f"{reason}; the request was not delivered" if never_left else reason
    return Outcome(
        action=Action.VERIFY if maybe_done else Action.RETRY,
        code=code,
        message=message[:MAX_MESSAGE_CHARS],
    )


# -- the wire formats ----------------------------------------------------------------------------


def text_field(obj: JsonObject | None, name: str) -> str | None:
    """A string field, or a number written as one (ids); None when absent, empty or otherwise."""
    value = None if obj is None else obj.get(name)
    if isinstance(value, str):  # the common case first: one check, not three
        return value or None
    if isinstance(value, bool):
        return None
    return str(value) if isinstance(value, int) else None


def bool_field(obj: JsonObject | None, name: str) -> bool | None:
    value = None if obj is None else obj.get(name)
    return value if isinstance(value, bool) else None


def number_field(obj: JsonObject | None, name: str) -> float | None:
    value = None if obj is None else obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def object_field(obj: JsonObject | None, name: str) -> JsonObject | None:
    value = None if obj is None else obj.get(name)
    return value if isinstance(value, dict) else None


def retry_after_s(
    headers: Mapping[str, str], body: JsonObject | None, *, now_s: float | None = None
) -> float | None:
    """The longest wait any of the server's hints asks for, in seconds; None if it gave none.

    Reads the ``Retry-After`` header (seconds or an HTTP date), ``retry-after-ms`` (which
    Xquik's SDK honours) and the body's ``retryAfter`` (s) and ``retryAfterMs``. The longest wins:
    waiting a little too long costs time, too short costs another refusal.
    """
    hints = [
        _header_seconds(headers.get("retry-after"), now_s),
        _scaled(_number(headers.get("retry-after-ms")), 0.001),
        number_field(body, "retryAfter"),
        _scaled(number_field(body, "retryAfterMs"), 0.001),
    ]
    found = [hint for hint in hints if hint is not None and hint >= 0]
    return max(found) if found else None


def _header_seconds(value: str | None, now_s: float | None) -> float | None:
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def redact(text: str, *secrets: str) -> str:
    """``text`` with every secret value masked: provider texts are copied into outcomes and logs,
    and a provider that echoes a token must not put it there."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def history_messages(messages: list[object]) -> tuple[HistoryMessage, ...]:
    """A history page's messages as values; an item without an id or a sender is left out."""
    found = []
    for item in messages:
        if not isinstance(item, dict):
            continue
        message_id, sender_id = text_field(item, "id"), text_field(item, "senderId")
        if message_id is None or sender_id is None:
            continue
        text = item.get("text")
        found.append(HistoryMessage(message_id=message_id, sender_id=sender_id,
                                    text=text if isinstance(text, str) else "",
                                    created_at=normalize_iso(text_field(item, "createdAt"))))
    return tuple(found)


def search_messages(
    messages: object, since: datetime | None, is_ours: Callable[[JsonObject], bool]
) -> tuple[Reconciliation | None, bool]:
    """Look through one history page (newest first) for a message ``is_ours`` accepts.

    Only a message created at or after ``since`` can match; one without a readable
    ``createdAt`` never does (it may be any earlier DM with the same text). Returns the match if
    any, and whether the page reached messages older than ``since`` (then later pages cannot
    hold it either).
    """
    older = False
    for item in messages if isinstance(messages, list) else ():
        if not isinstance(item, dict):
            continue
        created = parse_iso(item.get("createdAt"))
        if created is None:
            continue  # a message of unknown age may be anyone's: never taken for ours
        if since is not None and created < since:
            older = True
            continue
        if is_ours(item):
            found = Reconciliation(
                found=True, message_id=text_field(item, "id"),
                sent_at=normalize_iso(text_field(item, "createdAt")),
            )
            return found, older
    return None, older
