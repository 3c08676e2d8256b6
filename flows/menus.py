"""The words of the voice menus and the language of a first text: what a caller's keys or
words choose (CLINICAL.md §6: answer words live in flows/, nowhere else).

Pure functions: no I/O; none raises on any str input.
"""

from __future__ import annotations

from collections.abc import Mapping

from flows import keywords
from flows.parsing import normalize

# "Press 1 to finish by text, 2 to talk to the clinic" / "1 to hear it again, 2 for the clinic".
TEXT_WORDS = frozenset("text texto mensaje message sms".split())
CLINIC_WORDS = frozenset("clinic clinica doctor nurse talk hablar person persona".split())
AGAIN_WORDS = frozenset("again repeat otra vez repetir repita".split())
OFFER = {"one": TEXT_WORDS, "two": CLINIC_WORDS}
ADVICE = {"one": AGAIN_WORDS, "two": CLINIC_WORDS}

_ENGLISH = frozenset({"english", "ingles"})
_SPANISH = frozenset({"spanish", "espanol"})
# A stranger's first text in these Spanish words gets its answer in Spanish.
_SPANISH_OPENERS = frozenset({"dolor", "espalda", "ayuda"})


def menu_choice(digits: str, speech: str, options: Mapping[str, frozenset[str]]) -> str | None:
    """"one" or "two" for key 1 or 2, or for words of exactly one option; None otherwise."""
    if digits:
        return {"1": "one", "2": "two"}.get(digits)
    tokens = set(normalize(speech).split())
    found = [name for name, words in options.items() if tokens & words]
    return found[0] if len(found) == 1 else None


def language_choice(digits: str, speech: str) -> str | None:
    """The language menu: key 1 English, 2 Spanish, or the language's name said; None if unclear."""
    if digits:
        return {"1": "en", "2": "es"}.get(digits)
    word = keywords.classify(speech)
    if word in ("lang_en", "lang_es"):
        return word[-2:]
    tokens = set(normalize(speech).split())
    en, es = bool(tokens & _ENGLISH), bool(tokens & _SPANISH)
    return "en" if en and not es else "es" if es and not en else None


def first_text_language(text: str) -> str:
    """The language to answer a stranger's first text in: Spanish for "dolor", "ayuda" ..."""
    return "es" if normalize(text) in _SPANISH_OPENERS else "en"
