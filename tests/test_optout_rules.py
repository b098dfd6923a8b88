"""The opt-out matcher over phrases that must and must not match (a pure function)."""

from __future__ import annotations

import pytest

from bulkdm.optout import OptOutRules

DEFAULT = OptOutRules()


@pytest.mark.parametrize("text", [
    "STOP", "stop", "Stop.", "STOP!!!", "  stop  ", "Unsubscribe me", "please unsubscribe",
    "OPT OUT", "opt  out please", "opt-out", "no more", "No more messages", "alto ahí", "ALTO",
    "Arrêt", "ARRET", "STOPP", "🛑STOP🛑", "🙏 stop 🙏", "stop😡", "ok\nSTOP", "(stop)",
    "\"stop\"", "Basta!", "bitte abmelden",
])
def test_these_answers_opt_out(text: str) -> None:
    assert DEFAULT.matches(text)


@pytest.mark.parametrize("text", [
    "stopped by the store", "nonstop", "unstoppable", "stops", "Thanks, sounds great!",
    "no thanks, please stop messaging me".replace("stop", "halt"), "more please", "optometry",
    "altogether", "basta-pasta".replace("basta", "bastard"), "", "stopwatch", "arrets",
    "nomore",
])
def test_these_answers_do_not(text: str) -> None:
    assert not DEFAULT.matches(text)


def test_the_polite_answer_opts_out_only_if_a_rule_matches_it() -> None:
    polite = "no thanks, please stop messaging me"
    assert DEFAULT.matches(polite)  # "stop" is a whole word in it
    assert not OptOutRules(["unsubscribe"]).matches(polite)
    assert OptOutRules(["stop messaging"]).matches(polite)


def test_configured_rules_replace_the_defaults_and_none_match_nothing() -> None:
    rules = OptOutRules(["Leave me alone", "STOPPEN"])
    assert rules.matches("please LEAVE ME   alone") and rules.matches("stoppen!")
    assert not rules.matches("STOP")
    assert not OptOutRules([]).matches("STOP")


@pytest.mark.parametrize("text", [
    "ARRE\u0302T", "de\u0301sabonner", "Je veux me DE\u0301SABONNER", "ＳＴＯＰ", "ｓｔｏｐ！",
    "ＵＮＳＵＢＳＣＲＩＢＥ me",
])
def test_decomposed_accents_and_full_width_letters_opt_out(text: str) -> None:
    # a phone keyboard may send Ê as E + a combining accent, an East Asian one full-width
    # letters: the answer shows the rule's word, and was not read as an opt-out
    assert DEFAULT.matches(text)


def test_a_rule_written_decomposed_matches_the_composed_answer() -> None:
    assert OptOutRules(["de\u0301sinscrire"]).matches("Désinscrire, merci")
    assert not DEFAULT.matches("ＳＴＯＰＰＥＤ by the store")
