"""The opt-out rules: does an answer ask not to be messaged again?

A rule matches as a whole word or phrase, case-insensitively (Unicode case folding), anywhere in
the answer: ``STOP!!!``, ``Unsubscribe me`` and ``🙏 stop 🙏`` match ``stop``/``unsubscribe``;
``stopped by the store`` does not (``stopped`` is another word). A phrase matches its words with
any whitespace between them. Accents count: ``ARRET`` and ``ARRÊT`` are two rules, both default.
Rules and answers are compared in one Unicode form (NFKC): an ``Ê`` typed as ``E`` and a
combining accent, and full-width ``ＳＴＯＰ`` from an East Asian keyboard, are the letters they show.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Final

__all__ = ["DEFAULT_OPT_OUT", "OptOutRules"]

#: the rules when ``[replies] opt_out`` is not set
DEFAULT_OPT_OUT: Final = (
    "stop", "unsubscribe", "opt out", "opt-out", "optout", "no more",
    # Spanish and Italian; French; German and Scandinavian; Dutch
    "alto", "basta", "arret", "arrêt", "désabonner", "stopp", "abmelden", "afmelden",
)


class OptOutRules:
    """Compiled opt-out rules; :meth:`matches` is a pure function of the text."""

    def __init__(self, rules: Sequence[str] = DEFAULT_OPT_OUT) -> None:
        self.rules = tuple(r.strip() for r in rules if r.strip())
        words = [r"\s+".join(re.escape(w) for w in _folded(rule).split())
                 for rule in self.rules]
        # \w on both sides: a rule inside a longer word (stopped, nonstop) is no match
        self._pattern = (re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)")
                         if words else None)

    def matches(self, text: str) -> bool:
        """Whether ``text`` asks to opt out."""
        return self._pattern is not None and self._pattern.search(_folded(text)) is not None


def _folded(text: str) -> str:
    # NFKC first: casefold leaves a decomposed or full-width letter as it is, so ARRE + U+0302 +
    # T would not be arrêt; NFKC again after, as casefold can decompose (İ -> i + U+0307)
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
