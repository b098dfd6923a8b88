"""Strict ``{name}`` templates: plain variable names only, every one of them required unless
it has a default: ``{company|there}`` is ``there`` when the row has no ``company`` value (as
mail-merge tools write it).

``str.format`` would let ``{user.__class__}`` or ``{items[0]}`` reach into Python objects and
``{x!r}`` / ``{x:>99999}`` change or blow up the text, so those forms are refused, not rendered.
``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["Template", "TemplateProblem", "compile_template", "render"]

_PARSER: Final = string.Formatter()


@dataclass(frozen=True, kw_only=True, slots=True)
class Template:
    """A parsed template: its variable names, in order, and a positional format string."""

    source: str
    variables: tuple[str, ...]
    #: the source with each placeholder as ``{}`` and literal braces doubled
    pattern: str
    #: per variable, the text used when the row has no value (``{name|default}``), else None
    defaults: tuple[str | None, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class TemplateProblem:
    """Why a template cannot be used or rendered; ``reason`` is a short code."""

    reason: str
    message: str
    variable: str | None = None


def _plain_name(name: str) -> bool:
    # column names such as "first-name" are fine; dots, brackets and digits-only are not
    return name.replace("-", "_").isidentifier()


def compile_template(source: str) -> Template | TemplateProblem:
    """Parse ``source``; a placeholder that is not a plain ``{name}`` is a problem value."""
    try:
        parsed = list(_PARSER.parse(source))
    except ValueError as exc:
        return TemplateProblem(
            reason="bad_template",
            message=f"{exc}; write {{{{ and }}}} for literal braces",
        )
    names: list[str] = []
    defaults: list[str | None] = []
    pattern: list[str] = []
    for literal, field, spec, conversion in parsed:
        pattern.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        name, bar, default = field.partition("|")
        if not _plain_name(name) or spec or conversion:
            suffix = (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            return TemplateProblem(
                reason="bad_placeholder",
                message=f"{{{field}{suffix}}} is not allowed: only plain names such as "
                "{first_name} are",
                variable=name,
            )
        names.append(name)
        defaults.append(default if bar else None)
        pattern.append("{}")
    return Template(source=source, variables=tuple(names), pattern="".join(pattern),
                    defaults=tuple(defaults))


#: floats from here on are not every integer: a value this large may have lost digits
_EXACT_FLOATS: Final = float(2**53)


def _as_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def render(template: Template, variables: Mapping[str, object]) -> str | TemplateProblem:
    """Fill every placeholder from ``variables``; a missing, null or blank one is a problem."""
    values: list[str] = []
    for index, name in enumerate(template.variables):
        value = variables.get(name)
        if value.__class__ is str and value and not value.isspace():
            values.append(value)  # a non-blank str
            continue
        if template.defaults and (default := template.defaults[index]) is not None and (
            value is None or isinstance(value, str)
        ):
            values.append(default)  # no value (missing, null or blank): {name|default}
            continue
        text = _variable_text(name, value)
        if isinstance(text, TemplateProblem):
            return text
        values.append(text)
    return template.pattern.format(*values)


def _variable_text(name: str, value: object) -> str | TemplateProblem:
    if value is None or isinstance(value, str) and not value.strip():
        # an empty CSV cell is how a spreadsheet says "no value": never send "Hi ,"
        return TemplateProblem(
            reason="missing_variable",
            message=f"the text uses {{{name}}} but the row has no {name!r} value",
            variable=name,
        )
    if isinstance(value, float) and abs(value) >= _EXACT_FLOATS:
        # a JSON integer past 64 bits is read as a float: 12345678901234567890123 would be
        # sent as 1.2345678901234568e+22
        return TemplateProblem(
            reason="bad_variable",
            message=f"{{{name}}} is a number too large to keep exact; write it as a string",
            variable=name,
        )
    text = _as_text(value)
    if text is None:
        return TemplateProblem(
            reason="bad_variable",
            message=f"{{{name}}} is a {type(value).__name__}, not text or a number",
            variable=name,
        )
    return text
