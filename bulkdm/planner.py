"""The plan: campaign rows and settings in, one planned row per campaign line out.

A planned row goes straight to its insert values (:data:`~bulkdm.checkpoint.RowParams`), not
through a :class:`PlannedRow`: that dataclass alone cost a quarter of planning a row.

Each row is checked (recipient, text, sender, media), then skipped if suppressed or, when the
campaign requires it, without consent. A row with a ``sender`` column is pinned to it and gets its
idempotency key now; the rest are bound to an account late, by the engine's claim. Duplicates
are marked by the checkpoint in SQL after the rows are stored, so memory does not grow with the
campaign. :func:`ensure_plan` is the entry point for commands: it plans only when needed.
"""

from __future__ import annotations

import gc
import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, TypeAlias, TypeVar, cast

import anyio.to_thread
import orjson

from bulkdm.amend import PlannedLine, amend_checkpoint
from bulkdm.campaign import CampaignReader, RawRow, RowError, campaign_format, file_sha256
from bulkdm.checkpoint import (
    Checkpoint,
    PlainValues,
    PlanMeta,
    PlanRow,
    PlanValues,
    RowParams,
    pending_params,
    pending_values,
    row_params,
)
from bulkdm.errors import CampaignFileError, CheckpointMismatchError, ConfigError
from bulkdm.handoff import RAW_LINE
from bulkdm.keys import idempotency_keys, text_sha256
from bulkdm.ledger import OPTED_OUT_MESSAGE
from bulkdm.media import MediaProblem, check_media
from bulkdm.optouts import ledger_opt_outs
from bulkdm.recipients import (
    CANONICAL_USERNAME,
    Recipient,
    RecipientProblem,
    canonical_id,
    canonical_username,
    recipient_key,
    recipient_values,
)
from bulkdm.registry import CampaignEntry, earlier_campaigns, record_campaign, registry_path
from bulkdm.report import PlanReport, build_report
from bulkdm.rows import PlannedRow, RowState
from bulkdm.settings import ProviderName, Settings, settings_fingerprint
from bulkdm.template import Template, TemplateProblem, compile_template, render
from bulkdm.timestamps import now_iso

__all__ = [
    "BATCH_ROWS",
    "MAX_TEXT_CHARS",
    "RESERVED_FIELDS",
    "Planner",
    "Suppression",
    "ensure_plan",
    "load_suppression",
    "plan_batches",
    "planned_settings",
]

#: X refuses longer direct messages
MAX_TEXT_CHARS: Final = 10_000
BATCH_ROWS: Final = 2_000
_INTEGER_FIELDS: Final = frozenset({"recipient_id", "external_id"})
_TEXT_OR_NONE: Final = frozenset({str, type(None)})
_TEXT: Final = frozenset({str})
#: where RowParams and PlanValues hold these columns (the same place in both)
_RECIPIENT_ID: Final = 2
_MEDIA: Final = 9
#: a row with one of these fields takes the full path (:meth:`Planner.plan_bulk`)
_NOT_PLAIN: Final = frozenset({"recipient_id", "text", "sender", "media"})
_Texts: TypeAlias = list[str | None]
_P = TypeVar("_P")
RESERVED_FIELDS: Final = (
    # external_id first: an invalid row still carries it to the output
    "external_id",
    "recipient_username",
    "recipient_id",
    "text",
    "sender",
    "media",
    "consent",
)


@dataclass(frozen=True, slots=True)
class _Problem:
    field: str | None
    reason: str
    message: str


