from __future__ import annotations

import orjson
import pytest

from bulkdm.template import Template, TemplateProblem, compile_template, render


def compiled(source: str) -> Template:
    template = compile_template(source)
    assert isinstance(template, Template), template
    return template


def test_plain_names_are_filled_from_the_row() -> None:
    template = compiled("Hi {first_name}, your {plan-name} plan renews on {date}.")
    text = render(template, {"first_name": "Ana", "plan-name": "Pro", "date": "1 Dec"})
    assert text == "Hi Ana, your Pro plan renews on 1 Dec."
    assert template.variables == ("first_name", "plan-name", "date")


def test_doubled_braces_are_literal_braces() -> None:
    assert render(compiled("{{code}} is {code}"), {"code": "42"}) == "{code} is 42"


def test_numbers_and_booleans_render_as_json_writes_them() -> None:
    template = compiled("{n} {x} {ok}")
    assert render(template, {"n": 1234567890123456789, "x": 2.5, "ok": True}) == (
        "1234567890123456789 2.5 true"
    )


def test_a_number_too_large_to_be_exact_is_a_problem_not_a_rounded_text() -> None:
    # orjson reads an integer past 64 bits as a float: the row's 12345678901234567890123 was
    # sent as "1.2345678901234568e+22"
    row = orjson.loads(b'{"n": 12345678901234567890123, "m": 18446744073709551615}')
    problem = render(compiled("{n}"), row)
    assert isinstance(problem, TemplateProblem)
    assert (problem.reason, problem.variable) == ("bad_variable", "n")
    assert "write it as a string" in problem.message
    assert render(compiled("{m} {x}"), {**row, "x": 9007199254740991.0}) == (
        "18446744073709551615 9007199254740991.0")


def test_emoji_and_right_to_left_text_pass_through_unchanged() -> None:
    text = render(compiled("مرحبا {name} 🎉 שלום"), {"name": "فرح 👩🏽‍💻"})
    assert text == "مرحبا فرح 👩🏽‍💻 🎉 שלום"


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("Hi {user.name}", "{user.name}"),
        ("Hi {user.__class__}", "{user.__class__}"),
        ("Hi {items[0]}", "{items[0]}"),
        ("Hi {name!r}", "{name!r}"),
        ("Hi {name:>20}", "{name:>20}"),
        ("Hi {}", "{}"),
        ("Hi {0}", "{0}"),
    ],
)
def test_anything_but_a_plain_name_is_refused(source: str, shown: str) -> None:
    problem = compile_template(source)
    assert isinstance(problem, TemplateProblem)
    assert problem.reason == "bad_placeholder"
    assert problem.message.startswith(f"{shown} is not allowed")


@pytest.mark.parametrize("source", ["Hi {name", "Hi name}", "{"])
def test_unbalanced_braces_are_a_bad_template(source: str) -> None:
    problem = compile_template(source)
    assert isinstance(problem, TemplateProblem)
    assert problem.reason == "bad_template"
    assert "{{" in problem.message  # tells the user how to write a literal brace


@pytest.mark.parametrize("variables", [{}, {"first_name": None}, {"first_name": "  "}])
def test_a_missing_null_or_blank_variable_is_named(variables: dict[str, object]) -> None:
    problem = render(compiled("Hi {first_name}!"), variables)
    assert problem == TemplateProblem(
        reason="missing_variable",
        message="the text uses {first_name} but the row has no 'first_name' value",
        variable="first_name",
    )


def test_an_object_value_is_not_rendered() -> None:
    problem = render(compiled("Hi {who}"), {"who": {"name": "Ana"}})
    assert isinstance(problem, TemplateProblem)
    assert (problem.reason, problem.variable) == ("bad_variable", "who")
