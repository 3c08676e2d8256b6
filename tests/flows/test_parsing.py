"""Tables of patient-like replies (English and Spanish) and properties of flows.parsing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows import parsing
from flows.parsing import (
    NOT_SURE,
    STATUSES,
    UNCLEAR,
    Parsed,
    normalize,
    parse,
    parse_age,
    parse_choice,
    parse_duration,
    parse_pain_score,
    parse_status,
    parse_yes_no,
)

NS = "not sure"  # expected marker: NOT_SURE
PROPERTY = settings(max_examples=150, deadline=None)


def outcome(parsed: Parsed) -> object:
    """The value, None for UNCLEAR, NS for NOT_SURE: one comparable thing per reply."""
    assert isinstance(parsed, Parsed)
    if parsed.ok:
        assert not parsed.not_sure
        return parsed.value
    assert parsed.value is None
    return NS if parsed.not_sure else None


# ---- normalize -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sí", "si"),
        ("SÍ.", "si"),
        ("  YES!!! ", "yes"),
        ("No sé", "no se"),
        ("¿Qué?", "que"),
        ("don't know", "dont know"),
        ("don’t KNOW", "dont know"),
        ("I'm 45", "im 45"),
        ("7/10", "7/10"),
        ("7 / 10", "7/10"),
        ("1.5 months", "1.5 months"),
        ("1,5 meses", "1.5 meses"),
        ("2,3 semanas", "2 3 semanas"),
        ("1,000", "1 000"),
        ("YES.", "yes"),
        ("2 - 3 weeks", "2-3 weeks"),
        ("2–3 weeks", "2-3 weeks"),
        ("-1", "-1"),
        ("6+ weeks", "6+ weeks"),
        ("OPT-OUT", "opt out"),
        ("Años", "anos"),
        ("español", "espanol"),
        ("a\tb\n\nc", "a b c"),
        ("1½ months", "1.5 months"),
        ("½ mes", "0.5 mes"),
        ("yes/no", "yes/no"),
        ("/", ""),
        ("...", ""),
        ("", ""),
        ("👍", ""),
        ("ＹＥＳ", "yes"),  # full-width letters
        ("ye\u200bs", "yes"),  # a zero-width space inside a word
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_normalize_non_str_is_empty() -> None:
    assert normalize(None) == ""  # type: ignore[arg-type]
    assert normalize(7) == ""  # type: ignore[arg-type]


@PROPERTY
@given(st.text(max_size=300))
def test_normalize_is_idempotent_and_tidy(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.strip()
    assert "  " not in once
    assert once == once.casefold()


# ---- yes / no --------------------------------------------------------------------------------

YES = [
    "yes", "Yes", "YES", "y", "Y", "yeah", "yea", "ya", "yep", "yup", "yes please", "correct",
    "true", "true?", "1", "1.", "Yes!!!", "YES.", " yes ", "yes I did", "yes, I have",
    "yes it does", "yes yes", "yesss", "Yeah.", "yep!", "I do", "I did",
    "of course", "absolutely", "definitely", "yes please", "yes sir", "well yes", "yes, thanks",
    "yes really", "that's right", "YES I DO!!",
    "si", "sí", "Sí", "SI", "sí, claro", "claro", "claro que sí", "por supuesto", "así es",
    "siii", "correcto", "sí tengo", "sí, lo tengo", "sí señora", "sí, por favor", "sí es",
]  # fmt: skip
NO = [
    "no", "No", "NO", "n", "N", "nope", "nah", "naw", "not at all", "never", "2", "no.",
    "No!!", " no ", "no, never", "No never", "no I have not", "no, I haven't", "nope not at all",
    "no I dont", "I don't", "I do not", "it doesn't", "I'm not",
    "nooo", "absolutely not", "of course not", "not anymore", "no way", "false",
    "nope none", "no nothing", "no thanks", "no thank you", "no it is not", "no, I didn't",
    "no es", "no, nunca", "nunca", "jamás", "para nada", "no tengo", "no nada", "no hay",
    "claro que no", "ya no", "no señor", "No, gracias", "de ninguna manera", "no, no tengo",
]  # fmt: skip
YES_NO_UNCLEAR = [
    "", " ", "?", "...", "ok", "okay", "k", "sure?", "hmm", "what?", "huh", "👍", "🙂",
    "nothing", "none", "nada", "yesterday", "yesteryear", "nobody", "noon", "nose bleed",
    "sino", "sin", "siempre", "nota", "Nora", "snow", "eyes",
    "yes and no", "yes no", "no yes", "sí y no", "si no", "yeah nah", "yes, no fever",
    "maybe", "Maybe", "maybe yes", "yes maybe", "kind of", "kinda", "sort of", "sometimes",
    "yes sometimes", "a little", "yes a little", "a bit", "I think so", "I don't think so",
    "I think", "not really", "no not really", "probably", "probably not", "possibly",
    "not always", "on and off", "it comes and goes", "more or less", "so so",
    "yes but only at night", "no but it used to", "yes, if I lie down", "almost never",
    "tal vez", "talvez", "quizás", "quizas", "a veces", "sí, a veces", "más o menos",
    "un poco", "creo que sí", "creo que no", "puede ser", "no mucho", "no siempre",
    "sí pero poco", "a lo mejor",
    "it never stops", "the pain never goes away", "no, it never stops", "yes it doesn't stop",
    "yes, I can't sleep", "no me deja dormir", "no se me quita", "no relief",
    # any word that is not the answer or a filler (CLINICAL.md §6)
    "Yes, at night", "yes, 2 weeks ago", "Sí, me despierta", "no fever", "no pain at night",
    "no, no tengo fiebre", "yes but only sometimes", "no I'm not sure", "yes I think",
    "yes it hurts", "no, it's fine", "yes none", "no I do", "no it is", "hmm yes", "um no",
    "2 days", "3", "12", "0", "7/10", "1 2", "yes 1 no",
    "of course not really", "claro que no mucho", "absolutely not always", "of course not sure",
]  # fmt: skip
YES_NO_NOT_SURE = [
    "not sure", "Not sure.", "I'm not sure", "unsure", "don't know", "dont know", "I don't know",
    "do not know", "idk", "IDK", "dunno", "no idea", "no clue", "can't remember",
    "no sé", "no se", "No sé.", "no lo sé", "no lo se", "no estoy seguro", "no estoy segura",
    "ni idea", "no tengo idea", "no me acuerdo", "quién sabe", "nose",
    "maybe, not sure", "idk maybe",
]  # fmt: skip
YES_NO_MIXED_NOT_SURE = ["no, not sure", "yes, not sure", "no, no sé", "sí, no sé", "yes idk"]


@pytest.mark.parametrize("text", YES)
def test_yes(text: str) -> None:
    assert parse_yes_no(text) == Parsed(True, True)


@pytest.mark.parametrize("text", NO)
def test_no(text: str) -> None:
    assert parse_yes_no(text) == Parsed(True, False)


@pytest.mark.parametrize("text", YES_NO_UNCLEAR)
def test_yes_no_unclear(text: str) -> None:
    assert parse_yes_no(text) == UNCLEAR


@pytest.mark.parametrize("text", YES_NO_NOT_SURE)
def test_yes_no_not_sure(text: str) -> None:
    assert parse_yes_no(text) == NOT_SURE


@pytest.mark.parametrize("text", YES_NO_MIXED_NOT_SURE)
def test_not_sure_with_an_answer_is_never_a_value(text: str) -> None:
    assert not parse_yes_no(text).ok


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize(
    ("text", "expected"),
    [("sí", True), ("yes", True), ("no", False), ("nope", False), ("ya", True), ("ya no", False)],
)
def test_yes_no_accepts_both_languages(text: str, lang: str, expected: bool) -> None:
    assert parse_yes_no(text, lang) == Parsed(True, expected)


def test_spanish_ya_inside_a_sentence_means_already_not_yes() -> None:
    assert parse_yes_no("ya lo tuve", "es") == UNCLEAR
    assert parse_yes_no("ya I did", "en") == Parsed(True, True)


# ---- pain score ------------------------------------------------------------------------------

PAIN = [
    ("7", 7), ("7/10", 7), ("7 / 10", 7), ("7 out of 10", 7), ("7 out of ten", 7),
    ("seven", 7), ("Seven.", 7), ("siete", 7), ("10", 10), ("10/10", 10), ("ten", 10),
    ("diez", 10), ("0", 0), ("0/10", 0), ("zero", 0), ("cero", 0), ("a 7", 7), ("pain is 7", 7),
    ("it's a 7", 7), ("about 7", 7), ("I'd say 7", 7), ("7ish", 7), ("7 today", 7),
    ("7 on a scale of 1 to 10", 7), ("7 (0-10)", 7), ("un 7", 7), ("es un 7", 7),
    ("7 de 10", 7), ("siete de diez", 7), ("7 sobre 10", 7), ("one", 1), ("uno", 1),
    ("3", 3), ("three", 3), ("tres", 3), ("no pain", 0), ("none", 0), ("sin dolor", 0),
    ("7, 7", 7), ("Pain: 8!!", 8),
    ("11", None), ("-1", None), ("70", None), ("100", None), ("eleven", None), ("once", None),
    # a range reads as its higher, safer end (CLINICAL.md §6)
    ("7 or 8", 8), ("6-7", 7), ("6 - 7", 7), ("6 to 7", 7), ("6 or 7", 7), ("7-6", 7),
    ("between 6 and 8", 8), ("6-7/10", 7), ("6 o 7", 7), ("entre 6 y 7", 7), ("seis a siete", 7),
    ("7 maybe 8", None), ("7 8", None), ("7, 8", None),
    ("7.5", None), ("7,5", None), ("7.0", None), ("7/8", None), ("over 7", None),
    ("more than 5", None), ("7+", None), ("almost 10", None), ("bad", None), ("very bad", None),
    ("", None), ("worst ever", None), ("8 for 10 days", None), ("99999999999999999999", None),
    # any word that is not the score or a filler
    ("7 but only when I move", None), ("7 at night", None), ("7 when I sit", None),
    ("it's a 7 right now", 7), ("more or less 7", 7), ("mi dolor es un 7", 7),
    ("not sure", NS), ("no sé", NS), ("idk", NS), ("no sé, 7", None), ("7, not sure", None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), PAIN)
def test_pain_score(text: str, expected: object) -> None:
    assert outcome(parse_pain_score(text)) == expected


def test_once_is_eleven_in_spanish_replies() -> None:
    assert parse_pain_score("once", "es") == UNCLEAR  # 11: out of range, but read as a number
    assert parse_duration("once días", "es") == Parsed(True, 11)


@pytest.mark.parametrize("score", range(0, 11))
def test_every_score_in_digits_and_words(score: int) -> None:
    english = "zero one two three four five six seven eight nine ten".split()[score]
    spanish = "cero uno dos tres cuatro cinco seis siete ocho nueve diez".split()[score]
    for text in (str(score), f"{score}/10", english, spanish, f"{score} out of 10"):
        assert parse_pain_score(text) == Parsed(True, score), text


# ---- duration --------------------------------------------------------------------------------

DURATION = [
    ("3 days", 3), ("3 Days.", 3), ("3d", 3), ("3 d", 3), ("1 day", 1), ("a day", 1),
    ("2 wks", 14), ("2wks", 14), ("2 wk", 14), ("2w", 14), ("2 weeks", 14), ("two weeks", 14),
    ("a week", 7), ("one week", 7), ("1 week", 7), ("a month", 30), ("1 month", 30),
    ("3 mo", 90), ("3 mos", 90), ("6 weeks", 42), ("1.5 months", 45), ("1,5 meses", 45),
    ("1 1/2 months", 45), ("1½ months", 45), ("a month and a half", 45),
    ("one and a half months", 45), ("half a month", 15), ("a half month", 15),
    ("1.5 weeks", 11), ("a week and a half", 11), ("2 and a half weeks", 18),
    ("a year", 365), ("1 yr", 365), ("2 years", 730), ("a fortnight", 14), ("3 hours", 1),
    ("since yesterday", 1), ("yesterday", 1), ("last night", 1), ("today", 0),
    ("since this morning", 0), ("about 2 weeks", 14), ("for about 3 weeks now", 21),
    ("2 weeks ago", 14), ("it started 10 days ago", 10), ("every day for 2 weeks", 14),
    ("twenty one days", 21), ("forty-five days", 45),
    # ranges read as the upper bound
    ("2-3 weeks", 21), ("2 - 3 weeks", 21), ("2–3 weeks", 21), ("2 or 3 weeks", 21),
    ("2 to 3 weeks", 21), ("between 2 and 3 weeks", 21), ("3-2 weeks", 21), ("a week or two", 14),
    ("one or two weeks", 14), ("a day or two", 2), ("2 weeks to a month", 30),
    ("yesterday or today", 1), ("a month or so", 30),
    # bounds: more than reads one day more, so "over 6 weeks" counts as longer than 6 weeks
    ("more than 6 weeks", 43), ("over 6 weeks", 43), ("6+ weeks", 43), ("6 weeks or more", 43),
    ("over a month", 31), ("at least 2 weeks", 14), ("almost 2 months", 60),
    ("less than a week", 7), ("up to 3 weeks", 21),
    # compounds
    ("1 year 2 months", 425), ("3 weeks and 2 days", 23), ("a month and a week", 37),
    # Spanish
    ("tres semanas", 21), ("3 semanas", 21), ("una semana", 7), ("un mes", 30), ("2 meses", 60),
    ("un mes y medio", 45), ("mes y medio", 45), ("semana y media", 11), ("medio mes", 15),
    ("2 años", 730), ("un año", 365), ("ayer", 1), ("desde ayer", 1), ("anoche", 1),
    ("anteayer", 2), ("hoy", 0), ("desde hoy", 0), ("hace dos semanas", 14),
    ("desde hace un mes", 30), ("como 10 días", 10), ("unos 10 dias", 10), ("5 días", 5),
    ("2 a 3 semanas", 21), ("2 o 3 semanas", 21), ("entre 2 y 3 semanas", 21),
    ("más de 6 semanas", 43), ("6 semanas o más", 43), ("treinta y un días", 31),
    ("quince días", 15), ("una quincena", 15), ("media hora", 1),
    # unclear
    ("3", None), ("14", None), ("3 or 4", None), ("since monday", None), ("since Monday", None),
    ("desde el lunes", None), ("since march", None), ("desde el fin de semana", None),
    ("since the weekend", None), ("last week", None), ("la semana pasada", None),
    ("a few days", None), ("few days", None), ("several weeks", None), ("a couple of weeks", None),
    ("unos días", None), ("varias semanas", None), ("days", None), ("weeks", None),
    ("a while", None), ("long time", None), ("a long time", None), ("mucho tiempo", None),
    ("forever", None), ("ages", None), ("since 3/15", None), ("3 days 2 weeks", None),
    ("2 weeks 3 weeks", None), ("2,3 semanas", None), ("2,5 semanas", 18), ("3 days, maybe 4", None), ("2 weeks no 3 weeks", None),
    ("-2 weeks", None), ("999999999999 days", None), ("500 years", None), ("", None),
    ("yes", None), ("a", None),
    ("3 weeks but only when I move", None), ("2 weeks, worse at night", None), ("every 2 weeks", None),
    ("llevo un mes con dolor", 30), ("más o menos 2 semanas", 14), ("the last 2 weeks", 14),
    ("not sure", NS), ("no sé", NS), ("I don't know", NS), ("no sé, como 2 semanas", None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), DURATION)
def test_duration(text: str, expected: object) -> None:
    assert outcome(parse_duration(text)) == expected


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize(("text", "expected"), [("2 weeks", 14), ("2 semanas", 14), ("ayer", 1)])
def test_duration_accepts_both_languages_whatever_lang_says(
    text: str, lang: str, expected: int
) -> None:
    assert parse_duration(text, lang) == Parsed(True, expected)


@PROPERTY
@given(st.integers(0, 1000), st.sampled_from([("days", 1), ("weeks", 7), ("meses", 30)]))
def test_duration_of_a_whole_number_of_units(amount: int, unit: tuple[str, int]) -> None:
    word, days = unit
    assert parse_duration(f"{amount} {word}") == Parsed(True, amount * days)


@PROPERTY
@given(st.integers(0, 300), st.integers(0, 300), st.sampled_from(["-", " or ", " to ", " a "]))
def test_duration_range_is_its_upper_bound(low: int, high: int, joiner: str) -> None:
    assert parse_duration(f"{low}{joiner}{high} weeks") == Parsed(True, max(low, high) * 7)


# ---- age -------------------------------------------------------------------------------------

AGE = [
    ("45", 45), ("45 years", 45), ("45 yrs old", 45), ("45 years old", 45), ("I'm 45", 45),
    ("im 45", 45), ("45yo", 45), ("45 y/o", 45), ("age 45", 45), ("forty five", 45),
    ("forty-five", 45), ("Forty Five.", 45), ("sixty", 60), ("0", 0), ("120", 120), ("18", 18),
    ("tengo 45 años", 45), ("45 años", 45), ("cuarenta y cinco", 45), ("cincuenta", 50),
    ("setenta y dos años", 72), ("cien", 100), ("one hundred and five", 105), ("about 45", 45),
    ("45 45", 45),
    ("121", None), ("130", None), ("1970", None), ("born in 1970", None), ("-5", None),
    ("45 or 46", 46), ("45-50", 50), ("between 40 and 50", 50),  # a range: its older end
    ("45.5", None), ("I'm 45, she's 50", None), ("45 and my wife 50", None),
    ("40s", None), ("in my 40's", None), ("forties", None), ("40 something", None),
    ("cuarenta y tantos", None), ("over 50", None), ("under 50", None), ("almost 50", None),
    ("50+", None), ("más de 50", None), ("6 months", None), ("3 weeks", None),
    ("1/2/1970", None), ("old", None), ("", None), ("99999999999", None),
    ("not sure", NS), ("no sé", NS), ("45, not sure", None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), AGE)
def test_age(text: str, expected: object) -> None:
    assert outcome(parse_age(text)) == expected


@PROPERTY
@given(st.integers(0, 120))
def test_every_age_in_digits(age: int) -> None:
    assert parse_age(str(age)) == Parsed(True, age)
    assert parse_age(f"I am {age} years old") == Parsed(True, age)


# ---- status ----------------------------------------------------------------------------------

STATUS = [
    ("gone", "gone"), ("Gone!", "gone"), ("all gone", "gone"), ("it's gone", "gone"),
    ("no pain", "gone"), ("no more pain", "gone"), ("resolved", "gone"), ("healed", "gone"),
    ("it went away", "gone"), ("se fue", "gone"), ("ya se fue", "gone"), ("ya no", "gone"),
    ("ya no me duele", "gone"), ("desapareció", "gone"), ("se quitó", "gone"),
    ("se me quitó", "gone"), ("sin dolor", "gone"), ("1", "gone"),
    ("better", "better"), ("Better.", "better"), ("improving", "better"),
    ("improved", "better"), ("a bit better", "better"), ("a little better", "better"),
    ("much better", "better"), ("getting better", "better"), ("it's much better now", "better"),
    ("2 better", "better"), ("ya está mucho mejor", "better"), ("me siento igual", "same"),
    ("better but still sore", None), ("worse when I sit", None), ("1 worse", None),
    ("mejor", "better"), ("un poco mejor", "better"), ("mejorando", "better"),
    ("menos dolor", "better"), ("2", "better"),
    ("same", "same"), ("the same", "same"), ("about the same", "same"), ("no change", "same"),
    ("unchanged", "same"), ("hasn't changed", "same"), ("igual", "same"),
    ("sigue igual", "same"), ("lo mismo", "same"), ("sin cambios", "same"), ("3", "same"),
    ("worse", "worse"), ("WORSE", "worse"), ("worsening", "worse"), ("getting worse", "worse"),
    ("more pain", "worse"), ("peor", "worse"), ("está peor", "worse"), ("más dolor", "worse"),
    ("4", "worse"),
    ("better then worse", None), ("better and worse", None), ("same or worse", None),
    ("not better", None), ("no better", None), ("not worse", None), ("not gone", None),
    ("never went away", None), ("no mejor", None), ("no está mejor", None), ("no peor", None),
    ("maybe better", None), ("a lo mejor", None), ("tal vez mejor", None),
    ("sometimes better", None), ("5", None), ("0", None), ("12", None), ("fine", None),
    ("ok", None), ("", None), ("yes", None), ("no", None), ("gone and better", None),
    ("not sure", NS), ("no sé", NS), ("idk", NS), ("no sé, mejor", None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), STATUS)
def test_status(text: str, expected: object) -> None:
    assert outcome(parse_status(text)) == expected


# ---- choice ----------------------------------------------------------------------------------

OPTIONS = ["sms", "voice call", "email"]
CHOICE = [
    ("1", "sms"), ("2", "voice call"), ("3", "email"), ("option 2", "voice call"),
    ("#3", "email"), ("SMS", "sms"), ("sms please", "sms"), ("Voice call.", "voice call"),
    ("by email", "email"), ("4", None), ("0", None), ("voice", None), ("sms or email", None),
    ("sms but not on weekends", None), ("2 please", "voice call"),
    ("not email", None), ("", None), ("yes", None), ("no sé", NS),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), CHOICE)
def test_choice(text: str, expected: object) -> None:
    assert outcome(parse_choice(text, OPTIONS)) == expected


def test_choice_prefers_the_longest_option() -> None:
    options = ["better", "a bit better", "worse"]
    assert parse_choice("a bit better", options) == Parsed(True, "a bit better")
    assert parse_choice("better", options) == Parsed(True, "better")


def test_choice_with_no_options_is_unclear() -> None:
    assert parse_choice("1", []) == UNCLEAR


# ---- dispatch --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("yes_no", "sí", True),
        ("pain_score", "7/10", 7),
        ("duration", "2 wks", 14),
        ("age", "45", 45),
        ("status", "peor", "worse"),
    ],
)
def test_parse_dispatches_by_kind(kind: str, text: str, expected: object) -> None:
    assert parse(kind, text, "es") == Parsed(True, expected)


def test_parse_choice_kind_takes_options() -> None:
    assert parse("choice", "2", options=("a", "b")) == Parsed(True, "b")


@pytest.mark.parametrize("kind", ["", "bool", "yes-no", "YES_NO", None, "nonsense"])
def test_unknown_kind_is_a_value_error(kind: object) -> None:
    with pytest.raises(ValueError, match="unknown parse kind"):
        parse(kind, "yes")  # type: ignore[arg-type]


def test_kinds_match_the_flow_validator() -> None:
    from flows.validator import PARSE_KINDS

    assert set(parsing.KINDS) == set(PARSE_KINDS)


# ---- robustness: never raises, values always of the right type and range ---------------------

STRANGE = [
    "", " ", "\x00", "\x00yes", "\r\n", "\t", "\u200b", "\u202eyes", "🙂", "👍🏽", "🛑 STOP",
    "y" * 1600, "yes " * 400, "no " * 400, "7" * 1600, "9" * 5000, "1." * 800, "-" * 1600,
    "/" * 1600, "1/" * 800, "½" * 100, "ñ" * 1600, "привет", "да", "нет", "你好", "是", "不",
    "مرحبا", "١٢", "٧", "𝟕", "７", "Ⅶ", "ß", "İ", "ﬁ", "\ud800", "a\u0301" * 500,
    "1e10", "NaN", "inf", "0x10", "1_000", "7/0", "0/0", "1/0 month", "½/½", "1.2.3 days",
]  # fmt: skip


def assert_well_formed(kind: str, parsed: Parsed) -> None:
    assert isinstance(parsed, Parsed)
    assert isinstance(parsed.ok, bool) and isinstance(parsed.not_sure, bool)
    if not parsed.ok:
        assert parsed.value is None
        return
    assert not parsed.not_sure
    value = parsed.value
    if kind == "yes_no":
        assert isinstance(value, bool)
    elif kind == "status":
        assert value in STATUSES
    else:
        assert isinstance(value, int) and not isinstance(value, bool)
        high = {"pain_score": 10, "age": 120, "duration": parsing.MAX_DURATION_DAYS}[kind]
        assert 0 <= value <= high


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize("kind", sorted(parsing.KINDS))
@pytest.mark.parametrize("text", STRANGE)
def test_strange_input_never_raises(kind: str, text: str, lang: str) -> None:
    assert_well_formed(kind, parse(kind, text, lang))


def test_non_str_input_is_unclear() -> None:
    for kind in parsing.KINDS:
        assert parse(kind, None) == UNCLEAR  # type: ignore[arg-type]


def test_over_long_digit_runs_are_not_numbers() -> None:
    assert parse_pain_score("9" * 5000) == UNCLEAR
    assert parse_age("4" * 5000) == UNCLEAR
    assert parse_duration("9" * 5000 + " days") == UNCLEAR


WORDS = sorted(
    {w for text in YES + NO + YES_NO_UNCLEAR + YES_NO_NOT_SURE for w in text.split()}
    | {text for text, _ in PAIN + DURATION + AGE + STATUS}
    | set("- / + . , ! ? ½ 0 1 2 3 7 10 11 1.5 weeks days meses años a y and or de".split())
)
word_salad = st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join)
any_text = st.one_of(st.text(max_size=200), st.text(max_size=1600), word_salad)


@PROPERTY
@given(any_text, st.sampled_from(sorted(parsing.KINDS)), st.sampled_from(["en", "es", "fr", ""]))
def test_every_kind_returns_a_well_formed_parsed(text: str, kind: str, lang: str) -> None:
    assert_well_formed(kind, parse(kind, text, lang))


@PROPERTY
@given(any_text, st.lists(st.text(max_size=20), max_size=5))
def test_choice_returns_one_of_the_options(text: str, options: list[str]) -> None:
    parsed = parse_choice(text, options)
    assert isinstance(parsed, Parsed)
    if parsed.ok:
        assert parsed.value in options


# ---- yes / no properties ---------------------------------------------------------------------

PUNCTUATION = ' \t\n!?.,;:¡¿"()*~…'
ANSWERS = [text for text in YES + NO if text.strip()]


def recase(text: str, flips: list[bool]) -> str:
    flips = (flips + [False] * len(text))[: len(text)]
    return "".join(
        (ch.upper() if flip else ch.lower()) for ch, flip in zip(text, flips, strict=True)
    )


@PROPERTY
@given(
    st.sampled_from(ANSWERS + YES_NO_UNCLEAR + YES_NO_NOT_SURE),
    st.lists(st.booleans(), max_size=40),
    st.text(alphabet=PUNCTUATION, max_size=4),
    st.text(alphabet=PUNCTUATION, max_size=4),
    st.sampled_from(["en", "es"]),
)
def test_yes_no_is_stable_under_case_punctuation_and_whitespace(
    text: str, flips: list[bool], before: str, after: str, lang: str
) -> None:
    assert parse_yes_no(before + recase(text, flips) + after, lang) == parse_yes_no(text, lang)


HEDGES = [
    "maybe", "kind of", "sort of", "sometimes", "a little", "I think so", "not really",
    "probably", "possibly", "I guess", "more or less", "not sure", "idk", "I don't know",
    "tal vez", "quizás", "a veces", "más o menos", "un poco", "creo que", "no sé", "puede ser",
    "not always", "a bit", "but", "pero", "on and off",
]  # fmt: skip


@PROPERTY
@given(
    st.sampled_from(ANSWERS),
    st.sampled_from(HEDGES),
    st.sampled_from([" ", ", ", "... ", " - ", "! "]),
    st.booleans(),
    st.sampled_from(["en", "es"]),
)
def test_a_hedge_never_yields_a_yes_or_no(
    answer: str, hedge: str, separator: str, hedge_first: bool, lang: str
) -> None:
    text = f"{hedge}{separator}{answer}" if hedge_first else f"{answer}{separator}{hedge}"
    assert not parse_yes_no(text, lang).ok


# "y", "n", "1", "2", "I do", ... are answers only as the whole message
SENTENCE_ANSWERS = [text for text in ANSWERS if normalize(text) not in parsing._WHOLE_YES_NO]


@PROPERTY
@given(
    st.sampled_from(SENTENCE_ANSWERS), st.sampled_from(["nothing", "yesterday", "nobody", "sino"])
)
def test_look_alike_words_are_not_answers(answer: str, word: str) -> None:
    # whole words only: a look-alike word alone is no answer, and beside an answer it makes it
    # unclear ("yes yesterday") or, for "nothing" beside a no, changes nothing ("no nothing")
    assert parse_yes_no(word) == UNCLEAR
    assert parse_yes_no(f"{answer} {word}") in (UNCLEAR, parse_yes_no(answer))


# ---- purity ----------------------------------------------------------------------------------

PURE_MODULES = {
    "__future__",
    "collections",
    "dataclasses",
    "fractions",
    "functools",  # lru_cache: normalize memoizes a pure function
    "math",
    "re",
    "typing",
    "unicodedata",
    "flows",
}


@pytest.mark.parametrize("module", ["parsing.py", "keywords.py", "reading.py"])
def test_module_is_pure(module: str) -> None:
    tree = ast.parse((Path(parsing.__file__).parent / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= PURE_MODULES, imported - PURE_MODULES
