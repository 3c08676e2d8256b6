"""Turns patients' free-text replies (SMS or speech) into answer values, English and Spanish.

Forgiving about how people text (case, accents, punctuation, "7/10", "2wks", "siete"), strict
where a wrong value would change the advice: a hedged, mixed or out-of-range reply is UNCLEAR
and gets re-asked (CLINICAL.md §6), never guessed. A reply is an answer only when every word
in it is the answer or a filler from the closed list of its kind (FILLERS: "yes I do", "about
3 weeks", "it's a 7"); any other word makes it UNCLEAR ("yes but only sometimes", "7 but only
when I move"). A range of numbers reads at its safer end ("2-3 weeks" -> 21 days, "6 or 7" ->
7). Every word matches as a whole word, so "nothing" is not "no", "yesterday" is not "yes"
and "sino" is not "si".

Opt-out and the other control words are read before any of this, in flows.reading; no filler
list here holds an opt-out word, so a text with one is no answer even when parsed alone (but
for the idiom "para nada", "not at all", which flows.keywords does not count as "para").

Pure functions: no I/O, no clock; no function raises on any str input.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "AGE_FILLERS",
    "CHOICE_FILLERS",
    "DURATION_FILLERS",
    "FILLERS",
    "KINDS",
    "NOT_SURE",
    "NO_ONLY_FILLERS",
    "NO_WORDS",
    "PAIN_FILLERS",
    "STATUSES",
    "STATUS_FILLERS",
    "UNCLEAR",
    "YES_NO_FILLERS",
    "YES_NO_VOCABULARY",
    "YES_WORDS",
    "Parsed",
    "normalize",
    "parse",
    "parse_age",
    "parse_choice",
    "parse_duration",
    "parse_pain_score",
    "parse_status",
    "parse_yes_no",
    "yes_no_words",
]


@dataclass(frozen=True)
class Parsed:
    """The outcome of parsing one reply."""

    ok: bool  # True when a value was understood
    value: object = None  # bool | int | str
    not_sure: bool = False  # "not sure" / "no sé" / "don't know": record as not answered


UNCLEAR = Parsed(False)
NOT_SURE = Parsed(False, None, True)

STATUSES = ("gone", "better", "same", "worse")  # follow-up status values, in menu order 1..4

MAX_AGE = 120
MAX_PAIN = 10
MAX_DURATION_DAYS = 120 * 365  # beyond this a "duration" is a typo, not an answer
_MAX_NUMBER_CHARS = 9  # longer digit runs are phone numbers or typos (and int() has limits)


# ---- normalization ---------------------------------------------------------------------------

_APOSTROPHES = dict.fromkeys(map(ord, "'’‘`´ʼʹ′"), None)
_DASHES = dict.fromkeys(map(ord, "‐‑‒–—―−﹣"), "-")
_VULGAR = {"½": ".5", "¼": ".25", "¾": ".75"}
_DIGITS = frozenset("0123456789")


def normalize(text: str) -> str:
    """Lowercase, accents stripped, punctuation and runs of whitespace collapsed to one space.

    Kept: letters (any script), ASCII digits, '.' between digits ("1.5"), '/' between two
    words or numbers ("7 / 10" -> "7/10"), '-' before a digit ("-1", "2 - 3" -> "2-3") and
    '+' after a digit ("6+"), because those change what a number means. ",5" after a digit
    is a Spanish decimal half ("1,5 meses" -> "1.5 meses"); any other comma separates
    ("2,3 semanas" -> "2 3 semanas": two numbers, not a guess). Apostrophes are dropped
    ("don't" -> "dont"). Examples: "Sí." -> "si", "  YES!!! " -> "yes", "No sé" -> "no se".
    Never raises; anything that is not a str normalizes to "".
    """
    if not isinstance(text, str) or not text:
        return ""
    return _normalize(text)


@lru_cache(maxsize=64)
def _normalize(text: str) -> str:
    # Pure, and one text is read many times over (each keyword, the reading, the engine's
    # parse): about thirty calls per webhook, nearly all on the same text. A few dozen entries
    # cover the texts in flight; patients' words are not kept around longer than that.
    for char, decimal in _VULGAR.items():
        if char in text:
            text = re.sub(rf"(?<=\d){char}", decimal, text).replace(char, f" 0{decimal} ")
    text = unicodedata.normalize("NFKD", text).casefold()
    text = unicodedata.normalize("NFKD", text)
    text = "".join(
        ch for ch in text if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf"
    )
    text = text.translate(_APOSTROPHES).translate(_DASHES).replace("⁄", "/")
    text = re.sub(r"(?<=\d),(?=5(?!\d))", ".", text)
    text = re.sub(r"(?<=\d)\s*-\s*(?=\d)", "-", text)
    last = len(text) - 1
    out = []
    for i, ch in enumerate(text):
        if ch in _DIGITS or ch.isalpha():
            out.append(ch)
        elif ch == "." and 0 < i < last and text[i - 1] in _DIGITS and text[i + 1] in _DIGITS:
            out.append(ch)
        elif ch == "-" and i < last and text[i + 1] in _DIGITS:
            out.append(ch)
        elif ch == "+" and i > 0 and text[i - 1] in _DIGITS:
            out.append(ch)
        elif ch == "/":
            out.append(ch)
        else:
            out.append(" ")
    result = re.sub(r"\s*/[\s/]*", "/", "".join(out))
    result = re.sub(r"(?<!\w)/|/(?!\w)", " ", result)
    return " ".join(result.split())


_TOKEN = re.compile(r"\d+(?:\.\d+)*|[^\W\d_]+|[/+-]")


def _tokens(normalized: str) -> list[str]:
    """Words, numbers ("7", "1.5") and the signs '/', '+', '-' of a normalized text."""
    return _TOKEN.findall(normalized)


def _is_es(lang: object) -> bool:
    return isinstance(lang, str) and lang.lower().startswith("es")


class _Lexicon:
    """Phrases (normalized, whole words) with labels, matched longest first, left to right."""

    def __init__(self, entries: Iterable[tuple[str, object]]) -> None:
        self._by_first: dict[str, list[tuple[tuple[str, ...], object]]] = {}
        for phrase, label in entries:
            words = tuple(_tokens(normalize(phrase)))
            if words:
                self._by_first.setdefault(words[0], []).append((words, label))
        for candidates in self._by_first.values():
            candidates.sort(key=lambda item: -len(item[0]))

    def match(self, tokens: Sequence[str], i: int) -> tuple[int, object] | None:
        """(length, label) of the longest phrase starting at tokens[i], or None."""
        for words, label in self._by_first.get(tokens[i], ()):
            if tuple(tokens[i : i + len(words)]) == words:
                return len(words), label
        return None

    def occurs(self, tokens: Sequence[str], label: object) -> bool:
        """True when a phrase with `label` occurs anywhere, even overlapping another phrase
        ("of course not really" holds both "of course not" and the hedge "not really"), but
        not inside a longer phrase that scan() reads whole ("no para nada" holds "no para")."""
        inside = set()
        i = 0
        for _, text in self.scan(tokens):
            size = len(text.split())
            if size > 1:
                inside |= {
                    (start, end)
                    for start in range(i, i + size)
                    for end in range(start + 1, i + size + 1)
                } - {(i, i + size)}
            i += size
        for i, token in enumerate(tokens):
            for words, found in self._by_first.get(token, ()):
                if found == label and tuple(tokens[i : i + len(words)]) == words:
                    if (i, i + len(words)) not in inside:
                        return True
        return False

    def scan(self, tokens: Sequence[str]) -> list[tuple[object, str]]:
        """[(label or None, text)] covering all tokens; unmatched tokens carry label None."""
        items: list[tuple[object, str]] = []
        i = 0
        while i < len(tokens):
            found = self.match(tokens, i)
            if found is None:
                items.append((None, tokens[i]))
                i += 1
            else:
                length, label = found
                items.append((label, " ".join(tokens[i : i + length])))
                i += length
        return items


def _entries(label: object, phrases: str) -> list[tuple[str, object]]:
    """Phrases separated by '|' (a phrase may hold several words), all with one label."""
    return [(phrase.strip(), label) for phrase in phrases.split("|") if phrase.strip()]


# "Not sure" in either language: recorded as not answered, never re-asked as unclear.
_NOT_SURE_PHRASES = (
    "not sure|unsure|not certain|uncertain|dont know|do not know|dont knw|idk|idunno|dunno|"
    "no idea|no clue|not a clue|cant remember|cannot remember|dont remember|do not remember|"
    "cant recall|dont recall|cant say|cannot say|hard to say|cant tell|who knows|"
    "no se|no lo se|no sabria|no sabria decir|no estoy seguro|no estoy segura|"
    "no toy seguro|ni idea|no tengo idea|no tengo ni idea|quien sabe|no recuerdo|"
    "no lo recuerdo|no me acuerdo|no sabe|no sabemos"
)
_NOT_SURE_LEXICON = _Lexicon(_entries("not_sure", _NOT_SURE_PHRASES))
# "nose" is how many type "no sé", and an English word: not sure only as the whole message.
_WHOLE_NOT_SURE = frozenset({"nose"})


# ---- numbers ---------------------------------------------------------------------------------

_UNIT_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5,
    "seis": 6, "siete": 7, "ocho": 8, "nueve": 9,
}  # fmt: skip
_SMALL_WORDS = {
    **_UNIT_WORDS,
    "zero": 0, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
    "cero": 0, "diez": 10, "doce": 12, "trece": 13, "catorce": 14, "quince": 15,
    "dieciseis": 16, "diecisiete": 17, "dieciocho": 18, "diecinueve": 19, "veinte": 20,
    "veintiuno": 21, "veintiun": 21, "veintiuna": 21, "veintidos": 22, "veintitres": 23,
    "veinticuatro": 24, "veinticinco": 25, "veintiseis": 26, "veintisiete": 27,
    "veintiocho": 28, "veintinueve": 29,
}  # fmt: skip
_TENS_WORDS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
    "treinta": 30, "cuarenta": 40, "cincuenta": 50, "sesenta": 60, "setenta": 70,
    "ochenta": 80, "noventa": 90,
}  # fmt: skip


class _Number(NamedTuple):
    value: Fraction | None  # None: a number that cannot be an answer (too long, "1.2.3")
    end: int  # index of the first token after the number
    decimal: bool = False


def _read_number(tokens: Sequence[str], i: int, lang: object) -> _Number | None:
    """The number spelled by tokens[i:] ("7", "1.5", "seven", "forty five", "treinta y uno")."""
    token = tokens[i]
    if token[0] in _DIGITS:
        if len(token) > _MAX_NUMBER_CHARS or token.count(".") > 1:
            return _Number(None, i + 1)
        return _Number(Fraction(token), i + 1, "." in token)
    # "once" is Spanish for 11 but an English word too: a number only in Spanish replies.
    if token in _SMALL_WORDS or (token == "once" and _is_es(lang)):
        value, end = _SMALL_WORDS.get(token, 11), i + 1
        if token in ("one", "uno") and end < len(tokens) and tokens[end] == "hundred":
            return _hundreds(tokens, end + 1, lang)
        return _Number(Fraction(value), end)
    if token in _TENS_WORDS:
        value, end = _TENS_WORDS[token], i + 1
        nxt = tokens[end] if end < len(tokens) else ""
        after = tokens[end + 1] if end + 1 < len(tokens) else ""
        if nxt in _UNIT_WORDS:  # "forty five" (and "forty-five", normalized to two words)
            value, end = value + _UNIT_WORDS[nxt], end + 1
        elif nxt == "y" and (after in _UNIT_WORDS or after in ("un", "una")):
            value, end = value + _UNIT_WORDS.get(after, 1), end + 2  # "treinta y un dias"
        return _Number(Fraction(value), end)
    if token in ("hundred", "cien", "ciento"):
        return _hundreds(tokens, i + 1, lang)
    return None


def _hundreds(tokens: Sequence[str], end: int, lang: object) -> _Number:
    """100, plus what follows "hundred (and)" / "ciento": "a hundred and five" -> 105."""
    start = end + 1 if end < len(tokens) and tokens[end] == "and" else end
    rest = _read_number(tokens, start, lang) if start < len(tokens) else None
    if rest is not None and rest.value is not None and not rest.decimal and rest.value < 100:
        return _Number(100 + rest.value, rest.end)
    return _Number(Fraction(100), end)


def _whole_number(value: Fraction, low: int, high: int) -> Parsed:
    if value.denominator == 1 and low <= value <= high:
        return Parsed(True, int(value))
    return UNCLEAR


def _single_value(values: set[Fraction], not_sure: bool, low: int, high: int) -> Parsed:
    """The one number a reply gave (repeats allowed), else UNCLEAR / NOT_SURE."""
    if not values:
        return NOT_SURE if not_sure else UNCLEAR
    if len(values) > 1:
        return UNCLEAR
    return _whole_number(next(iter(values)), low, high)


# ---- yes / no --------------------------------------------------------------------------------

_YES_PHRASES = (
    "yes|yeah|yea|yeh|yah|yep|yup|yes please|aye|correct|true|affirmative|absolutely|"
    "definitely|certainly|of course|thats right|that is right|thats correct|that is correct|"
    "si|claro|claro que si|por supuesto|desde luego|asi es|correcto|exacto|afirmativo"
)
_NO_PHRASES = (
    "no|nope|nop|nah|naw|nay|never|negative|false|incorrect|no way|not at all|"
    "not anymore|not any more|absolutely not|definitely not|certainly not|"
    "of course not|nunca|jamas|para nada|no para nada|de ninguna manera|en absoluto|claro que no|"
    "por supuesto que no|negativo|ya no"
)
_NEGATIONS = (
    "not|dont|doesnt|didnt|isnt|wasnt|arent|werent|havent|hasnt|hadnt|wont|cant|cannot|"
    "couldnt|wouldnt|shouldnt|aint|nor|neither|ni|tampoco"
)
# The closed list of words that do not change a yes or a no (CLINICAL.md §6): the subject and
# verb that repeat it ("yes I do", "yes it is", "sí tengo", "no es"), courtesy ("no thanks",
# "sí señor", "yes please") and emphasis ("yes really", "well no"). Nothing else: a reply
# with any other word ("yes at night", "no fever", "yes but only sometimes") is UNCLEAR.
YES_NO_FILLERS = frozenset(
    "i im ive id do did does have has had am is was are were it its that thats "
    "please pls plz thanks thank you thx ty ok okay oh well really indeed totally sure very "
    "much sir maam mam doctor doc "
    "tengo tuve tenia tenido he ha hay habia es era fue sido esta estoy estaba estado lo la eso "
    "senor senora senorita doctora gracias por favor porfa oye bueno pues".split()
)
# Words allowed beside a no only: "nope none", "no nothing", "no I haven't", "no nada".
NO_ONLY_FILLERS = frozenset(
    _NEGATIONS.split("|") + "none nothing nada ninguno ninguna ningun".split()
)
# English verbs that repeat a yes: with a no they need their negation ("no I have not"); "no I
# do" / "no it is" contradict themselves and are UNCLEAR.
_AFFIRMING_VERBS = frozenset("do did does have has had am is was are were im ive its thats".split())

_YES_NO_LEXICON = _Lexicon(
    _entries("not_sure", _NOT_SURE_PHRASES)
    + _entries(True, _YES_PHRASES)
    + _entries(False, _NO_PHRASES)
    + _entries(
        "hedge",
        "maybe|perhaps|possibly|probably|likely|unlikely|might|may|could be|kind of|kinda|"
        "sort of|sorta|sometimes|sometime|at times|occasionally|on and off|off and on|"
        "now and then|here and there|once in a while|comes and goes|come and go|"
        "a little|little|a bit|little bit|a tad|slightly|somewhat|partly|partially|mostly|"
        "usually|rarely|seldom|hardly|barely|almost|nearly|think|guess|suppose|believe|"
        "depends|more or less|so so|not really|not much|not always|not often|not exactly|"
        "not very|not quite|not completely|not entirely|not totally|not too|not that much|"
        "not usually|but|although|though|except|if|unless|"
        "tal vez|talvez|quizas|quiza|a veces|mas o menos|un poco|un poquito|poco|poquito|"
        "algo|puede ser|puede que|creo|supongo|a lo mejor|probablemente|posiblemente|"
        "depende|casi|de vez en cuando|no mucho|no siempre|no tanto|no realmente|"
        "no exactamente|no muy|no del todo|pero|aunque|medio|en parte|ocasionalmente|"
        "rara vez|raramente",
    )
    # Double negatives: "it never stops" answers "is it there all the time?" with YES, and
    # "no me deja dormir" answers "does it wake you?" with YES; a no-word here is no "no".
    + _entries(
        "hedge",
        "never stops|never stop|never goes away|never go away|never went away|never leaves|"
        "never ends|never quits|never lets up|never eases|never gets better|never improves|"
        "never helps|never helped|no relief|no help|doesnt stop|does not stop|dont stop|"
        "wont stop|will not stop|cant stop|doesnt go away|does not go away|wont go away|"
        "doesnt ease|doesnt help|does not help|didnt help|did not help|doesnt get better|"
        "no se quita|no se me quita|no se va|no se me va|no para|no me deja|no deja|"
        "no ayuda|no me ayuda|no ha ayudado|no alivia|no mejora|no cede|nunca para|"
        "nunca se quita|nunca se va|nunca me deja|nunca mejora",
    )
    + _entries("negation", _NEGATIONS)
    + _entries("no_only", "none|nothing|nada|ninguno|ninguna|ningun")
    + [(word, "filler") for word in sorted(YES_NO_FILLERS)]
    + [("ya", "ya")]
)

# Replies that are a yes or a no only when they are the whole message: a menu digit, a single
# letter ("y" is also Spanish for "and"), or a short verb answer ("I do", "it doesn't").
_WHOLE_YES_NO = {
    **dict.fromkeys(
        ("1", "y", "ya", "i do", "i did", "i have", "it does", "it did", "it is", "i am",
         "yes i do", "yes i did", "yes i have", "yes it does", "yes it is"),
        True,
    ),
    **dict.fromkeys(
        ("2", "n", "i dont", "i do not", "i didnt", "i did not", "i havent", "i have not",
         "it doesnt", "it does not", "it didnt", "it did not", "it isnt", "it is not",
         "its not", "im not", "i am not", "no i dont", "no i do not", "no i havent",
         "no it doesnt", "no it isnt"),
        False,
    ),
}  # fmt: skip


def _words(phrases: str) -> frozenset[str]:
    return frozenset(word for phrase in phrases.split("|") for word in _tokens(normalize(phrase)))


YES_WORDS = _words(_YES_PHRASES) | {"ya"}  # every word of a yes ("ya" is "yeah" in English)
NO_WORDS = _words(_NO_PHRASES)  # every word of a no
# Every word that can be in a reply read as a yes or a no; any other word makes it UNCLEAR.
YES_NO_VOCABULARY = (
    YES_WORDS
    | NO_WORDS
    | YES_NO_FILLERS
    | NO_ONLY_FILLERS
    | {word for whole in _WHOLE_YES_NO for word in whole.split()}
)

_ELONGATED = (
    (re.compile(r"ye+s+"), "yes"),
    (re.compile(r"no+"), "no"),
    (re.compile(r"nope+"), "nope"),
    (re.compile(r"si+"), "si"),
    (re.compile(r"ya+h+"), "yah"),
    (re.compile(r"yea+h*"), "yeah"),
    (re.compile(r"na+h+"), "nah"),
)


def _unstretch(token: str) -> str:
    """Undoes stretched words: "yesss" -> "yes", "nooo" -> "no", "siii" -> "si"."""
    if len(token) > 2:
        for pattern, word in _ELONGATED:
            if pattern.fullmatch(token):
                return word
    return token


def yes_no_words(text: str) -> list[str]:
    """The words of `text` as parse_yes_no reads them (normalized, stretching undone)."""
    return [_unstretch(token) for token in _tokens(normalize(text))]


def parse_yes_no(text: str, lang: str = "en") -> Parsed:
    """A single clear yes or no, and nothing else: "yes", "Sí", "yes I did", "no, never",
    "nope none", "no thanks", "sí tengo" (every word is the answer or in YES_NO_FILLERS).

    UNCLEAR when any other word is in the reply ("yes at night", "no fever", "yes but only
    sometimes"), when it is hedged ("maybe", "a veces", "I think so"), mixed ("yes and no",
    "yes, no fever"), a yes with a negation ("yes it doesn't stop"), a no with an affirming verb
    ("no I do"), a double negative ("it never stops", "no me deja dormir") or holds no yes/no
    word at all ("nothing", "ok"). NOT_SURE when it says "not sure" / "no sé" / "don't know"
    and nothing else but fillers and hedges; "no, not sure" (not sure with a yes or no) is
    UNCLEAR. The menu digits 1 (yes) and 2 (no) and the letters y / n count only as the whole
    message.
    """
    tokens = yes_no_words(text)
    if not tokens:
        return UNCLEAR
    whole = " ".join(tokens)
    if whole in _WHOLE_YES_NO:
        return Parsed(True, _WHOLE_YES_NO[whole])
    if whole in _WHOLE_NOT_SURE:
        return NOT_SURE
    items = _YES_NO_LEXICON.scan(tokens)
    labels = {label for label, _ in items}
    if None in labels:
        return UNCLEAR  # a word that is neither the answer nor a filler
    if "ya" in labels and not _is_es(lang):  # English "ya" = yeah; Spanish "ya" = already
        labels.add(True)
    polarities = labels & {True, False}
    if "not_sure" in labels:
        return NOT_SURE if not polarities else UNCLEAR
    if any(_YES_NO_LEXICON.occurs(tokens, label) for label in ("hedge", "not_sure")):
        return UNCLEAR  # also when overlapping an answer: "of course not really / not sure"
    if len(polarities) != 1:
        return UNCLEAR
    if True in polarities:
        if labels & {"negation", "no_only"}:
            return UNCLEAR  # "yes I don't", "yes none"
        return Parsed(True, True)
    if "negation" not in labels and any(text in _AFFIRMING_VERBS for _, text in items):
        return UNCLEAR  # "no I do", "no it is"
    return Parsed(True, False)


# ---- numbers in a reply (pain score, age) ----------------------------------------------------

_RANGE_JOINERS = frozenset("or to - o u a hasta".split())  # "6 or 7", "6-7", "6 a 7"
_BETWEEN = frozenset(("between", "entre"))  # "between 6 and 7", "entre 6 y 7"


class _Numbers(NamedTuple):
    values: list[Fraction]  # the amounts given, in order; a range is its upper end
    not_sure: bool  # a "not sure" / "no sé" phrase was in the reply


def _read_numbers(
    tokens: Sequence[str],
    lang: object,
    *,
    fillers: frozenset[str],
    lexicon: _Lexicon,
    reject: frozenset[str] = frozenset(),
    denominator: bool = False,
) -> _Numbers | None:
    """The numbers of a reply whose every other word is a filler, a range word between two
    numbers, a "not sure" phrase or a `lexicon` phrase ("zero": a value 0; "bound": reject;
    any other label: a filler); None when any other word, a sign or a decimal is in it."""
    values: list[Fraction] = []
    not_sure = joined = between = after_number = False
    n = len(tokens)
    i = 0
    while i < n:
        token = tokens[i]
        found = _NOT_SURE_LEXICON.match(tokens, i)
        if found is not None:
            not_sure, after_number = True, False
            i += found[0]
            continue
        if token in reject:
            return None
        number = _read_number(tokens, i, lang)
        if number is not None:
            if number.value is None or number.decimal:
                return None
            i = number.end
            if denominator:
                below = _denominator(tokens, i, lang)
                if below is not None:
                    if below.value != 10:
                        return None
                    i = below.end
            if joined:
                values[-1] = max(values[-1], number.value)  # a range reads as its upper end
            else:
                values.append(number.value)
            joined, after_number = False, True
            continue
        next_is_number = i + 1 < n and _read_number(tokens, i + 1, lang) is not None
        if (
            after_number
            and next_is_number
            and (token in _RANGE_JOINERS or (between and token in ("and", "y")))
        ):
            joined, after_number = True, False
            i += 1
            continue
        found = lexicon.match(tokens, i)
        if found is not None:
            length, label = found
            if label == "bound":
                return None
            if label == "zero":
                values.append(Fraction(0))
            i += length
            after_number = False
            continue
        if token in _BETWEEN:
            between = True
        elif token not in fillers:
            return None  # a word that is neither the answer nor a filler
        after_number = False
        i += 1
    return _Numbers(values, not_sure)


def _one_number(numbers: _Numbers | None, high: int) -> Parsed:
    if numbers is None:
        return UNCLEAR
    if numbers.not_sure:
        return NOT_SURE if not numbers.values else UNCLEAR  # "no sé, 7" is mixed: UNCLEAR
    return _single_value(set(numbers.values), False, 0, high)


# ---- pain score ------------------------------------------------------------------------------

_SCALE = re.compile(
    r"\b(?:(?:on|in)\s+)?(?:(?:a|the|una|la)\s+)?(?:scale|escala)"
    r"(?:\s+(?:of|from|del|de))?(?:\s+(?:0|1|zero|one|cero|uno)\s*(?:-|to|a|al)\s*(?:10|ten|diez))?"
    r"|\b(?:from\s+|del?\s+)?(?:0|1|zero|one|cero|uno)\s*(?:-|to|a|al)\s*(?:10|ten|diez)\b"
)
# The closed list of words that do not change a pain score: "it's a 7", "pain is 7 right now",
# "I'd say about 7", "7ish", "es un 7", "mi dolor está en 7", "le doy un 7".
PAIN_FILLERS = frozenset(
    "a an its it is im i id would say at about around like roughly approximately approx ish "
    "pain my the level score right now today currently rn moment "
    "un una es esta mi el dolor como ahora hoy ahorita momento este en yo diria digo le doy "
    "pongo nivel aproximadamente alrededor".split()
)
_PAIN_LEXICON = _Lexicon(
    _entries("zero", "no pain|none|sin dolor|nada|ningun dolor|nada de dolor|no me duele")
    + _entries(
        "bound",
        "over|under|above|below|almost|nearly|more than|less than|at least|"
        "at most|mas de|menos de|mas que|menos que|casi|por lo menos|al menos",
    )
    + _entries("of_ten", "out of|of|de|sobre")  # also a filler: "un 7 de dolor"
    + _entries("filler", "more or less|mas o menos")
)


def parse_pain_score(text: str, lang: str = "en") -> Parsed:
    """Pain right now, an int 0..10: "7", "7/10", "7 out of 10", "seven", "siete", "a 7",
    with only PAIN_FILLERS around it ("it's a 7 right now"). A range reads as its higher,
    safer end: "6 or 7", "6-7", "between 6 and 7" -> 7.

    UNCLEAR: any other word ("7 but only when I move", "8 for 10 days"), out of range ("11",
    "-1", "70"), two different numbers ("7 8"), decimals ("7.5"), bounds ("over 7", "7+"), a
    denominator other than 10 ("7/8"), a hedge ("7 maybe 8") and a number with "not sure"
    ("no sé, 7"). "no pain" / "none" / "sin dolor" read as 0. NOT_SURE for "not sure" alone.
    """
    tokens = _tokens(_SCALE.sub(" ", normalize(text)))
    numbers = _read_numbers(
        tokens, lang, fillers=PAIN_FILLERS, lexicon=_PAIN_LEXICON, denominator=True
    )
    return _one_number(numbers, MAX_PAIN)


def _denominator(tokens: Sequence[str], i: int, lang: object) -> _Number | None:
    """The "/10", "out of 10", "de diez" after a score, if any."""
    if i >= len(tokens):
        return None
    if tokens[i] == "/":
        after = i + 1
    else:
        found = _PAIN_LEXICON.match(tokens, i)
        if found is None or found[1] != "of_ten":
            return None
        after = i + found[0]
    number = _read_number(tokens, after, lang) if after < len(tokens) else None
    if number is None:
        return _Number(None, after) if tokens[i] == "/" else None
    return number


# ---- age -------------------------------------------------------------------------------------

_AGE_REJECT = frozenset(
    "over under above below almost nearly more less least casi mas menos "
    "something odd plus tantos tanto pico s "
    "month months mo mos mes meses week weeks wk wks semana semanas day days dia dias "
    "born nacido nacida naci + /".split()
)
# The closed list of words that do not change an age: "I'm 45", "45 years old", "age 45",
# "I just turned 45", "tengo 45 años", "45 años de edad".
AGE_FILLERS = frozenset(
    "i im am my age aged is its years year yrs yr yo old about around turned just "
    "tengo anos ano edad mi es de cumpli cumplidos como".split()
)
_AGE_LEXICON = _Lexicon(())


def parse_age(text: str, lang: str = "en") -> Parsed:
    """Age in years, an int 0..120: "45", "45 years", "I'm 45", "forty five", "tengo 45 años",
    with only AGE_FILLERS around it. A range reads as its older, safer end ("45 or 46" -> 46).

    UNCLEAR: any other word ("I'm 45, she's 50"), out of range (so a birth year is UNCLEAR),
    two different numbers, decimals, dates ("1/2/1970"), bounds and vague ages ("over 50",
    "50+", "40s", "40 something"), and ages in months, weeks or days.
    """
    tokens = _tokens(re.sub(r"\by/o\b", " ", normalize(text)))  # "45 y/o"
    numbers = _read_numbers(
        tokens, lang, fillers=AGE_FILLERS, lexicon=_AGE_LEXICON, reject=_AGE_REJECT
    )
    return _one_number(numbers, MAX_AGE)


# ---- duration --------------------------------------------------------------------------------

_DAY, _WEEK, _MONTH, _YEAR = Fraction(1), Fraction(7), Fraction(30), Fraction(365)
_UNITS = {
    **dict.fromkeys("hour hours hr hrs hora horas".split(), Fraction(1, 24)),
    **dict.fromkeys("day days d dy dys dia dias".split(), _DAY),
    **dict.fromkeys("week weeks wk wks w semana semanas sem".split(), _WEEK),
    **dict.fromkeys("fortnight fortnights".split(), Fraction(14)),
    **dict.fromkeys("quincena quincenas".split(), Fraction(15)),
    **dict.fromkeys("month months mo mos mth mths mes meses".split(), _MONTH),
    **dict.fromkeys("year years yr yrs ano anos".split(), _YEAR),
}
_SINGULAR_UNITS = frozenset("hour hora day dia week semana month mes year ano".split())
_EVERY = frozenset("every each per all whole entire cada todo toda todos todas".split())

_DURATION_LEXICON = _Lexicon(
    [
        ("yesterday", ("SPECIAL", Fraction(1))),
        ("ayer", ("SPECIAL", Fraction(1))),
        ("last night", ("SPECIAL", Fraction(1))),
        ("anoche", ("SPECIAL", Fraction(1))),
        ("day before yesterday", ("SPECIAL", Fraction(2))),
        ("anteayer", ("SPECIAL", Fraction(2))),
        ("antier", ("SPECIAL", Fraction(2))),
        ("antes de ayer", ("SPECIAL", Fraction(2))),
        ("antes de anoche", ("SPECIAL", Fraction(2))),
        ("today", ("SPECIAL", Fraction(0))),
        ("hoy", ("SPECIAL", Fraction(0))),
        ("tonight", ("SPECIAL", Fraction(0))),
        ("this morning", ("SPECIAL", Fraction(0))),
        ("this afternoon", ("SPECIAL", Fraction(0))),
        ("this evening", ("SPECIAL", Fraction(0))),
        ("esta manana", ("SPECIAL", Fraction(0))),
        ("esta tarde", ("SPECIAL", Fraction(0))),
        ("esta noche", ("SPECIAL", Fraction(0))),
    ]
    + [(p, ("ANDHALF", None)) for p in ("and a half", "and half", "y medio", "y media")]
    + [(p, ("MORE", None)) for p in ("more than", "longer than", "over", "mas de", "mas que")]
    + [(p, ("POSTMORE", None)) for p in ("or more", "or longer", "or so more", "o mas")]
    + [
        (p, ("SKIP", None))
        for p in (
            "up to",
            "close to",
            "at least",
            "al menos",
            "a lo sumo",
            "more or less",
            "mas o menos",
            "or so",
            "so far",
            "right now",
            "por ahi",
        )
    ]
    + [
        (p, ("REJECT", None))
        for p in (
            "monday mon tuesday tues wednesday thursday thurs friday saturday sunday weekend "
            "lunes martes miercoles jueves viernes sabado domingo finde "
            "january february march april june july august september october november december "
            "enero febrero marzo abril mayo junio julio agosto septiembre setiembre octubre "
            "noviembre diciembre christmas navidad thanksgiving easter"
        ).split()
    ]
    + [("fin de semana", ("REJECT", None))]
)
_RANGE_WORDS = frozenset("or to - o u till until thru through hasta".split())
# The closed list of words that do not change a duration: "about 3 weeks", "for 2 weeks now",
# "it started 10 days ago", "since yesterday", "my back has hurt for a week", "hace como 2
# semanas", "llevo un mes con dolor", "desde hace unos 10 días".
DURATION_FILLERS = (
    frozenset(
        "about around roughly approximately approx abt like almost nearly just only under less "
        "than for since ago now already it its has have had been started began begun the past "
        "last i ive my back pain hurt hurts hurting sore "
        "hace desde como unos unas aproximadamente alrededor de ya casi llevo lleva con tengo "
        "el la los las ultimo ultimos ultima ultimas dolor me duele empezo comenzo durante por "
        "menos".split()
    )
    | _EVERY
)  # "every day for 2 weeks": only before a unit


def parse_duration(text: str, lang: str = "en") -> Parsed:
    """How long the pain has lasted, an int number of days.

    Understood, in either language whatever `lang` says: "3 days", "3d", "2 wks", "2wks",
    "a week", "two weeks", "tres semanas", "a month" / "un mes" (30), "6 weeks" (42),
    "1.5 months" / "un mes y medio" / "a month and a half" (45), "half a month" (15),
    "2 años" / "a year" (365), "1 year 2 months" (sum), "yesterday" / "ayer" (1),
    "today" / "hoy" (0), "3 hours" (1).

    Readings chosen for safety, since a longer duration is the more concerning one:
    a range ("2-3 weeks", "2 or 3 weeks", "2 to 3 weeks", "between 2 and 3 weeks",
    "a week or two", "2 weeks to a month") reads as its UPPER bound; "more than 6 weeks",
    "over 6 weeks", "6+ weeks" and "6 weeks or more" read as one day more (43) so that they
    count as longer than 6 weeks; "almost" / "less than" / "about" read as the number given;
    fractions of a day round up ("1.5 weeks" = 11).

    Only DURATION_FILLERS may stand around it ("about 3 weeks", "it started 10 days ago").

    UNCLEAR: any other word ("3 weeks but only when I move"), a bare number with no unit
    ("3"), vague amounts ("a few days", "several weeks", "a while", "a long time"), dates and
    weekdays ("since Monday", "last week"), "every 2 weeks", negatives, durations that do not
    add up ("3 days 2 weeks") and a duration with "not sure" ("no sé, como 2 semanas").
    NOT_SURE for "not sure" / "no sé" alone.
    """
    tokens = _tokens(normalize(text))
    symbols = _duration_symbols(tokens, lang)
    if symbols is None:
        return UNCLEAR  # a word that is neither the duration nor a filler
    if any(kind == "NOT_SURE" for kind, _, _ in symbols):
        return NOT_SURE if all(kind == "NOT_SURE" for kind, _, _ in symbols) else UNCLEAR
    days = _duration_days(symbols)
    if days is None:
        return UNCLEAR
    rounded = math.ceil(days)
    return Parsed(True, rounded) if 0 <= rounded <= MAX_DURATION_DAYS else UNCLEAR


_Symbol = tuple[str, Fraction | None, bool]  # (kind, value, singular unit)


def _duration_symbols(tokens: Sequence[str], lang: object) -> list[_Symbol] | None:
    """Tokens -> NUM / ART / HALF / ANDHALF / UNIT / SPECIAL / RANGE / AND / BETWEEN / MORE /
    POSTMORE / NOT_SURE symbols; DURATION_FILLERS are dropped. None when the reply cannot be a
    duration: a word that is not in the lexicons or the fillers, a date, a sign out of place."""
    symbols: list[_Symbol] = []
    n = len(tokens)
    i = 0
    while i < n:
        token = tokens[i]
        nxt = tokens[i + 1] if i + 1 < n else ""
        found = _NOT_SURE_LEXICON.match(tokens, i)
        if found is not None:
            symbols.append(("NOT_SURE", None, False))
            i += found[0]
            continue
        found = _DURATION_LEXICON.match(tokens, i)
        if found is not None:
            length, (kind, value) = found
            if kind == "REJECT":
                return None
            if kind != "SKIP":
                symbols.append((kind, value, False))
            i += length
            continue
        number = _read_number(tokens, i, lang)
        if number is not None:
            if number.value is None:
                return None
            symbols.append(("NUM", number.value, False))
            i = number.end
            continue
        after_number = bool(symbols) and symbols[-1][0] == "NUM"
        next_is_number = bool(nxt) and _read_number(tokens, i + 1, lang) is not None
        if token == "-":
            if not (after_number and next_is_number):
                return None  # a minus sign
            symbols.append(("RANGE", None, False))
        elif token == "/":
            # "1/2 month", "1 1/2 months"; a date such as "3/15" is then left without a unit.
            if not (after_number and next_is_number):
                return None
            denominator = _read_number(tokens, i + 1, lang)
            if denominator is None or not denominator.value:
                return None
            _, numerator, _ = symbols.pop()
            fraction = numerator / denominator.value
            if symbols and symbols[-1][0] == "NUM":  # a mixed number: "1 1/2"
                fraction += symbols.pop()[1]
            symbols.append(("NUM", fraction, False))
            i = denominator.end
            continue
        elif token == "+":
            if after_number:
                symbols.append(("POSTMORE", None, False))
        elif token in _UNITS:
            if i > 0 and tokens[i - 1] in _EVERY:
                pass  # "every day for 2 weeks": not an amount
            else:
                symbols.append(("UNIT", _UNITS[token], token in _SINGULAR_UNITS))
        elif token in ("a", "an", "un", "una"):
            if token == "a" and after_number and next_is_number:
                symbols.append(("RANGE", None, False))  # Spanish "2 a 3 semanas"
            elif nxt in _UNITS or nxt in ("half", "medio", "media"):
                symbols.append(("ART", Fraction(1), False))
        elif token in ("half", "medio", "media"):
            symbols.append(("HALF", Fraction(1, 2), False))
        elif token in _RANGE_WORDS:
            symbols.append(("RANGE", None, False))
        elif token in ("and", "y"):
            symbols.append(("AND", None, False))
        elif token in ("between", "entre"):
            symbols.append(("BETWEEN", None, False))
        elif token in _EVERY:
            if nxt not in _UNITS:
                return None  # "every 2 weeks" is how often, not how long
        elif token not in DURATION_FILLERS:
            return None  # a word that is neither the duration nor a filler
        i += 1
    return symbols


def _duration_days(symbols: Sequence[_Symbol]) -> Fraction | None:
    """Adds up the amounts; see parse_duration for the readings. None when it does not add up."""
    total: Fraction | None = None
    last_unit: Fraction | None = None  # the unit of the previous amount (None for "yesterday")
    joiner: str | None = None  # "RANGE" or "AND" between the previous amount and this one
    between = more = False
    n = len(symbols)
    i = 0
    while i < n:
        kind, value, singular = symbols[i]
        if kind in ("RANGE", "AND"):
            joiner = joiner or kind
            i += 1
            continue
        if kind in ("BETWEEN", "MORE"):
            between, more = between or kind == "BETWEEN", more or kind == "MORE"
            i += 1
            continue
        if kind == "POSTMORE":
            if total is None:
                return None
            total += 1
            i += 1
            continue
        unit: Fraction | None
        if kind == "SPECIAL":
            days, unit = value, None
            i += 1
        else:
            # The amount: "2", "a", "half (a)", or nothing before "mes y medio".
            if kind == "NUM":
                amount = value
                i += 1
                if i < n and symbols[i][0] == "ANDHALF":
                    amount += Fraction(1, 2)
                    i += 1
            elif kind == "ART":
                amount = Fraction(1)
                i += 1
                if i < n and symbols[i][0] == "HALF":  # "a half month"
                    amount = Fraction(1, 2)
                    i += 1
            elif kind == "HALF":
                amount = Fraction(1, 2)
                i += 1
                if i < n and symbols[i][0] == "ART":
                    i += 1
            elif kind == "UNIT" and singular and i + 1 < n and symbols[i + 1][0] == "ANDHALF":
                amount = Fraction(1)
            else:
                return None  # a unit with no amount ("a few days", "weeks"), a stray word
            # A range inside the amount: "2-3 weeks", "2 or 3 weeks", "between 2 and 3 weeks".
            if (
                i + 1 < n
                and (symbols[i][0] == "RANGE" or (between and symbols[i][0] == "AND"))
                and symbols[i + 1][0] == "NUM"
            ):
                upper = symbols[i + 1][1]
                i += 2
                if i < n and symbols[i][0] == "ANDHALF":
                    upper += Fraction(1, 2)
                    i += 1
                amount = max(amount, upper)
            if i < n and symbols[i][0] == "POSTMORE" and i + 1 < n and symbols[i + 1][0] == "UNIT":
                more = True  # "6+ weeks"
                i += 1
            if i < n and symbols[i][0] == "UNIT":
                unit = symbols[i][1]
                i += 1
                if i < n and symbols[i][0] == "ANDHALF":
                    amount += Fraction(1, 2)
                    i += 1
            elif joiner == "RANGE" and total is not None and last_unit is not None:
                total = max(total, amount * last_unit + (1 if more else 0))  # "a week or two"
                joiner, between, more = None, False, False
                continue
            else:
                return None  # a number with no unit
            days = amount * unit
        if more:
            days += 1
        if total is None:
            total = days
        elif joiner == "RANGE":
            total = max(total, days)
        elif unit is not None and last_unit is not None and unit < last_unit:
            total += days  # "1 year 2 months", "3 weeks and 2 days"
        else:
            return None  # "3 days 2 weeks", "2 weeks yesterday": no single reading
        last_unit = unit
        joiner, between, more = None, False, False
    return total


# ---- follow-up status ------------------------------------------------------------------------

# The closed list of words that do not change a follow-up status: "it's much better now",
# "my back feels the same", "I'm getting worse", "ya está mucho mejor", "me siento igual".
STATUS_FILLERS = frozenset(
    "its it is im i am feel feeling feels pain my back the now today overall definitely really "
    "so way far much lot bit little slightly somewhat getting has have been got gotten thanks "
    "thank you ok okay a "
    "esta estoy me siento el dolor mi espalda ahora hoy ya mucho un poco bastante muy gracias "
    "va todo".split()
)
_STATUS_DIGITS = {str(i): status for i, status in enumerate(STATUSES, 1)}

_STATUS_LEXICON = _Lexicon(
    _entries("not_sure", _NOT_SURE_PHRASES)
    + _entries(
        "gone",
        "gone|all gone|its gone|it is gone|went away|has gone away|no pain|"
        "no more pain|pain free|painfree|resolved|healed|cured|recovered|"
        "se fue|se me fue|ya se fue|ya no|ya no duele|ya no me duele|no me duele|no duele|"
        "sin dolor|ningun dolor|nada de dolor|desaparecio|se quito|se me quito|curado|curada|"
        "sanado|sanada|recuperado|recuperada",
    )
    + _entries(
        "better",
        "better|improving|improved|improvement|a bit better|a little better|much better|"
        "a lot better|getting better|less pain|easing|easier|"
        "mejor|mejorando|mejoro|mejorado|mejorada|mejoria|menos dolor|un poco mejor|"
        "mucho mejor",
    )
    + _entries(
        "same",
        "same|the same|no change|no changes|unchanged|no different|not changed|"
        "hasnt changed|has not changed|nothing changed|not any different|about the same|"
        "still the same|igual|sigue igual|lo mismo|mismo|misma|sin cambios|sin cambio|"
        "no ha cambiado|nada ha cambiado",
    )
    + _entries(
        "worse",
        "worse|worsening|worsened|getting worse|more pain|increasing|increased pain|"
        "peor|empeorando|empeorado|empeoro|mas dolor",
    )
    + _entries(
        "hedge",
        "maybe|perhaps|possibly|probably|sometimes|on and off|off and on|comes and goes|"
        "tal vez|talvez|quizas|quiza|a lo mejor|puede ser|a veces",
    )
    + _entries(
        "negation",
        "not|no|never|dont|doesnt|didnt|isnt|wasnt|arent|hasnt|havent|aint|nunca|ni|tampoco",
    )
    + [(word, "filler") for word in sorted(STATUS_FILLERS)]
    + _entries("filler", "i feel|me siento|the pain|el dolor|thank you|por favor")
)


def parse_status(text: str, lang: str = "en") -> Parsed:
    """Follow-up status: "gone" | "better" | "same" | "worse" (STATUSES), or menu digit 1..4.

    Synonyms in both languages ("all gone", "no pain", "se fue", "ya no"; "improving",
    "mejor"; "no change", "igual"; "more pain", "peor"), with only STATUS_FILLERS around
    them ("it's much better now"). UNCLEAR when any other word is in the reply ("better but
    still sore"), two statuses are named ("better then worse", "1 worse"), a status is negated
    ("not better", "no peor") or hedged ("maybe better"). NOT_SURE for "not sure" / "no sé"
    alone.
    """
    tokens = _tokens(normalize(text))
    if len(tokens) == 1 and tokens[0] in _STATUS_DIGITS:
        return Parsed(True, _STATUS_DIGITS[tokens[0]])
    if " ".join(tokens) in _WHOLE_NOT_SURE:
        return NOT_SURE
    # A menu digit beside the words it stands for ("2 better", "4. peor") names that status.
    labels = {
        _STATUS_DIGITS.get(words, label) if label is None else label
        for label, words in _STATUS_LEXICON.scan(tokens)
    }
    if None in labels:
        return UNCLEAR  # a word that is neither a status nor a filler ("better but still sore")
    statuses = labels & set(STATUSES)
    if "not_sure" in labels:
        return NOT_SURE if not statuses else UNCLEAR
    hedged = any(_STATUS_LEXICON.occurs(tokens, label) for label in ("hedge", "not_sure"))
    if len(statuses) != 1 or hedged or "negation" in labels:
        return UNCLEAR
    return Parsed(True, statuses.pop())


# ---- menu choice -----------------------------------------------------------------------------

_CHOICE_PREFIX = frozenset("option opcion number numero choice".split())
# The closed list of words that do not change a menu choice: "sms please", "by email",
# "I'd prefer option 2", "prefiero el 2 por favor".
CHOICE_FILLERS = (
    frozenset(
        "please pls by via through the a an i id prefer want would like ok okay thanks thank you "
        "my is its "
        "por favor prefiero quiero el la un una mi es me gracias".split()
    )
    | _CHOICE_PREFIX
)
_CHOICE_NEGATION = frozenset("not dont never nunca no".split())


def parse_choice(text: str, options: Sequence[str], lang: str = "en") -> Parsed:
    """One of `options`: its menu digit 1..n ("2", "option 2", "#2") or its own words.

    The value is the option exactly as given, with only CHOICE_FILLERS around it. UNCLEAR
    when any other word is in the reply, no option or more than one is named, a digit is out
    of range, or the option is negated ("not email").
    Options are matched as whole words, longest first ("a bit better" before "better").
    """
    tokens = _tokens(normalize(text))
    options = [option for option in (options or ()) if isinstance(option, str)]
    if not tokens or not options:
        return UNCLEAR
    core = [token for token in tokens if token not in CHOICE_FILLERS]
    if len(core) == 1 and core[0].isdigit():
        index = int(core[0]) if len(core[0]) <= _MAX_NUMBER_CHARS else 0
        return Parsed(True, options[index - 1]) if 1 <= index <= len(options) else UNCLEAR
    lexicon = _Lexicon(
        [(option, index) for index, option in enumerate(options)]
        + _entries("not_sure", _NOT_SURE_PHRASES)
    )
    chosen: set[int] = set()
    not_sure = False
    option_words = {word for option in options for word in _tokens(normalize(option))}
    previous = ""
    for label, words in lexicon.scan(tokens):
        if label == "not_sure":
            not_sure = True
        elif label is not None:
            if previous in _CHOICE_NEGATION and previous not in option_words:
                return UNCLEAR
            chosen.add(label)
        elif words not in CHOICE_FILLERS:
            return UNCLEAR  # a word that is neither an option nor a filler ("voice", "not")
        previous = words
    if not_sure:
        return NOT_SURE if not chosen else UNCLEAR
    if len(chosen) == 1:
        return Parsed(True, options[chosen.pop()])
    return UNCLEAR


# ---- dispatch --------------------------------------------------------------------------------

KINDS: dict[str, Callable[[str, str], Parsed]] = {
    "yes_no": parse_yes_no,
    "pain_score": parse_pain_score,
    "duration": parse_duration,
    "age": parse_age,
    "status": parse_status,
}


# The closed lists of words that may stand beside an answer without changing it, by kind
# (CLINICAL.md §6); "yes_no" also allows NO_ONLY_FILLERS beside a no.
FILLERS: dict[str, frozenset[str]] = {
    "yes_no": YES_NO_FILLERS,
    "pain_score": PAIN_FILLERS,
    "duration": DURATION_FILLERS,
    "age": AGE_FILLERS,
    "status": STATUS_FILLERS,
    "choice": CHOICE_FILLERS,
}


def parse(kind: str, text: str, lang: str = "en", *, options: Sequence[str] = ()) -> Parsed:
    """Parses `text` as `kind` (a key of KINDS, or "choice" with `options`).

    Raises ValueError for an unknown kind: that is a flow-definition bug, not a reply.
    """
    if kind == "choice":
        return parse_choice(text, options, lang)
    try:
        parser = KINDS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown parse kind {kind!r}") from None
    return parser(text, lang)
