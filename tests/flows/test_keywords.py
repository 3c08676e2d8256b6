"""Control words (CLINICAL.md §7): opt-out, opt-in, help, restart and language switches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.keywords import (
    HELP_WORDS,
    LANG_EN_WORDS,
    LANG_ES_WORDS,
    OPT_OUT_WORDS,
    RESTART_WORDS,
    START_WORDS,
    TWILIO_OPT_OUT_WORDS,
    classify,
    is_start_keyword,
    is_twilio_opt_out,
)

CLASSES = {"stop", "start", "help", "restart", "lang_es", "lang_en", None}
PROPERTY = settings(max_examples=200, deadline=None)

STOP = [
    # the words of CLINICAL.md §7, as typed
    "STOP", "stop", "Stop", "Stop.", "stop!!", " STOP ", "STOP\n", "¡STOP!", "StOp", "stop stop",
    "STOPALL", "stop all", "UNSUBSCRIBE", "Unsubscribe", "CANCEL", "cancel", "END", "end.",
    "QUIT", "quit!", "REVOKE", "OPTOUT", "OPT OUT", "opt-out", "Opt Out", "ALTO", "alto",
    "PARAR", "parar", "BASTA", "¡Basta!", "basta ya", "CANCELAR", "STOP 🛑", "STOP please",
    "please stop", "Stop, thank you", "stop now",
    # plain requests (revocation "in any reasonable manner")
    "please stop texting me", "Stop texting me", "stop messaging me", "stop sending me messages",
    "stop sending me these", "Please stop sending", "stop the texts", "stop these messages",
    "stop all messages", "stop contacting me", "stop calling me", "quit texting me",
    "don't text me anymore", "Don't text me", "do not contact me", "do not text me again",
    "never message me again", "don't send me any more messages", "dont send me texts",
    "I don't want these texts", "I do not want any more messages", "I no longer want texts",
    "I don't want to be contacted", "no more texts", "No more messages please",
    "no more text messages", "unsubscribe me", "Please unsubscribe me", "remove me from this list",
    "remove me", "Remove my number", "take me off your list", "opt me out", "I want to opt out",
    "I revoke my consent", "leave me alone",
    "deja de enviarme mensajes", "Deja de mandarme mensajes", "dejen de escribirme",
    "no me mandes más mensajes", "No me manden mensajes", "no me escriban más",
    "no quiero recibir más mensajes", "no quiero mas mensajes", "no más mensajes",
    "quiero darme de baja", "dar de baja", "quítenme de la lista", "déjenme en paz",
    # opt-out words with only filler or emphasis words around them (CLINICAL.md §7)
    "no stop", "NO STOP", "No. STOP", "yes stop", "I said STOP", "STOP ALREADY", "just stop",
    "stop it", "stop stop stop", "please STOP now", "i want to stop", "🛑", "✋", "no, no more",
    "no more please", "para", "Para por favor", "No, para", "no más", "ya basta",
    "para de mandarme mensajes", "I want to stop getting these texts",
]  # fmt: skip

NOT_STOP = [
    # answers to health questions
    "no", "No.", "NO!!", "nope", "no more pain", "not at all", "never",
    "the pain won't stop", "it doesn't stop hurting", "it never stops", "It won't stop",
    "make it stop", "I want the pain to stop", "I can't stop moving", "stop the pain",
    "pain stops when I rest", "stopping helps", "it stopped", "non-stop pain", "nonstop",
    "the pain wont stop sending shocks down my arm", "the end of my spine", "at the end of the day",
    "it hurts at the end", "unstoppable", "endless", "cancelled my appointment",
    "cancel my appointment", "quit my job", "I quit smoking", "yes", "sí", "no para",
    "no para de doler", "no se me quita", "alto dolor", "dolor alto", "basta de dolor",
    "it's enough", "me duele mucho", "7", "2 weeks", "help me", "", " ",
    "I got your text", "thanks for the message", "para nada", "para mí es peor",
    "please don't stop texting me", "no dejen de escribirme", "no quiero parar",
]  # fmt: skip


@pytest.mark.parametrize("text", STOP)
def test_opt_out(text: str) -> None:
    assert classify(text) == "stop"


@pytest.mark.parametrize("text", NOT_STOP)
def test_answers_are_not_opt_outs(text: str) -> None:
    assert classify(text) != "stop"


@pytest.mark.parametrize("word", OPT_OUT_WORDS)
def test_every_opt_out_word_alone(word: str) -> None:
    for text in (word, word.lower(), word.title(), f" {word}. ", f"{word}!!"):
        assert classify(text) == "stop", text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("START", "start"), ("start", "start"), ("Start.", "start"), ("UNSTOP", "start"),
        ("unstop!", "start"), ("start please", "start"),
        ("HELP", "help"), ("help", "help"), ("Help?", "help"), ("INFO", "help"),
        ("info", "help"), ("AYUDA", "help"), ("¡Ayuda!", "help"),
        ("RESTART", "restart"), ("restart", "restart"), ("START OVER", "restart"),
        ("start over", "restart"), ("Start over please", "restart"), ("REINICIAR", "restart"),
        ("EMPEZAR DE NUEVO", "restart"), ("empezar de nuevo", "restart"),
        ("ESPAÑOL", "lang_es"), ("Español", "lang_es"), ("espanol", "lang_es"),
        ("SPANISH", "lang_es"), ("spanish please", "lang_es"), ("en español", "lang_es"),
        ("español por favor", "lang_es"),
        ("ENGLISH", "lang_en"), ("english", "lang_en"), ("INGLÉS", "lang_en"),
        ("ingles", "lang_en"), ("in English", "lang_en"),
        # answers and other text are not control words
        ("yes", None), ("YES", None), ("Y", None), ("si", None), ("no", None), ("1", None),
        ("7", None), ("help me", None), ("I need help", None), ("more info please", None),
        ("start the pain", None), ("it started 2 weeks ago", None), ("starting", None),
        ("restarted", None), ("I speak Spanish", None), ("english muffin", None),
        ("PAIN", None), ("DOLOR", None), ("", None), ("   ", None), ("!!!", None),
        ("thank you", None), ("please", None), ("ok", None),
    ],
)  # fmt: skip
def test_classify(text: str, expected: str | None) -> None:
    assert classify(text) == expected


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (START_WORDS, "start"),
        (HELP_WORDS, "help"),
        (RESTART_WORDS, "restart"),
        (LANG_ES_WORDS, "lang_es"),
        (LANG_EN_WORDS, "lang_en"),
    ],
)
def test_every_listed_word_is_classified(words: tuple[str, ...], expected: str) -> None:
    for word in words:
        assert classify(word) == expected, word
        assert classify(word.lower() + "!") == expected, word


def test_yes_is_an_answer_not_start() -> None:
    assert "YES" not in START_WORDS
    assert classify("YES") is None


def test_word_lists_are_tuples_of_upper_case_words() -> None:
    for words in (OPT_OUT_WORDS, START_WORDS, HELP_WORDS, TWILIO_OPT_OUT_WORDS):
        assert isinstance(words, tuple) and words
        assert all(word == word.upper() for word in words)
    required = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
                "OPT OUT", "ALTO", "PARAR", "BASTA"}  # fmt: skip
    assert required <= set(OPT_OUT_WORDS)
    assert set(START_WORDS) == {"START", "UNSTOP"}
    assert set(HELP_WORDS) == {"HELP", "INFO", "AYUDA"}


# ---- Twilio's own opt-out words --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", True), ("stop", True), (" Stop. ", True), ("STOPALL", True),
        ("UNSUBSCRIBE", True), ("cancel", True), ("END", True), ("quit", True),
        ("REVOKE", True), ("OPTOUT", True),
        ("OPT OUT", False), ("stop please", False), ("please stop texting me", False),
        ("ALTO", False), ("BASTA", False), ("", False), ("no", False),
    ],
)  # fmt: skip
def test_is_twilio_opt_out(text: str, expected: bool) -> None:
    assert is_twilio_opt_out(text) is expected


def test_every_twilio_opt_out_is_an_opt_out() -> None:
    for word in TWILIO_OPT_OUT_WORDS:
        assert classify(word) == "stop"
        assert is_twilio_opt_out(word)


# ---- clinic start keywords -------------------------------------------------------------------

CLINIC_KEYWORDS = ["PAIN", "BACK", "DOLOR"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PAIN", True), ("pain", True), ("Pain.", True), (" back ", True), ("Dolor!", True),
        ("DOLOR", True), ("dolór", True),
        ("pain please", False), ("back pain", False), ("my back", False), ("painful", False),
        ("", False), ("STOP", False), ("yes", False),
    ],
)  # fmt: skip
def test_is_start_keyword(text: str, expected: bool) -> None:
    assert is_start_keyword(text, CLINIC_KEYWORDS) is expected


def test_start_keyword_edge_cases() -> None:
    assert is_start_keyword("Espalda", ["espalda"])
    assert is_start_keyword("back-pain", ["BACK PAIN"])
    assert not is_start_keyword("pain", [])
    assert not is_start_keyword("pain", ["", "  "])
    assert not is_start_keyword("", [""])
    assert not is_start_keyword("p", "PAIN")  # a str is not a list of keywords
    assert not is_start_keyword(None, CLINIC_KEYWORDS)  # type: ignore[arg-type]


# ---- properties ------------------------------------------------------------------------------

VOCABULARY = sorted(
    {w for text in STOP + NOT_STOP for w in text.split()} | {"please", "texting", "me", "pain"}
)


@PROPERTY
@given(
    st.one_of(
        st.text(max_size=1600),
        st.lists(st.sampled_from(VOCABULARY), max_size=12).map(" ".join),
    )
)
def test_classify_never_raises(text: str) -> None:
    assert classify(text) in CLASSES
    assert isinstance(is_twilio_opt_out(text), bool)
    assert isinstance(is_start_keyword(text, CLINIC_KEYWORDS), bool)


@PROPERTY
@given(
    st.sampled_from(STOP + NOT_STOP + list(START_WORDS + HELP_WORDS)),
    st.sampled_from([str.upper, str.lower, str.title, str.casefold]),
    st.text(alphabet=' \t\n!?.,¡¿"', max_size=3),
    st.text(alphabet=' \t\n!?.,¡¿"', max_size=3),
)
def test_classify_ignores_case_and_surrounding_punctuation(
    text: str, case, before: str, after: str
) -> None:
    assert classify(before + case(text) + after) == classify(text)


@PROPERTY
@given(
    st.sampled_from(
        ["no", "yes", "the pain won't stop", "it doesn't stop hurting", "sometimes", "7",
         "2 weeks", "better", "no sé", "a veces", "never", "not sure"]
    ),
    st.sampled_from(["", "I think ", "well, ", "honestly "]),
)  # fmt: skip
def test_health_answers_never_opt_out(answer: str, prefix: str) -> None:
    assert classify(prefix + answer) != "stop"
