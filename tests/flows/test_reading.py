"""The one reading of an inbound text (flows/reading.py; CLINICAL.md §6 "What a reply can be",
"Acknowledgements", "Requests to be contacted"; §7 "Opt-out"): tables in English and Spanish,
then properties (hypothesis) of the opt-out, of strict answers and of the flags."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flows import engine, keywords, parsing, reading
from flows.loader import get_flow
from flows.reading import (
    ACK,
    ANSWER,
    BARE_YES_NO,
    CALLBACK,
    HELP,
    KINDS,
    LANG_EN,
    LANG_ES,
    NOT_SURE,
    OPT_OUT,
    OTHER_SENSE,
    RESTART,
    START,
    START_KEYWORD,
    UNCLEAR,
    Reading,
    asks_callback,
    bare_yes_no,
    is_acknowledgement,
    read,
    reports_symptoms,
)

PROPERTY = settings(max_examples=200, deadline=None)
OPTIONS = ("sms", "voice call", "email")
QUESTION_KINDS = (None, "yes_no", "pain_score", "duration", "age", "status", "choice")
CLINIC_KEYWORDS = ("PAIN", "DOLOR")


def read_as(text: str, kind: str | None, lang: str = "en") -> Reading:
    options = OPTIONS if kind == "choice" else ()
    return read(
        text, lang=lang, question_kind=kind, options=options, clinic_start_keywords=CLINIC_KEYWORDS
    )


# ---- 1. opt-out wins over everything ---------------------------------------------------------

OPT_OUTS = [
    # with its reason, or after a question (review of 2026-12-03)
    "STOP you have the wrong number", "Stop, wrong number", "who is this? stop",
    "My pain won't end. Stop.", "para, número equivocado",
    # the brief's own list (CLINICAL.md §7)
    "NO STOP", "No. STOP", "I said STOP", "STOP ALREADY", "just stop", "stop it", "STOP!!",
    "stop texting me", "para", "Para por favor", "🛑", "no más", "no más mensajes",
    "no more please", "stop stop stop", "please STOP now", "i want to stop", "basta ya",
    # every opt-out word, in any case and punctuation
    "STOP", "stop.", "Stop!", "STOPALL", "stop all", "UNSUBSCRIBE", "unsubscribe!", "CANCEL",
    "Cancel.", "END", "end!!", "QUIT", "quit.", "REVOKE", "OPTOUT", "OPT OUT", "opt-out",
    "ALTO", "alto!", "PARAR", "parar.", "PARA!", "BASTA", "¡Basta!", "CANCELAR", "NO MÁS",
    "no mas", "¡No más!",
    # emoji, and fillers or emphasis around them
    "✋", "⛔", "🚫", "🛑🛑", "STOP 🛑", "🛑 please", "yes stop", "ok stop", "stop ok", "STOP, thanks",
    "Stop thank you", "stop pls", "plz stop", "omg stop", "STOP NOW", "stop right now",
    "stop this", "stop that", "stop these", "stop it please", "stop immediately",
    "I SAID STOP!!!", "i said no stop", "I told you to stop", "stop already!!", "just STOP it",
    "seriously stop", "stop stop", "STOP! STOP!", "Stop... just stop", "cancel please",
    "cancel it", "cancel everything", "cancel all", "I quit", "quit it", "end it now",
    "the end", "unsubscribe me please", "i want to unsubscribe", "i would like to stop",
    "can you please stop", "how do i stop", "no more", "no, no more", "No more!!",
    "stop sending me texts", "stop the texts", "please stop texting me", "don't text me",
    "do not contact me", "don't call me", "leave me alone", "stop getting these texts",
    "I don't want you to call me", "stop msging me", "stop txting me", "I want out",
    "that's enough, stop", "ok enough. STOP",
    # Spanish
    "para ya", "ya para", "Para, por favor", "para porfa", "Para ya por favor", "No, para",
    "No. Para", "basta", "ya basta", "¡Basta ya!", "basta por favor", "ALTO por favor",
    "alto ya", "parar por favor", "quiero parar", "cancelar", "quiero cancelar", "no más por favor",
    "no mas gracias", "ya no más", "no más mensajes por favor", "no me manden mensajes",
    "deja de mandarme mensajes", "para de mandarme mensajes", "dejen de escribirme",
    "no quiero recibir más mensajes", "no quiero que me llamen", "déjenme en paz", "dar de baja",
    "quiero darme de baja", "🛑 por favor", "te dije basta", "basta de mensajes",
]  # fmt: skip


@pytest.mark.parametrize("kind", QUESTION_KINDS)
@pytest.mark.parametrize("text", OPT_OUTS)
def test_opt_out_wins_over_everything(text: str, kind: str | None) -> None:
    for lang in ("en", "es"):
        said = read_as(text, kind, lang)
        assert said.kind == OPT_OUT, (text, kind, lang)
        assert said.value is None
    assert keywords.is_opt_out(text) and keywords.classify(text) == "stop"


OTHER_SENSES = [
    # the brief's own list
    "my pain won't end", "cancel my appointment", "I can't stop the pain",
    "it doesn't stop hurting", "para mí es peor", "the pain is at the end of my back",
    # more of the same
    "the pain won't stop", "It won't stop", "make it stop", "I want the pain to stop",
    "stop the pain", "I can't stop moving", "I quit smoking", "quit my job",
    "at the end of the day", "it hurts at the end", "I need to cancel my visit",
    "can I cancel the appointment", "please don't stop texting me", "don't stop",
    "yes it does stop when I rest", "no it won't stop", "7 stop", "no stop sign", "end of story",
    "the pain never seems to end", "Stop. My back hurts more today", "I want it to stop",
    "I wish it would stop", "i just want this to end", "it will end", "at the end",
    # Spanish
    "no para", "no para de doler", "el dolor no para", "no quiero parar", "alto dolor",
    "dolor alto", "en lo alto de la espalda", "basta de dolor", "para dormir me duele",
    "sí, para caminar", "para mi es igual", "me duele para agacharme", "quiero cancelar la cita",
    "tengo que cancelar mi cita", "para el dolor tomo pastillas",
]  # fmt: skip


@pytest.mark.parametrize("kind", QUESTION_KINDS)
@pytest.mark.parametrize("text", OTHER_SENSES)
def test_an_opt_out_word_in_another_sense_is_neither_opt_out_nor_answer(
    text: str, kind: str | None
) -> None:
    for lang in ("en", "es"):
        said = read_as(text, kind, lang)
        assert said.kind == OTHER_SENSE, (text, kind, lang)
        assert said.value is None
    assert not keywords.is_opt_out(text) and keywords.classify(text) != "stop"
    assert keywords.mentions_opt_out_word(text)


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        # idioms whose word only looks like an opt-out word
        ("para nada", "yes_no", False), ("no, para nada", "yes_no", False),
        ("no more pain", "status", "gone"),
        # "stops", "ending", "unstoppable", "nonstop" are other words
        ("it stopped", None, None), ("endless", None, None), ("nonstop", None, None),
    ],
)  # fmt: skip
def test_look_alikes_are_not_opt_out_words(text: str, kind: str | None, value: object) -> None:
    said = read_as(text, kind)
    assert said.kind not in (OPT_OUT, OTHER_SENSE)
    assert not keywords.mentions_opt_out_word(text)
    if value is not None:
        assert (said.kind, said.value) == (ANSWER, value)


def test_non_stop_is_not_an_opt_out_word() -> None:
    assert read_as("non-stop pain", "yes_no").kind == UNCLEAR


# ---- 2. then HELP, START, restart, language --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HELP", HELP), ("help?", HELP), ("Help please", HELP), ("INFO", HELP),
        ("info por favor", HELP), ("AYUDA", HELP), ("¡Ayuda!", HELP), ("ayuda por favor", HELP),
        ("START", START), ("start please", START), ("UNSTOP", START), ("unstop!", START),
        ("PAIN", START_KEYWORD), ("Dolor.", START_KEYWORD),
        ("RESTART", RESTART), ("start over", RESTART), ("empezar de nuevo", RESTART),
        ("ESPAÑOL", LANG_ES), ("spanish please", LANG_ES), ("English", LANG_EN),
        ("en inglés", LANG_EN),
    ],
)  # fmt: skip
def test_control_words_come_after_opt_out_and_before_answers(text: str, expected: str) -> None:
    for kind in QUESTION_KINDS:
        assert read_as(text, kind).kind == expected, (text, kind)


# ---- 3. strict answers -----------------------------------------------------------------------

ANSWERS = [
    # yes / no (CLINICAL.md §6: "yes I do", "no never", "nope none", "sí tengo")
    ("yes_no", "yes I do", True), ("yes_no", "no never", False), ("yes_no", "nope none", False),
    ("yes_no", "sí tengo", True), ("yes_no", "y", True), ("yes_no", "yeah", True),
    ("yes_no", "nope", False), ("yes_no", "sí", True), ("yes_no", "Yes!!", True),
    ("yes_no", "no thanks", False), ("yes_no", "yes please", True), ("yes_no", "no, I haven't", False),
    ("yes_no", "claro que sí", True), ("yes_no", "no, gracias", False), ("yes_no", "nunca", False),
    ("yes_no", "no tengo", False), ("yes_no", "sí señor", True), ("yes_no", "YES YES", True),
    ("yes_no", "no he tenido", False), ("yes_no", "no, no lo he tenido", False),
    # pain score
    ("pain_score", "7 out of 10", 7), ("pain_score", "7/10", 7), ("pain_score", "seven", 7),
    ("pain_score", "siete", 7), ("pain_score", "it's a 7", 7), ("pain_score", "6 or 7", 7),
    ("pain_score", "6-7", 7), ("pain_score", "un 8", 8), ("pain_score", "no pain", 0),
    # duration
    ("duration", "about 3 weeks", 21), ("duration", "2 or 3 weeks", 21),
    ("duration", "2-3 weeks", 21), ("duration", "3 days", 3), ("duration", "hace 2 semanas", 14),
    ("duration", "since yesterday", 1), ("duration", "2 o 3 semanas", 21),
    # age
    ("age", "45", 45), ("age", "I'm 45", 45), ("age", "tengo 45 años", 45),
    # status
    ("status", "better", "better"), ("status", "much better now", "better"),
    ("status", "peor", "worse"), ("status", "igual", "same"), ("status", "3", "same"),
    # choice
    ("choice", "2", "voice call"), ("choice", "email please", "email"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "text", "value"), ANSWERS)
def test_answers(kind: str, text: str, value: object) -> None:
    said = read_as(text, kind)
    assert (said.kind, said.value) == (ANSWER, value)
    assert said.is_answer


UNCLEARS = [
    # CLINICAL.md §6: hedged, mixed or with any word that is not the answer or a filler
    ("yes_no", "yes but only sometimes"), ("yes_no", "no I'm not sure"), ("yes_no", "kind of"),
    ("yes_no", "yes and no"), ("yes_no", "no, not sure"), ("yes_no", "maybe"),
    ("yes_no", "yes at night"), ("yes_no", "no fever"), ("yes_no", "sí, a veces"),
    ("yes_no", "sí pero poco"), ("yes_no", "creo que no"), ("yes_no", "yes I think so"),
    ("yes_no", "nothing"), ("yes_no", "7"),
    ("pain_score", "7 but only when I move"), ("pain_score", "7 maybe 8"),
    ("pain_score", "no sé, 7"), ("pain_score", "bad"), ("pain_score", "very bad"),
    ("duration", "a few weeks"), ("duration", "3"), ("duration", "3 weeks but it comes and goes"),
    ("duration", "since Monday"),
    ("age", "old enough"), ("age", "45 and my wife is 50"),
    ("status", "better but still sore"), ("status", "not better"), ("status", "fine I guess"),
    ("choice", "voice"), ("choice", "sms or email"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "text"), UNCLEARS)
def test_anything_else_is_unclear_and_nothing_is_recorded(kind: str, text: str) -> None:
    said = read_as(text, kind)
    assert said.kind == UNCLEAR, said
    assert said.value is None


@pytest.mark.parametrize(
    ("kind", "text"),
    [("yes_no", "not sure"), ("yes_no", "no sé"), ("pain_score", "idk"), ("duration", "I don't know"),
     ("age", "no estoy seguro"), ("status", "no sé"), ("choice", "not sure")],
)  # fmt: skip
def test_not_sure(kind: str, text: str) -> None:
    assert read_as(text, kind).kind == NOT_SURE


def test_an_answer_needs_a_question() -> None:
    assert read("7").kind == UNCLEAR
    assert read("3 weeks").kind == UNCLEAR
    assert (read("yes").kind, read("yes").value) == (BARE_YES_NO, True)


def test_an_unknown_question_kind_is_a_flow_bug() -> None:
    with pytest.raises(ValueError, match="unknown parse kind"):
        read("yes", question_kind="nonsense")


# ---- 4. acknowledgements and a stray yes / no ------------------------------------------------

ACKS = [
    "ok", "OK", "Ok.", "okay", "k", "thanks", "Thanks!", "thank you", "Thank you so much",
    "ty", "thx", "👍", "👍🏽", "🙏", "👌", "gracias", "Gracias!", "ok gracias", "muchas gracias",
    "mil gracias", "will do", "ok thanks", "got it", "Got it, thanks", "perfecto", "vale",
    "bueno", "de acuerdo", "entendido", "listo", "ok 👍", "thanks 🙏", "thanks for the info",
    "thank you doctor", "sounds good", "cool", "great thanks", "muy bien, gracias", "tks",
    "many thanks", "thank you kindly", "vale gracias", "Bien gracias", "gracias 🙏", "❤️",
    "gracias por todo", "muy amable", "ok, will do", "alright", "noted", "bye", "perfect",
]  # fmt: skip
NOT_ACKS = [
    "", " ", "ok but my back still hurts", "thanks, it's worse today", "no", "yes", "yes thanks",
    "👍😭", "😭", "ok?", "ok call me", "help", "stop", "thanks stop", "7", "gracias, me duele",
    "what?", "thanks for nothing",
]  # fmt: skip


@pytest.mark.parametrize("text", ACKS)
def test_acknowledgements(text: str) -> None:
    assert is_acknowledgement(text)
    said = read(text)
    assert said.kind == ACK and said.ack
    assert not said.callback and not said.symptoms


@pytest.mark.parametrize("text", NOT_ACKS)
def test_not_acknowledgements(text: str) -> None:
    if text == "ok?":  # the question mark is punctuation: still an acknowledgement
        assert is_acknowledgement(text)
        return
    assert not is_acknowledgement(text)
    assert read(text).kind != ACK


@pytest.mark.parametrize(
    ("text", "expected"),
    [("NO", False), ("no", False), ("yes", True), ("Yes!", True), ("sí", True), ("nope", False),
     ("no thanks", False), ("yes I did", True), ("1", None), ("2", None), ("ok", None),
     ("no, it's worse", None), ("maybe", None), ("", None)],
)  # fmt: skip
def test_a_stray_yes_or_no_after_a_conversation(text: str, expected: bool | None) -> None:
    assert bare_yes_no(text) is expected
    said = read(text)
    assert said.yes_no is expected
    if expected is not None:
        assert (said.kind, said.value) == (BARE_YES_NO, expected)


def test_a_yes_or_no_to_a_question_is_an_answer_not_bare() -> None:
    said = read("no", question_kind="yes_no")
    assert (said.kind, said.value, said.yes_no) == (ANSWER, False, False)
    assert read("no", question_kind="pain_score").kind == BARE_YES_NO  # no answer to that one


# ---- 5. requests to be contacted -------------------------------------------------------------

CALLBACKS = [
    "can someone call me", "Can someone call me?", "please call me", "call me", "call me back",
    "Call me back please", "I need to talk to a nurse", "can I talk to a doctor",
    "I want to speak with someone", "could the nurse call me", "have someone call me",
    "please have the doctor call", "give me a call", "can I get a call", "I'd like a call back",
    "call my cell", "my back hurts more today, can someone call me?", "please contact me",
    "I need to speak to a real person", "can you call me today", "no, please call me",
    "llámenme por favor", "llámeme", "llámame", "¿me pueden llamar?", "pueden llamarme",
    "necesito hablar con una enfermera", "quiero hablar con el doctor", "que me llamen",
    "que alguien me llame por favor", "necesito una llamada", "me duele más, llámenme",
    "quiero hablar con alguien", "pueden marcarme", "is there someone I can talk to",
    "I need to see a doctor", "can I make an appointment", "quiero una cita",
    "necesito ver a un médico",
]  # fmt: skip
NOT_CALLBACKS = [
    "don't call me", "do not call me", "Don't call me back", "never call me", "stop calling me",
    "no need to call me", "you don't need to call me", "I'll call you tomorrow",
    "I will call the clinic", "I called yesterday", "should I call 911?", "no me llamen",
    "no quiero que me llamen", "me llamo Juan", "my name is Ann", "ok thanks", "STOP",
    "the doctor called me", "yes", "",
]  # fmt: skip


@pytest.mark.parametrize("text", CALLBACKS)
def test_requests_to_be_contacted(text: str) -> None:
    assert asks_callback(text)
    assert read(text).callback
    assert read(text).kind == CALLBACK


@pytest.mark.parametrize("text", NOT_CALLBACKS)
def test_not_requests_to_be_contacted(text: str) -> None:
    assert not asks_callback(text)
    assert not read(text).callback


@pytest.mark.parametrize("kind", QUESTION_KINDS[1:])
def test_a_callback_request_during_a_question_is_no_answer_but_flagged(kind: str) -> None:
    said = read_as("yes, please call me", kind)
    assert said.kind == CALLBACK and said.callback


def test_dont_call_me_is_an_opt_out_never_a_callback() -> None:
    for text in ("don't call me", "do not call me", "no me llamen", "no quiero que me llamen"):
        said = read(text)
        assert said.kind == OPT_OUT and not said.callback, text


def test_an_opt_out_that_asks_for_a_call_carries_both() -> None:
    said = read("stop texting me, call me instead")
    assert said.kind == OPT_OUT and said.callback


def test_a_callback_with_an_opt_out_word_in_another_sense_is_flagged() -> None:
    said = read("cancel my appointment and call me")
    assert said.kind == OTHER_SENSE and said.callback


# ---- 6. symptom reports ----------------------------------------------------------------------

SYMPTOMS = [
    "My back is worse now", "the pain is getting worse", "me duele más", "I can't feel my legs",
    "my legs are numb", "tingling in my arms", "I have a fever", "I fell down the stairs",
    "trouble peeing", "chest pain", "it hurts so much", "the pain won't end", "tengo fiebre",
    "el dolor es peor", "no siento las piernas", "hormigueo en las manos", "me caí",
    "STOP. my back hurts", "I can't sleep", "I want to die", "se me duermen las piernas",
    "I'm in agony", "me siento mal", "I feel terrible", "I'm not feeling well",
]  # fmt: skip
NOT_SYMPTOMS = [
    "ok thanks",
    "STOP",
    "yes",
    "no",
    "gracias",
    "call me",
    "who is this?",
    "👍",
    "",
    "I'm sick of these texts",
    "I'll call you",
]


@pytest.mark.parametrize("text", SYMPTOMS)
def test_symptom_reports(text: str) -> None:
    assert reports_symptoms(text)
    assert read(text).symptoms


@pytest.mark.parametrize("text", NOT_SYMPTOMS)
def test_not_symptom_reports(text: str) -> None:
    assert not reports_symptoms(text)


# ---- properties ------------------------------------------------------------------------------

PUNCTUATION = ' \t\n!?.,;:¡¿"()*~…-'
CORES = sorted(
    set(keywords.OPT_OUT_WORDS) | set(keywords.WHOLE_ONLY_OPT_OUT_WORDS) | set(keywords.STOP_EMOJI)
)
FILLERS = sorted(keywords.OPT_OUT_FILLERS)


def recase(text: str, flips: list[bool]) -> str:
    flips = (flips + [False] * len(text))[: len(text)]
    return "".join((c.upper() if f else c.lower()) for c, f in zip(text, flips, strict=True))


def join(words: list[str], separators: list[str]) -> str:
    separators = (separators + [" "] * len(words))[: len(words)]
    return "".join(
        word + (sep if sep.strip(" \t\n") else sep + " ")
        for word, sep in zip(words, separators, strict=True)
    )


@st.composite
def opt_out_texts(draw) -> str:
    """Opt-out words, fillers and emphasis in any order, case and punctuation."""
    cores = draw(st.lists(st.sampled_from(CORES), min_size=1, max_size=3))
    fillers = draw(st.lists(st.sampled_from(FILLERS), max_size=6))
    words = draw(st.permutations(cores + fillers))
    separators = draw(
        st.lists(st.text(alphabet=PUNCTUATION, min_size=1, max_size=3), max_size=len(words))
    )
    text = join(list(words), separators)
    flips = draw(st.lists(st.booleans(), max_size=len(text)))
    return draw(st.sampled_from(["", " ", "¡", "..."])) + recase(text, flips)


# The two documented exceptions: a Spanish "no" right before "para" / "parar" / "quiero" /
# "deseo" is a negation ("no para": it does not stop), not emphasis; and "it" / "this" /
# "that" before an opt-out word is its subject ("I want it to stop": the pain).
_NEGATING_NO = re.compile(r"(?<![^\W_])no\s+(?:para|parar|quiero|deseo)(?![^\W_])", re.I)
_WORDS = re.compile(r"[^\W_]+")
_CORE_WORDS = {w for core in CORES for w in _WORDS.findall(core.lower())} | {"🛑"}


def _subject_before_core(text: str) -> bool:
    words = [
        w.lower()
        for w in _WORDS.findall(
            "".join(" stop " if ch in keywords.STOP_EMOJI else ch for ch in text)
        )
    ]
    subject = False
    for word in words:
        if word in {"it", "this", "that"}:
            subject = True
        elif subject and word in _CORE_WORDS | {"mas", "más", "opt", "out", "all", "more"}:
            return True
        elif word not in {
            "to",
            "would",
            "will",
            "can",
            "could",
            "just",
            "please",
            "already",
            "ever",
        }:
            subject = False
    return False


@PROPERTY
@given(opt_out_texts(), st.sampled_from(QUESTION_KINDS), st.sampled_from(["en", "es"]))
def test_property_opt_out_words_with_fillers_are_always_an_opt_out(
    text: str, kind: str | None, lang: str
) -> None:
    assume(not _NEGATING_NO.search(text.replace("Á", "A").replace("á", "a")))
    assume(not _subject_before_core(text))
    assert keywords.is_opt_out(text), text
    assert read_as(text, kind, lang).kind == OPT_OUT, text


OPT_OUT_WORD_FORMS = sorted(set(keywords.OPT_OUT_WORDS) | set(keywords.STOP_EMOJI))
# Words of answers of every kind, their fillers, and other words patients write.
ANSWER_VOCABULARY = sorted(
    (
        parsing.YES_NO_VOCABULARY
        | parsing.PAIN_FILLERS
        | parsing.DURATION_FILLERS
        | parsing.AGE_FILLERS
        | parsing.STATUS_FILLERS
        | parsing.CHOICE_FILLERS
        | set(parsing.STATUSES)
        | set(" ".join(OPTIONS).split())
        | set("0 1 2 3 4 7 10 45 seven siete days weeks semanas meses a or to - / and y o".split())
        | set("better worse peor mejor igual same gone pain dolor mas no more mi".split())
    )
    - {"nada", "stop", "non"}  # "para nada" and "non-stop" are idioms, not opt-out words
)


@st.composite
def texts_with_an_opt_out_word(draw) -> str:
    words = draw(st.lists(st.sampled_from(ANSWER_VOCABULARY), min_size=0, max_size=8))
    at = draw(st.integers(0, len(words)))
    words.insert(at, draw(st.sampled_from(OPT_OUT_WORD_FORMS)))
    separators = draw(
        st.lists(st.text(alphabet=PUNCTUATION, min_size=1, max_size=2), max_size=len(words))
    )
    return join(words, separators)


@PROPERTY
@given(
    texts_with_an_opt_out_word(), st.sampled_from(QUESTION_KINDS[1:]), st.sampled_from(["en", "es"])
)
def test_property_no_text_with_an_opt_out_word_is_ever_an_answer(
    text: str, kind: str, lang: str
) -> None:
    said = read_as(text, kind, lang)
    assert said.kind in (OPT_OUT, OTHER_SENSE), (text, said)
    assert said.kind != ANSWER and said.value is None


QUESTION_NODES = [
    (flow_id, node.id) for flow_id in ("intake", "followup") for node in get_flow(flow_id).questions
]


@PROPERTY
@given(texts_with_an_opt_out_word(), st.sampled_from(QUESTION_NODES), st.sampled_from(["en", "es"]))
def test_property_the_engine_never_records_a_text_with_an_opt_out_word(
    text: str, where: tuple[str, str], lang: str
) -> None:
    from datetime import UTC, datetime

    flow_id, node_id = where
    flow = get_flow(flow_id)
    ctx = engine.Context(
        clinic="Elm Clinic", baseline_pain_score=6 if flow_id == "followup" else None
    )
    now = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    state, _ = engine.start(flow, now, context=ctx, lang=lang)
    state = dict(state, node=node_id)
    for _ in range(4):  # the hint, then unclear replies: never a record of this text
        state, actions = engine.step(flow, state, engine.Reply(text), now)
        records = [a for a in actions if isinstance(a, engine.Record)]
        assert all(r.value is None for r in records), (text, records)
        if state["status"] != "active" or state["node"] != node_id:
            break


OTHER_WORDS = sorted(
    set(
        "but only when i move sometimes maybe kind of at night fever pain back think so the "
        "it hurts not sure idk a veces pero creo dolor noche fiebre 2 weeks ago 7 better "
        "sino nothing yesterday nobody siempre un poco little bit".split()
    )
)
YES_NO_WORDS = sorted(parsing.YES_NO_VOCABULARY)


@PROPERTY
@given(
    st.lists(
        st.one_of(st.sampled_from(YES_NO_WORDS), st.sampled_from(OTHER_WORDS)),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.text(alphabet=PUNCTUATION, min_size=1, max_size=2), max_size=6),
    st.sampled_from(["en", "es"]),
)
def test_property_a_yes_no_answer_has_no_word_outside_the_answer_and_filler_lists(
    words: list[str], separators: list[str], lang: str
) -> None:
    text = join(words, separators)
    parsed = parsing.parse_yes_no(text, lang)
    said = read(text, lang=lang, question_kind="yes_no")
    if parsed.ok or said.kind == ANSWER:
        assert set(parsing.yes_no_words(text)) <= parsing.YES_NO_VOCABULARY, text
    if said.kind == ANSWER:
        assert parsed.ok and said.value == parsed.value


@PROPERTY
@given(
    st.sampled_from(
        [
            "don't call me",
            "do not call me",
            "never call me",
            "no me llamen",
            "dont call me back",
            "no quiero que me llamen",
        ]
    ),
    st.lists(
        st.sampled_from(["please", "ok", "thanks", "por favor", "gracias", "again", "ever"]),
        max_size=3,
    ),
)
def test_property_a_negated_call_request_is_never_a_callback(
    request: str, extra: list[str]
) -> None:
    text = " ".join([request, *extra])
    assert not asks_callback(text)
    assert read(text).kind == OPT_OUT


def test_no_filler_list_holds_an_opt_out_word() -> None:
    opt_out = keywords.OPT_OUT_TOKENS
    for kind, fillers in parsing.FILLERS.items():
        assert not fillers & opt_out, kind
    assert not parsing.YES_NO_VOCABULARY & opt_out - {"para"}  # "para nada": an idiom
    assert not (reading.ACK_FILLERS | {w for p in reading.ACK_PHRASES for w in p.split()}) & opt_out
    assert "no" in keywords.OPT_OUT_FILLERS and "dont" not in keywords.OPT_OUT_FILLERS
    assert not keywords.OPT_OUT_FILLERS & {"not", "never", "dont", "cant", "wont", "pain", "dolor"}


ANY_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.sampled_from(ANSWER_VOCABULARY + OPT_OUT_WORD_FORMS + OTHER_WORDS + FILLERS), max_size=10
    ).map(" ".join),
)


@PROPERTY
@given(ANY_TEXT, st.sampled_from(QUESTION_KINDS), st.sampled_from(["en", "es", ""]))
def test_property_read_never_raises_and_is_well_formed(
    text: str, kind: str | None, lang: str
) -> None:
    said = read_as(text, kind, lang)
    assert said.kind in KINDS
    assert isinstance(said.callback, bool) and isinstance(said.symptoms, bool)
    assert said.yes_no in (True, False, None) and isinstance(said.ack, bool)
    if said.kind == ANSWER:
        assert kind is not None and not keywords.mentions_opt_out_word(text)
        assert (
            said.value
            == parsing.parse(kind, text, lang, options=OPTIONS if kind == "choice" else ()).value
        )
    elif said.kind != BARE_YES_NO:
        assert said.value is None
    if said.kind == OPT_OUT:
        assert keywords.is_opt_out(text)
    if keywords.is_opt_out(text):
        assert said.kind == OPT_OUT


def test_read_of_a_non_str_is_unclear() -> None:
    assert read(None).kind == UNCLEAR  # type: ignore[arg-type]
    assert read(7, question_kind="yes_no").kind == UNCLEAR  # type: ignore[arg-type]


@pytest.mark.parametrize("first_with_keywords", [True, False], ids=["webhook-first", "engine-first"])
@pytest.mark.parametrize("text", ["PAIN", "no", "Dolor."])
def test_a_text_read_with_and_without_the_clinics_keywords_keeps_each_reading(
        text, first_with_keywords):
    """The webhook reads a text with the clinic's start keywords, the engine again without
    them; the second reading (cached) is never the first one's."""
    def with_keywords():
        return reading.read(text, question_kind="yes_no", clinic_start_keywords=["PAIN", "DOLOR"])

    def without():
        return reading.read(text, question_kind="yes_no")

    expected = (START_KEYWORD if text != "no" else ANSWER, ANSWER if text == "no" else UNCLEAR)
    order = (with_keywords, without) if first_with_keywords else (without, with_keywords)
    kinds = {fn: fn().kind for fn in order}
    assert (kinds[with_keywords], kinds[without]) == expected
