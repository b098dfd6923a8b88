"""Secrets read from the environment, wrapped so no repr, log line or error can show them."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

from bulkdm.errors import ConfigError

__all__ = ["MASK", "Secret", "holds_password", "masked_url", "read_secret", "usual_env_name"]

MASK: Final = "********"
#: how environment variables are named by convention (POSIX)
_USUAL_NAME: Final = re.compile(r"[A-Z_][A-Z0-9_]*")


class Secret:
    """A secret string. ``str()``, ``repr()`` and formatting show a mask; ``reveal()`` the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> str:
        raise TypeError("a Secret cannot be pickled")


def read_secret(variable: str, *, purpose: str, environ: Mapping[str, str] | None = None,
                source: Path | str | None = None, key: str | None = None) -> Secret:
    """Read ``variable`` from the environment; a missing or empty one is a :class:`ConfigError`
    naming the settings file (``source``) and the key that names the variable (``key``).

    The error names the variable only when it is named as variables are (capitals, digits,
    ``_``): any other name came from a settings file and may be the secret pasted in its place.
    """
    value = (os.environ if environ is None else environ).get(variable, "")
    if not value.strip():
        named = variable if usual_env_name(variable) else None  # else maybe the secret
        raise ConfigError(_not_set(variable, purpose), source=source, key=key or named)
    return Secret(value.strip())


def usual_env_name(name: str) -> bool:
    """Whether ``name`` is named as environment variables are (capitals, digits, ``_``): a name
    with lower-case letters is allowed, but is more likely a secret pasted in its place."""
    return _USUAL_NAME.fullmatch(name) is not None


def _not_set(variable: str, purpose: str) -> str:
    if usual_env_name(variable):
        return (f"environment variable {variable} is not set; it holds the {purpose}. "
                f"Export it (export {variable}=...) and run again")
    return (f"the environment variable that holds the {purpose} is not set. Its name is not "
            "shown: it has lower-case letters, as a secret does. Name the variable there, and "
            "export the secret in it")


def masked_url(url: str) -> str:
    """``url`` without its password (``user:password@`` or ``?password=``), for messages; a URL
    that cannot be read at all is shown by its scheme alone."""
    parts = _parts(url)
    if parts is None:
        return f"{url.partition('://')[0]}://(a URL that cannot be read)"
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = "&".join("password=***" if _is_password(item) else item
                     for item in parts.query.split("&")) if parts.query else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def holds_password(url: str) -> bool:
    """Whether ``url`` carries a password (``user:password@`` or ``?password=``); one that
    cannot be read is left to its reader to refuse."""
    parts = _parts(url)
    return parts is not None and (parts.password is not None
                                  or any(map(_is_password, parts.query.split("&"))))


def _parts(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.password  # noqa: B018  # reading it is what may raise (a bad port, a bad [host)
    except ValueError:
        return None
    return parts


def _is_password(item: str) -> bool:
    return item.partition("=")[0].lower() == "password"
