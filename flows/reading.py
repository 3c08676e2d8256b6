"""The one reading of an inbound text (SMS or speech): what it is, in the order of CLINICAL.md
§6 "What a reply can be", with the flags that the service combines with it.

    read("NO STOP", lang="en", question_kind="yes_no")           -> kind "opt_out"
    read("my pain won't end", question_kind="yes_no")           -> kind "opt_out_word_other_sense"
    read("yes I do", question_kind="yes_no")                     -> kind "answer", value True
    read("yes but only sometimes", question_kind="yes_no")       -> kind "unclear"
    read("ok thanks")                                            -> kind "ack"
    read("my back hurts more today, can someone call me?")      -> kind "callback", symptoms

Kinds, first match wins:

1. `opt_out`: stop all messages (flows.keywords.is_opt_out). Never an answer.
2. `help`: HELP / INFO / AYUDA with courtesy words.
3. `start` (START / UNSTOP), `start_keyword` (one of the clinic's start keywords, "PAIN"),
   `restart`, `lang_es`, `lang_en`.
4. `opt_out_word_other_sense`: an opt-out word used in another sense ("cancel my
   appointment", "para mí es peor"): not an opt-out, and never an answer either. The patient
   is told once how to stop, with the question again, and the text reaches the clinic.
5. `answer` (with `value`) or `not_sure`: only when a question is being asked
   (`question_kind`), by the strict parsers of flows.parsing (the answer and closed-list
   fillers only).
6. `callback`: asks to be contacted ("can someone call me", "llámenme por favor").
7. `ack`: an acknowledgement ("ok", "thanks", "👍", "gracias", "vale").
8. `bare_yes_no` (with `value` True / False): a plain yes or no that answers no question
   being asked (a stray "NO" after a check-in ended): it carries no new information.
9. `unclear`: anything else.

Flags, whatever the kind: `callback` (asks to be contacted; "don't call me" never does, it is
an opt-out), `symptoms` (reports symptoms: "my back is worse", "me duele más"), `yes_no` (the
text is a bare yes / no: True / False, else None) and `ack` (is an acknowledgement).

Pure functions: no I/O, no clock; no function raises on any str input.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from flows import keywords, parsing
from flows.parsing import normalize

__all__ = [
    "ACK",
    "ACK_EMOJI",
    "ACK_FILLERS",
    "ACK_PHRASES",
    "ANSWER",
    "BARE_YES_NO",
    "CALLBACK",
    "HELP",
    "KINDS",
    "LANG_EN",
    "LANG_ES",
    "NOT_SURE",
    "OPT_OUT",
    "OTHER_SENSE",
    "RESTART",
    "START",
    "START_KEYWORD",
    "UNCLEAR",
    "Reading",
    "asks_callback",
    "bare_yes_no",
    "is_acknowledgement",
    "read",
    "reports_symptoms",
]

OPT_OUT = "opt_out"
HELP = "help"
START = "start"
START_KEYWORD = "start_keyword"
RESTART = "restart"
LANG_ES = "lang_es"
LANG_EN = "lang_en"
OTHER_SENSE = "opt_out_word_other_sense"
ANSWER = "answer"
NOT_SURE = "not_sure"
CALLBACK = "callback"
ACK = "ack"
BARE_YES_NO = "bare_yes_no"
UNCLEAR = "unclear"
KINDS = (
    OPT_OUT, HELP, START, START_KEYWORD, RESTART, LANG_ES, LANG_EN, OTHER_SENSE, ANSWER,
    NOT_SURE, CALLBACK, ACK, BARE_YES_NO, UNCLEAR,
)  # fmt: skip


@dataclass(frozen=True)
class Reading:
    """What one inbound text is (see the module docstring)."""

    kind: str  # one of KINDS
    value: object = None  # the answer (kind "answer") or the yes / no (kind "bare_yes_no")
    callback: bool = False  # asks to be contacted, whatever the kind
    symptoms: bool = False  # reports symptoms, whatever the kind
    yes_no: bool | None = None  # the text is a bare yes (True) or no (False)
    ack: bool = False  # the text is an acknowledgement

    @property
    def is_answer(self) -> bool:
        return self.kind == ANSWER


def read(
    text: str,
    *,
    lang: str = "en",
    question_kind: str | None = None,
    options: Sequence[str] = (),
    clinic_start_keywords: Sequence[str] = (),
) -> Reading:
    """The reading of `text` from a patient whose language is `lang`, while the question of
    parse kind `question_kind` (a key of flows.parsing.KINDS, or "choice" with `options`) is
    being asked, or no question (None). An unknown `question_kind` is a flow-definition bug
    and raises ValueError, as flows.parsing.parse does, whatever the text."""
    text = text if isinstance(text, str) else ""
    # Options that are not strings are no options (flows.parsing.parse_choice drops them too).
    said = _read(text, lang, question_kind,
                 tuple(option for option in (options or ()) if isinstance(option, str)))
    if said.kind not in (OPT_OUT, HELP, START) \
            and keywords.is_start_keyword(text, clinic_start_keywords):
        return replace(said, kind=START_KEYWORD, value=None)
    return said


# A text is read by the webhook to route it and again by the engine to take it as an answer:
# the second reading comes from here. The clinic's start keywords are looked at outside it (the
# engine does not know them), where _read would have: after START, before everything else.
# Small, as flows.parsing.normalize's cache: patients' words do not linger in the process.
@lru_cache(maxsize=64)
def _read(text: str, lang: str, question_kind: str | None,
          options: tuple[str, ...]) -> Reading:
    ack = is_acknowledgement(text)
    flags = {
        "callback": asks_callback(text),
        "symptoms": reports_symptoms(text),
        "yes_no": bare_yes_no(text, lang),
        "ack": ack,
    }
    opt_out = keywords.opt_out_reading(text)
    if opt_out == "opt_out":
        return Reading(OPT_OUT, **flags)
    word = keywords.classify(text)
    if word == "help":
        return Reading(HELP, **flags)
    if word == "start":
        return Reading(START, **flags)
    if word in (RESTART, LANG_ES, LANG_EN):
        return Reading(word, **flags)
    if opt_out == "other_sense":
        return Reading(OTHER_SENSE, **flags)
    if question_kind is not None:
        parsed = parsing.parse(question_kind, text, lang, options=options)
        if parsed.ok:
            return Reading(ANSWER, parsed.value, **flags)
        if parsed.not_sure:
            return Reading(NOT_SURE, **flags)
    if flags["callback"]:
        return Reading(CALLBACK, **flags)
    if ack:
        return Reading(ACK, **flags)
    if flags["yes_no"] is not None:
        return Reading(BARE_YES_NO, flags["yes_no"], **flags)
    return Reading(UNCLEAR, **flags)


# ---- bare yes / no ---------------------------------------------------------------------------

_DIGITS = frozenset("0123456789")


def bare_yes_no(text: str, lang: str = "en") -> bool | None:
    """True / False when the whole text is a plain yes / no by the strict yes/no parser ("NO",
    "yes", "nope", "sí", "no thanks", "yes I did"), else None. Menu digits ("1", "2") are not
    a yes or no outside a question."""
    if not isinstance(text, str) or any(ch in _DIGITS for ch in text):
        return None
    parsed = parsing.parse_yes_no(text, lang)
    return bool(parsed.value) if parsed.ok else None


# ---- acknowledgements ------------------------------------------------------------------------

# Whole acknowledgements, as normalized words; any of them with only ACK_FILLERS around it.
ACK_PHRASES = frozenset(
    phrase.strip()
    for phrase in """ok|okay|okey|oki|okie|okk|k|kk|alright|all right|aight|thanks|thank you|thankyou|
    thank u|thanx|thnx|thx|ty|tysm|tyvm|cheers|great|good|cool|perfect|nice|awesome|excellent|
    wonderful|got it|gotcha|will do|sounds good|noted|understood|roger|sure|fine|appreciate it|
    much appreciated|appreciated|np|no problem|no worries|you too|same to you|bye|goodbye|
    see you|take care|have a good day|have a nice day|received|
    gracias|muchas gracias|mil gracias|muchisimas gracias|vale|perfecto|bueno|de acuerdo|
    entendido|listo|esta bien|muy bien|bien|genial|dale|sale|excelente|igualmente|recibido|
    tks|many thanks|thanks a bunch|
    hasta luego|adios|chao|bendiciones|dios le bendiga|que dios le bendiga|muy amable|
    que amable|amable""".split("|")
)
# Words that may stand around an acknowledgement: "thanks so much for the info", "ok thank
# you doctor", "muchas gracias por todo", "muy amable".
ACK_FILLERS = frozenset(
    "so very much a lot again you u for the info information message messages text texts "
    "reminder help checking in doc doctor dr nurse sir maam dear guys all oh ah um well then "
    "kindly "
    "and i will "
    "muy amable por todo la el informacion mensaje mensajes senor senora senorita doctora "
    "usted ustedes igual pues y".split()
)
# Emoji that acknowledge: 👍 👌 🙏 and friendly faces and hearts (a crying face does not).
ACK_EMOJI = frozenset("👍👌🙏🙂😊☺😀😃😄😁❤♥💙💜💚💕💖🥰😘✅✔👏💯🤝🆗👋")
_ACK_TOKEN = "ok"
_ACK_LEXICON_MAX = max(len(phrase.split()) for phrase in ACK_PHRASES)


def is_acknowledgement(text: str) -> bool:
    """True when the whole text acknowledges and says nothing else: "ok", "thanks", "thank
    you", "ty", "👍", "gracias", "ok gracias", "will do", "got it", "muchas gracias", "vale".

    A text with any other word, or with an emoji that is not in ACK_EMOJI ("👍😭"), is not
    one; nor is a yes / no ("yes thanks": see bare_yes_no) or a bare emoji-free "" ."""
    if not isinstance(text, str) or not text.strip():
        return False
    for ch in text:
        if ch in ACK_EMOJI:
            text = text.replace(ch, f" {_ACK_TOKEN} ")
        elif unicodedata.category(ch) == "So":
            return False  # another emoji: it may say something else
    words = normalize(text).split()
    found = False
    i = 0
    while i < len(words):
        for size in range(min(_ACK_LEXICON_MAX, len(words) - i), 0, -1):
            if " ".join(words[i : i + size]) in ACK_PHRASES:
                found, i = True, i + size
                break
        else:
            if words[i] not in ACK_FILLERS:
                return False
            i += 1
    return found


# ---- requests to be contacted ----------------------------------------------------------------

_WHO = (
    r"(?:(?:a|an|the|my|your|some|real|actual)\s+)*"
    r"(?:nurse|nurses|doctor|doctors|dr|doc|physician|provider|clinician|staff|person|human|"
    r"someone|somebody|anyone|anybody|people|you|u|clinic|office|team)"
)
_QUIEN = (
    r"(?:(?:un|una|el|la|mi|alguna?|algun)\s+)*"
    r"(?:enfermer[oa]s?|doctor(?:a|es)?|medic[oa]s?|alguien|persona|usted|ustedes|clinica)"
)
_CALLBACK = re.compile(
    "|".join(
        (
            # "call me", "call me back", "please ring me", "phone us", "call my cell"
            r"\b(?:call|ring|phone)\s+(?:me|us)\b",
            r"\bcall\s+back\b|\bcallback\b|\bcall\s+my\s+(?:cell|phone|number|mobile|house|home)\b",
            r"\bgive\s+me\s+a\s+(?:call|ring)\b",
            r"\b(?:get|need|want|like|have|request|requesting)\s+a\s+(?:phone\s+)?call\b",
            # "can someone call", "have the nurse call", "a doctor to call"
            r"\b(?:someone|somebody|anyone|anybody|nurse|doctor|dr|clinic|office)\s+"
            r"(?:please\s+)?(?:to\s+)?(?:call|phone|ring|contact)\b",
            # "I need to talk to a nurse", "can I speak with someone", "talk to my doctor"
            rf"\b(?:talk|speak|speaking|talking)\s+(?:to|with)\s+{_WHO}\b",
            r"\b(?:contact|reach)\s+me\b",
            r"\b(?:someone|somebody|anyone|anybody)\s+(?:i|we)\s+(?:can|could)\s+(?:talk|speak)\b",
            # "I need to see a doctor", "can I make an appointment": the clinic must get in touch
            rf"\b(?:need|want|like)\s+to\s+see\s+{_WHO}\b",
            r"\b(?:make|book|get|schedule|need|want|like)\s+an?\s+(?:appointment|appt|visit)\b",
            r"\b(?:quiero|necesito|hacer|sacar|pedir|agendar)\s+una\s+(?:cita|consulta)\b",
            rf"\b(?:necesito|quiero)\s+ver\s+a\s+{_QUIEN}\b",
            # "llámenme", "llámame", "pueden llamarme", "me pueden llamar", "que me llamen"
            r"\b(?:llam|marc)(?:enme|eme|ame|arme)\b",
            r"\bme\s+(?:pueden|puede|podrian|podria|puedes|podrias)\s+(?:llamar|marcar|contactar)\b",
            r"\bme\s+llamen?\b",
            r"\b(?:devolver|devuelvan|devuelva)(?:me)?\s+(?:la\s+)?llamada\b",
            r"\b(?:quiero|necesito|pido|solicito)\s+una\s+llamada\b",
            # "necesito hablar con una enfermera", "quiero hablar con el doctor"
            rf"\b(?:hablar|platicar|comunicarme)\s+con\s+{_QUIEN}\b",
            r"\b(?:comuniquense|comuniquese|contactenme|contacteme|marquenme|marqueme)\b",
        )
    )
)
# A negation in the same clause, up to 3 words before the request, undoes it: "don't call
# me", "no need to call me", "no me llamen", "no quiero que me llamen".
_CALLBACK_NEGATORS = frozenset(
    "dont not never no stop quit without nunca ni tampoco cant wont shouldnt".split()
)
_CLAUSES = re.compile(r"[.,;:!?¡¿\n()\[\]]+")


def asks_callback(text: str) -> bool:
    """True when `text` asks to be contacted by a person: "can someone call me", "please call
    me", "I need to talk to a nurse", "call me back", "llámenme por favor", "necesito hablar
    con una enfermera". Never for a negated request ("don't call me", "no me llamen": those are
    opt-outs) nor for the patient saying they will call ("I'll call you tomorrow")."""
    if not isinstance(text, str) or not text:
        return False
    for clause in _CLAUSES.split(text):
        normalized = normalize(clause)
        for match in _CALLBACK.finditer(normalized):
            before = normalized[: match.start()].split()[-3:]
            if not _CALLBACK_NEGATORS.intersection(before):
                return True
    return False


# ---- symptom reports -------------------------------------------------------------------------

_SYMPTOMS = re.compile(
    r"\b(?:"
    + "|".join(
        (
            # English
            r"pain|pains|painful|hurt|hurts|hurting|ache|aches|achy|aching|sore|soreness",
            r"worse|worsening|worst|numb|numbness|tingl(?:e|es|ing|y)|pins\s+and\s+needles",
            r"weak|weakness|(?:cant|cannot|can\s+not)\s+(?:feel|move|walk|stand|sleep|pee|breathe)",
            r"fever|feverish|chills?|sweats?|sweating|bladder|bowels?|pee|peeing|urin\w*",
            r"incontinen\w*|wet\s+myself|poop\w*|chest|breath|breathe|breathing|breathless",
            r"dizzy|dizziness|faint\w*|fell|injur\w*|accident|swell\w*|swollen|lump",
            r"weight\s+loss|lost\s+weight|vomit\w*|spasms?|stiff|stiffness|throbbing|burning",
            r"shooting|emergency|hospital|ambulance|911|bleed\w*|blood|cancer|tumou?r",
            r"agony|unbearable|excruciating|sick(?!\s+(?:of|and\s+tired))|unwell",
            r"feel(?:s|ing)?\s+(?:terrible|awful|bad|horrible|worse)",
            r"not\s+feeling\s+(?:well|good|great)",
            r"suicid\w*|kill\s+myself|end\s+my\s+life|want\s+to\s+die|hurt\s+myself|end\s+it\s+all",
            # Spanish
            r"dolor|dolores|duele|duelen|dolia|doliendo|adolorid[oa]|peor|empeor\w*",
            r"entumid\w*|entumec\w*|adormec\w*|adormecid[oa]|hormigue\w*|debil|debilidad",
            r"no\s+siento|no\s+puedo\s+(?:mover\w*|caminar|orinar|respirar|dormir|pararme)",
            r"fiebre|calentura|escalofrios?|sudor|sudores|vejiga|orin\w*|intestin\w*|evacuar",
            r"pecho|respirar|falta\s+de\s+aire|mare\w*|desmay\w*|caida|me\s+cai|golpe",
            r"accidente|hinchad[oa]|hinchazon|bulto|perdi\s+peso|espasmos?|rigid[oa]",
            r"urgencias|emergencia|sangr\w*|tumor|matarme|quitarme\s+la\s+vida|morirme",
            r"(?:me\s+siento|estoy|muy)\s+mal|enferm[oa]|se\s+me\s+duerme\w*|insoportable",
        )
    )
    + r")\b"
)


def reports_symptoms(text: str) -> bool:
    """True when `text` tells of symptoms or of the pain, better or worse: "My back is worse
    now", "the pain is getting worse", "me duele más", "I can't feel my legs", "I fell".
    Forgiving on purpose (CLINICAL.md §7: an opted-out patient who writes this raises a
    patient-message alert so staff can call): a false alarm costs a look, a miss costs more.
    Also true for words of self-harm ("I want to die"), which staff must see."""
    return isinstance(text, str) and bool(_SYMPTOMS.search(normalize(text)))