_SUPPRESSED: Final = _Problem("recipient", "suppressed", "the recipient is on a suppression list")
_OPTED_OUT: Final = _Problem("recipient", "opted_out", OPTED_OUT_MESSAGE)
_NO_CONSENT: Final = _Problem(
    "consent", "no_consent", "the campaign requires consent and the row has none"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Suppression:
    """Recipients never to message: user ids and lower-cased usernames."""

    user_ids: frozenset[str] = frozenset()
    usernames: frozenset[str] = frozenset()

    def __contains__(self, recipient: Recipient) -> bool:
        if recipient.user_id is not None and recipient.user_id in self.user_ids:
            return True
        return recipient.username is not None and recipient.username.lower() in self.usernames


def load_suppression(paths: Sequence[Path]) -> Suppression:
    """Read suppression files: one username (``@`` optional) or user id a line; ``#`` comments.

    :raises ConfigError: a file cannot be read, or a line is neither a username nor an id.
    """
    user_ids: set[str] = set()
    usernames: set[str] = set()
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the suppression file: {exc}", source=path) from exc
        for number, line in enumerate(lines, start=1):
            entry = line.partition("#")[0].strip()
            if not entry:
                continue
            if entry.isdigit() and (user_id := canonical_id(entry)) is not None:
                user_ids.add(user_id)
            elif (username := canonical_username(entry)) is not None:
                usernames.add(username.lower())
            else:
                message = f"line {number}: {entry!r} is neither an X username nor a user id"
                raise ConfigError(message, source=path, key="campaign.suppression")
    return Suppression(user_ids=frozenset(user_ids), usernames=frozenset(usernames))


def _texts(template: Template) -> Callable[[Callable[[str], object]], Sequence[str] | None]:
    """The values of the template's variables from a row's ``get``, when each is non-blank
    text (else ``None``: the full path renders it, or says what is wrong)."""
    variables = template.variables
    if len(variables) == 1:  # the usual template, kept fast
        (name,) = variables

        def one(get: Callable[[str], object]) -> Sequence[str] | None:
            value = get(name)
            return (value,) if value.__class__ is str and value and not value.isspace() else None

        return one
    # only ever called on values already known to be str (the test before it)
    isspace: Callable[[object], bool] = str.isspace  # type: ignore[assignment]

    def many(get: Callable[[str], object]) -> Sequence[str] | None:
        values = list(map(get, variables))
        if _TEXT.issuperset(map(type, values)) and all(values) and not any(map(isspace, values)):
            return cast(list[str], values)
        return None

    return many


def _blank(fields: dict[str, object], keys: Iterable[str]) -> bool:
    """Whether each of ``keys`` is missing, null or blank text in ``fields`` (as if absent)."""
    return all(
        value is None or isinstance(value, str) and not value.strip()
        for value in map(fields.get, keys)
    )


def _not_text(key: str, value: object) -> str | _Problem:
    """A reserved field whose JSON value is not a string: exact integers become text."""
    if isinstance(value, int) and not isinstance(value, bool) and key in _INTEGER_FIELDS:
        return str(value)  # JSON integers are exact in Python; keep them as text
    if isinstance(value, float) and key == "recipient_id":
        return _Problem(
            key,
            "bad_recipient_id",
            "a JSON number with a fraction or over 20 digits is not exact; "
            "write the id as a string",
        )
    return _Problem(key, "bad_field", f"{key} must be a string, not {type(value).__name__}")


def _reserved(fields: dict[str, object]) -> list[str | None] | tuple[_Problem, str | None]:
    """The reserved fields in :data:`RESERVED_FIELDS` order, stripped, a blank one as ``None``.

    A field that is neither text nor an exact integer id gives its problem instead, with the
    external id read before it (an invalid row still carries that to the output).
    """
    found = list(map(fields.get, RESERVED_FIELDS))
    if _TEXT_OR_NONE.issuperset(map(type, found)):  # the common case, kept fast
        return [None if value is None else value.strip() or None for value in cast(_Texts, found)]
    values: list[str | None] = []
    for key, value in zip(RESERVED_FIELDS, found, strict=True):
        text = value if value is None or isinstance(value, str) else _not_text(key, value)
        if isinstance(text, _Problem):
            return text, values[0] if values else None
        values.append(None if text is None else text.strip() or None)
    return values


class Planner:
    """Plans rows one by one, in line order.

    :meth:`plan` runs a million times for a million-row campaign, so what is the same for every
    row (template, key prefix, whether any suppression or consent check applies) is worked out
    here once, and a pending row goes straight to its insert values.
    """

    def __init__(self, settings: Settings, *, campaign_dir: Path, suppression: Suppression,
                 opted_out: Suppression = Suppression()) -> None:
        self._settings = settings
        self._campaign_dir = campaign_dir
        self._suppression = suppression
        #: the shared ledger's opt-outs (replies that said STOP, ``bulkdm optouts --add``)
        self._opted_out = opted_out
        self._checks_skip = settings.campaign.require_consent or bool(
            suppression.user_ids or suppression.usernames
            or opted_out.user_ids or opted_out.usernames
        )
        self._key = idempotency_keys(settings.campaign.key_scope)
        template = settings.campaign.template
        compiled = None if template is None else compile_template(template)
        self._template = compiled if isinstance(compiled, Template) else None
        #: each media file's check, by its resolved path (a file many rows attach is read once)
        self._media_checked: dict[str, MediaProblem | str] = {}
        self._plain = self._plain_path()
        #: no pending row planned so far has a recipient id or media (see plan_batch): the
        #: plan's totals follow from its row counts (:func:`~bulkdm.report.build_report`)
        self.usernames_only = True
        #: rows given by id only, kept, while the suppression names people by username only:
        #: not checked against those names (the plan knows no id for them)
        self.ids_unchecked = 0

    def plan_batch(self, items: Sequence[RawRow | RowError]) -> list[PlanRow]:
        """:meth:`plan_bulk` of each item, a plain row through a shortcut that gives the same
        values (see :meth:`_plain_path`)."""
        if self._plain is None:
            every: list[RowParams | PlanValues] = list(map(self.plan_bulk, items))
            self._noted(every)
            return list(every)
        planned: list[PlanRow | None] = [*map(self._plain, items)]
        full = [n for n, values in enumerate(planned) if values is None]
        for index in full:
            planned[index] = self.plan_bulk(items[index])
        self._noted([cast(RowParams | PlanValues, planned[n]) for n in full])
        return cast(list[PlanRow], planned)

    def _noted(self, planned: list[RowParams | PlanValues]) -> None:
        # a plain row is pending, by username, without media; any other pending row may not be
        if self.usernames_only:
            self.usernames_only = not any(
                row[1] == "pending" and (row[_RECIPIENT_ID] or row[_MEDIA]) for row in planned
            )

    def _plain_path(self) -> Callable[[RawRow | RowError], PlainValues | None] | None:
        """The values of a plain row, else ``None`` (the row takes :meth:`plan_bulk`).

        A plain row has a username already canonical, no id, text, sender or media, text (or
        nothing) in ``external_id`` and ``consent``, and a non-blank text in every variable of
        the campaign's template (so its message is not blank, unless the template is blank and
        has none). Such a row passes every check of the full path, which gives the same values
        in twice the time. ``None`` when the campaign has no template, or a blank one.
        """
        template = self._template
        if template is None or not template.pattern.format(*[""] * len(template.variables)).strip():
            return None
        username_match, texts, fmt = CANONICAL_USERNAME.fullmatch, _texts(template), template.pattern.format
        not_plain, skip, sha256 = _NOT_PLAIN, self._checks_skip, hashlib.sha256

        def plain(item: RawRow | RowError) -> PlainValues | None:
            if item.__class__ is not RawRow:
                return None
            line, fields = item
            get = fields.get
            name, external_id, consent = (
                get("recipient_username"), get("external_id", ""), get("consent", "")
            )
            if (name.__class__ is not str or external_id.__class__ is not str
                    or consent.__class__ is not str or username_match(name) is None
                    or not not_plain.isdisjoint(fields) and not _blank(fields, not_plain)
                    or (values := texts(get)) is None):
                return None
            text = fmt(*values)
            consent = consent.strip()
            if len(text) > MAX_TEXT_CHARS or skip and self._skip(None, name, consent or None):
                return None
            return (line, name, f"u:{name.lower()}", text, sha256(text.encode()).hexdigest(),
                    external_id.strip(), consent)

        return plain

    def plan(self, item: RawRow | RowError) -> RowParams:
        """The insert values (see :func:`~bulkdm.checkpoint.row_params`) of one campaign item."""
        return self._plan(item, pending_params)

    def plan_bulk(self, item: RawRow | RowError) -> RowParams | PlanValues:
        """:meth:`plan`, a pending row in the bulk insert form (:func:`~bulkdm.checkpoint.pending_values`)."""
        return self._plan(item, pending_values)

    def _plan(self, item: RawRow | RowError, pending: Callable[..., _P]) -> RowParams | _P:
        if isinstance(item, RowError):
            problem = _Problem(item.field, item.reason, item.message)
            # a line that is not a JSON object keeps its text, so a fix file can hold it
            original = None if item.raw is None else orjson.dumps({RAW_LINE: item.raw}).decode()
            return row_params(_invalid(item.line, problem, original=original))
        values = _reserved(item.fields)
        if isinstance(values, tuple):
            return self._invalid_row(item, values[0], values[1])
        external_id, username, user_id, own_text, pinned, media, consent = values
        recipient = recipient_values(user_id, username)
        if isinstance(recipient, RecipientProblem):
            problem = _Problem(recipient.field, recipient.reason, recipient.message)
            # no recipient to name, but the row's consent is still the row's (as for other errors)
            return self._invalid_row(item, problem, external_id, consent=consent)
        # from here on the recipient is known: an invalid row still names them in its records
        text = self._text(own_text, item.fields)
        if isinstance(text, _Problem):
            return self._invalid_row(item, text, external_id, recipient, consent)
        sender = None if pinned is None else self._pinned_sender(pinned)
        if isinstance(sender, _Problem):
            return self._invalid_row(item, sender, external_id, recipient, consent)
        path = None if media is None else self._media(media)
        if isinstance(path, _Problem):
            return self._invalid_row(item, path, external_id, recipient, consent)
        return self._planned(
            pending, item.line, *recipient, text, sender, path, external_id, consent
        )

    @staticmethod
    def _invalid_row(
        item: RawRow,
        problem: _Problem,
        external_id: str | None,
        recipient: tuple[str | None, str | None] = (None, None),
        consent: str | None = None,
    ) -> RowParams:
        # the fields as read go with the row, so a fix file holds all of them (export --as-campaign)
        original = orjson.dumps(item.fields).decode()
        return row_params(
            replace(
                _invalid(item.line, problem, external_id=external_id, original=original),
                recipient_id=recipient[0], recipient_username=recipient[1], consent=consent,
            )
        )

    def _planned(
        self,
        pending: Callable[..., _P],
        line: int,
        user_id: str | None,
        username: str | None,
        text: str,
        sender: str | None,
        media: str | None,
        external_id: str | None,
        consent: str | None,
    ) -> RowParams | _P:
        digest = text_sha256(text)
        skip = self._skip(user_id, username, consent) if self._checks_skip else None
        if skip is not None:
            return row_params(
                PlannedRow(
                    line=line,
                    state=RowState.SKIPPED,
                    recipient_id=user_id,
                    recipient_username=username,
                    text=text,
                    text_sha256=digest,
                    external_id=external_id,
                    media=media,
                    consent=consent,
                    field=skip.field,
                    reason=skip.reason,
                    message=skip.message,
                )
            )
        recipient = recipient_key(user_id=user_id, username=username)
        # a row without a sender column is bound to an account late, by the claim of whichever
        # account has a slot; its key (which names the sender) is computed then
        key = None if sender is None else self._key(recipient, sender, digest)
        return pending(
            line, user_id, username, recipient, text, digest, sender, external_id, media, consent, key
        )

    def _skip(self, user_id: str | None, username: str | None, consent: str | None) -> _Problem | None:
        recipient = Recipient(user_id=user_id, username=username)
        if recipient in self._opted_out:
            return _OPTED_OUT
        if recipient in self._suppression:
            return _SUPPRESSED
        if consent is None and self._settings.campaign.require_consent:
            return _NO_CONSENT
        if username is None and self._suppression.usernames:
            self.ids_unchecked += 1
        return None

    def _text(self, own: str | None, variables: dict[str, object]) -> str | _Problem:
        if own is not None:
            compiled = compile_template(own)
        elif self._template is not None:
            compiled = self._template
        else:
            return _Problem(
                "text",
                "missing_text",
                "the row has no text and the campaign has no template; add either",
            )
        if isinstance(compiled, TemplateProblem):
            return _Problem("text", compiled.reason, compiled.message)
        rendered = render(compiled, variables)
        if isinstance(rendered, TemplateProblem):
            return _Problem(rendered.variable, rendered.reason, rendered.message)
        if not rendered.strip():
            return _Problem("text", "empty_text", "the message text is empty")
        if len(rendered) > MAX_TEXT_CHARS:
            return _Problem(
                "text",
                "text_too_long",
                f"the text has {len(rendered)} characters; X allows {MAX_TEXT_CHARS}",
            )
        return rendered

    def _pinned_sender(self, sender: str) -> str | _Problem:
        configured = self._settings.sender(sender)  # in any case, as X handles are
        if configured is None:
            known = ", ".join(s.account for s in self._settings.senders)
            return _Problem(
                "sender",
                "unknown_sender",
                f"{sender!r} is not one of the configured senders ({known})",
            )
        return configured.account

    def _media(self, media: str) -> str | _Problem:
        if self._settings.provider.name is not ProviderName.XQUIK:
            return _Problem(
                "media",
                "media_unsupported",
                f"{self._settings.provider.name} cannot attach media; remove it",
            )
        path = str((self._campaign_dir / media).resolve())
        checked = self._media_checked.get(path)
        if checked is None:
            checked = self._media_checked[path] = check_media(Path(path))
        if isinstance(checked, MediaProblem):
            return _Problem("media", checked.code, checked.message)
        return path


def _invalid(
    line: int, problem: _Problem, *, external_id: str | None = None, original: str | None = None
) -> PlannedRow:
    return PlannedRow(
        line=line,
        state=RowState.INVALID,
        field=problem.field,
        reason=problem.reason,
        message=problem.message,
        external_id=external_id,
        original=original,
    )


def plan_batches(
    batches: Iterable[Sequence[RawRow | RowError]], planner: Planner, *,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[list[PlanRow]]:
    """Plan ``batches`` (:meth:`CampaignReader.batches`) lazily, in the bulk insert form, in
    batches of ``batch_rows`` (the last may be shorter).

    The size is fixed because the checkpoint inserts a batch with one statement prepared for
    its number of rows: batches of every size, as a file's chunks give them, each prepared a
    statement of their own, and sqlite3's statement cache held a hundred of them (30 MB more).
    """
    planned: list[PlanRow] = []
    for items in batches:
        planned += planner.plan_batch(items)
        while len(planned) >= batch_rows:
            yield planned[:batch_rows]
            del planned[:batch_rows]
    if planned:
        yield planned


def _verified(
    batches: Iterator[list[PlanRow]],
    reader: CampaignReader,
    sha256: str,
) -> Iterator[list[PlanRow]]:
    # the plan is stored under the fingerprint taken before reading (if any, "" when there was
    # no plan to compare with): prove it is the same file
    yield from batches
    if sha256 and reader.sha256() != sha256:
        raise CampaignFileError(reader.path, "the file changed while it was planned; plan again")


@contextmanager
def _gc_paused() -> Iterator[None]:
    # planned rows hold no reference cycles, and the cyclic collector would otherwise rescan
    # each batch again and again: about 15 % of a million-row plan (see benchmarks/plan_bench.py)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True, kw_only=True, slots=True)
class _Inputs:
    campaign_path: str
    campaign_sha256: str
    settings_sha256: str


def _fingerprints(campaign_path: Path, settings: Settings, hash_file: bool = True) -> _Inputs:
    campaign_format(campaign_path)  # an unknown file type fails before any reading
    return _Inputs(
        campaign_path=str(campaign_path.resolve()),
        campaign_sha256=file_sha256(campaign_path) if hash_file else "",
        settings_sha256=settings_fingerprint(settings),
    )


async def ensure_plan(
    campaign_path: Path,
    settings: Settings,
    checkpoint: Checkpoint,
    *,
    delimiter: str | None = None,
    errors_limit: int | None = 20,
    amend: bool = False,
) -> PlanReport:
    """Plan ``campaign_path`` into ``checkpoint`` unless the same plan is there; report it.

    The stored plan is kept when the campaign file's and the settings' fingerprints match, and
    replaced when they differ and nothing was attempted yet. When rows were attempted, ``amend``
    applies the change to the running campaign (see :mod:`bulkdm.amend`). Planning runs on the
    event loop (it is most of what a ``plan`` command does); hashing runs in a worker thread.

    :raises CheckpointMismatchError: they differ, rows were already attempted, and not ``amend``.
    :raises CampaignFileError, ConfigError: the campaign or a suppression file cannot be read.
    """
    if delimiter is not None:
        settings = replace(settings, campaign=replace(settings.campaign, delimiter=delimiter))
    old = await checkpoint.plan_meta()
    # a first plan has nothing to compare with: the file is hashed as it is read, once
    inputs = await anyio.to_thread.run_sync(_fingerprints, campaign_path, settings, old is not None)
    same = old is not None and (old.campaign_sha256, old.settings_sha256) == (
        inputs.campaign_sha256,
        inputs.settings_sha256,
    )
    if same:
        return await build_report(
            checkpoint, settings, errors_limit=errors_limit, status="unchanged"
        )
    if old is not None and await checkpoint.has_attempts():
        if not amend:
            raise _mismatch(checkpoint, old, inputs.campaign_sha256)
        return await _amend(campaign_path, settings, checkpoint, old, inputs,
                            errors_limit=errors_limit)
    # a replan keeps the campaign's identity (and so its keys); a first plan makes one
    campaign_id = old.campaign_id if old is not None and old.campaign_id else uuid.uuid4().hex
    settings = replace(settings, campaign=replace(settings.campaign, campaign_id=campaign_id))
    meta = PlanMeta(
        campaign=settings.campaign.name,
        campaign_path=inputs.campaign_path,
        campaign_sha256=inputs.campaign_sha256,
        settings_sha256=inputs.settings_sha256,
        provider=settings.provider.name.value,
        created_at=now_iso(),
        settings_path="" if settings.source is None else str(settings.source.resolve()),
        campaign_id=campaign_id,
    )
    suppression = await anyio.to_thread.run_sync(load_suppression, settings.campaign.suppression)
    planner = Planner(settings, campaign_dir=campaign_path.parent, suppression=suppression,
                      opted_out=await _opted_out(settings))
    with CampaignReader(campaign_path, delimiter=settings.campaign.delimiter) as reader:
        batches = _verified(plan_batches(reader.batches(), planner), reader,
                            inputs.campaign_sha256)
        with _gc_paused():
            await checkpoint.write_plan_params(
                lambda: replace(meta, campaign_sha256=reader.sha256()), batches)
    status = "planned" if old is None else "replaced"
    report = await build_report(checkpoint, settings, errors_limit=errors_limit, status=status,
                                usernames_only=planner.usernames_only)
    report = replace(report, notes=report.notes + _unchecked_note(planner, suppression))
    if old is not None and old.campaign_id:
        return report
    notes = await anyio.to_thread.run_sync(_register, meta, checkpoint.path)
    return replace(report, notes=report.notes + notes)


def _unchecked_note(planner: Planner, suppression: Suppression) -> tuple[str, ...]:
    if not planner.ids_unchecked:
        return ()
    note = (f"suppression: {len(suppression.usernames)} entries name a username only, and "
            f"{planner.ids_unchecked} rows give a user id only: those rows are not checked "
            "against those names (no id is known for them). Put the ids in the suppression "
            "file too (optouts --export writes both), or give the rows' usernames")
    return (note,)


def _register(meta: PlanMeta, checkpoint_path: Path) -> tuple[str, ...]:
    """Record a new campaign identity; say so when its name was used before (its keys differ,
    so recipients that campaign messaged get this one's messages too)."""
    path = registry_path()
    notes = [
        f"the name {meta.campaign!r} was used before by another campaign (checkpoint "
        f"{entry.checkpoint}, planned {entry.planned_at}); this plan is a new campaign with its "
        "own idempotency keys, so a recipient that campaign messaged gets this one's message "
        "too. To change or continue that campaign instead, use its checkpoint (plan --amend)"
        for entry in earlier_campaigns(meta.campaign, path)[-1:]
        if entry.campaign_id != meta.campaign_id
    ]
    entry = CampaignEntry(name=meta.campaign, campaign_id=meta.campaign_id,
                          checkpoint=str(checkpoint_path.resolve()), planned_at=meta.created_at)
    problem = record_campaign(entry, path)
    return (*notes, *([problem] if problem else []))


async def planned_settings(settings: Settings, checkpoint: Checkpoint) -> Settings:
    """``settings`` with the campaign identity of the plan in ``checkpoint`` (its keys' scope)."""
    meta = await checkpoint.plan_meta()
    campaign_id = meta.campaign_id if meta is not None and meta.campaign_id else None
    return replace(settings, campaign=replace(settings.campaign, campaign_id=campaign_id))


def _mismatch(
    checkpoint: Checkpoint, old: PlanMeta, campaign_sha256: str
) -> CheckpointMismatchError:
    changed = "the campaign file" if old.campaign_sha256 != campaign_sha256 else "the settings"
    return CheckpointMismatchError(
        f"{checkpoint.path}: {changed} changed since the plan was made and sending has begun. "
        "To apply the change to this campaign, add --amend (`bulkdm plan --amend` shows what "
        "it changes): rows already sent stay sent and are never sent again. Or restore the "
        "original file and settings"
    )


async def _amend(
    campaign_path: Path, settings: Settings, checkpoint: Checkpoint, old: PlanMeta,
    inputs: _Inputs, *, errors_limit: int | None,
) -> PlanReport:
    campaign_id = old.campaign_id or None  # a checkpoint without an identity keeps its keys
    settings = replace(settings, campaign=replace(settings.campaign, campaign_id=campaign_id))
    meta = PlanMeta(
        campaign=settings.campaign.name, campaign_path=inputs.campaign_path,
        campaign_sha256=inputs.campaign_sha256, settings_sha256=inputs.settings_sha256,
        provider=settings.provider.name.value,
        created_at=now_iso(), campaign_id=old.campaign_id,
    )
    suppression = await anyio.to_thread.run_sync(load_suppression, settings.campaign.suppression)
    planner = Planner(settings, campaign_dir=campaign_path.parent, suppression=suppression,
                      opted_out=await _opted_out(settings))
    with CampaignReader(campaign_path, delimiter=settings.campaign.delimiter) as reader:
        planned = [PlannedLine(planner.plan(item), _pinned(item)) for item in reader]
        if reader.sha256() != inputs.campaign_sha256:
            raise CampaignFileError(reader.path, "the file changed while it was planned; plan again")
    summary = await amend_checkpoint(checkpoint, meta, planned,
                                     senders=frozenset(s.account for s in settings.senders))
    report = await build_report(checkpoint, settings, errors_limit=errors_limit, status="amended")
    return replace(report, notes=tuple(summary.lines()))


async def _opted_out(settings: Settings) -> Suppression:
    """The shared ledger's opt-outs, as a suppression the planner checks (reason ``opted_out``)."""
    found = await ledger_opt_outs(settings)
    return Suppression(user_ids=found.user_ids, usernames=found.usernames)


def _pinned(item: RawRow | RowError) -> str | None:
    sender = item.fields.get("sender") if isinstance(item, RawRow) else None
    return sender.strip().removeprefix("@") or None if isinstance(sender, str) else None
