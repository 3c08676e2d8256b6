"""The one place that knows the control words of the SMS channel (CLINICAL.md §7).

`classify(text)` says whether a message is a control word rather than an answer: opt-out
("stop"), opt-in ("start"), "help", "restart", or a language switch. Opt-out is checked
first and is the most forgiving: the US FCC rule of 2025 lets a patient revoke consent "in
any reasonable manner". A text is an opt-out (`is_opt_out`) when

- every word in it is an opt-out word (OPT_OUT_WORDS, a stop emoji such as 🛑, or "no more")
  or a filler or emphasis word from the closed list OPT_OUT_FILLERS, in any case and with any
  punctuation: "STOP!!", "NO STOP", "I said stop", "just stop", "stop it", "stop stop stop",
  "i want to stop", "para por favor", "basta ya", "no más", "🛑"; or
- it holds a plain request anywhere ("please stop texting me", "don't text me", "no más
  mensajes", "unsubscribe me"), unless it is negated ("please don't stop texting me").

It is also careful: a longer text that uses an opt-out word in another sense ("my pain won't
end", "cancel my appointment", "I can't stop the pain", "para mí es peor") is not an opt-out;
`opt_out_reading` calls it "other_sense" (`mentions_opt_out_word`), and flows.reading never
reads it as an answer. A Spanish "no" right before "para" / "parar" / "quiero" is a negation,
not emphasis ("no para de doler", "no para": it does not stop), unless punctuation parts them
("No. Para"); so is an "it" / "this" / "that" before the word, its subject ("I want it to
stop" speaks of the pain; "stop it" is an opt-out). Idioms whose word only looks like one are
not counted: "non-stop", "para nada".

Everything else must be the whole message (case, accents, punctuation and a "please" / "por
favor" around it do not matter).

Pure functions: no I/O; no function raises on any str input.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from flows.parsing import normalize

__all__ = [
    "HELP_WORDS",
    "LANG_EN_WORDS",
    "LANG_ES_WORDS",
    "OPT_OUT_FILLERS",
    "OPT_OUT_TOKENS",
    "OPT_OUT_WORDS",
    "RESTART_WORDS",
    "START_WORDS",
    "STOP_EMOJI",
    "TWILIO_OPT_IN_WORDS",
    "TWILIO_OPT_OUT_WORDS",
    "WHOLE_ONLY_OPT_OUT_WORDS",
    "classify",
    "is_opt_out",
    "is_start_keyword",
    "is_twilio_opt_in",
    "is_twilio_opt_out",
    "mentions_opt_out_word",
    "opt_out_reading",
]

# Whole-message keywords, as a patient would type them; matching is on normalize(word).
OPT_OUT_WORDS = (
    "STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
    "OPT OUT", "OPT-OUT", "ALTO", "PARAR", "PARA", "BASTA", "CANCELAR", "NO MÁS",
)  # fmt: skip
# Emoji that say stop; each counts as the word STOP.
STOP_EMOJI = ("🛑", "⛔", "🚫", "✋", "🤚", "📵", "🔕")
# Opt-outs only as a whole message with fillers ("no more please"): inside a longer text they
# are ordinary words ("no more pain" is an answer, not a use of an opt-out word).
WHOLE_ONLY_OPT_OUT_WORDS = ("NO MORE", "UNSUB")
# The closed list of filler and emphasis words an opt-out may have around it ("no stop", "I
# said stop already", "please just stop it now", "stop texting me", "para ya por favor").
# No negation is in it ("don't stop" is no opt-out) and no word about health.
OPT_OUT_FILLERS = frozenset(
    """
    no nope nah yes yeah yep ok okay k kk alright please pls plz now right away already just
    i im id said say saying told tell you u ya it this that these those them all the me us
    we texting texts text txt txts txting messages message msgs msg msging sms messaging
    thanks thank thx ty want
    wanna to would like need really seriously immediately asap again do god omg ugh hey hi
    hello sir maam man dude guys for good forever permanently completely totally everything
    anymore any more of so well oh and then fucking freaking damn can could will lets how
    enough thats
    si por favor porfa porfavor xfa plis gracias oye senor senora ahora mismo ahorita dije
    digo te le les mensajes mensaje textos todo todos quiero deseo de una vez serio dios pues
    y
    """.split()
)
START_WORDS = ("START", "UNSTOP")
HELP_WORDS = ("HELP", "INFO", "AYUDA")
RESTART_WORDS = (
    "RESTART",
    "START OVER",
    "REINICIAR",
    "EMPEZAR DE NUEVO",
    "COMENZAR DE NUEVO",
    "VOLVER A EMPEZAR",
)
LANG_ES_WORDS = ("ESPAÑOL", "ESPANOL", "SPANISH", "EN ESPAÑOL", "CASTELLANO")
LANG_EN_WORDS = ("ENGLISH", "INGLÉS", "INGLES", "IN ENGLISH", "EN INGLÉS")

# Twilio's own default opt-out keywords (long codes and Messaging Services). Twilio acts only
# on a message that is one of these single words; "STOP PLEASE" or "OPT OUT" it lets through.
TWILIO_OPT_OUT_WORDS = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
)

_WHOLE = {
    normalize(word): word_class
    for word_class, words in (
        ("stop", OPT_OUT_WORDS),
        ("start", START_WORDS),
        ("help", HELP_WORDS),
        ("restart", RESTART_WORDS),
        ("lang_es", LANG_ES_WORDS),
        ("lang_en", LANG_EN_WORDS),
    )
    for word in words
}
# And its default opt-in keywords, which it answers with its own confirmation.
TWILIO_OPT_IN_WORDS = ("START", "YES", "UNSTOP")

_TWILIO = frozenset(normalize(word) for word in TWILIO_OPT_OUT_WORDS)
_TWILIO_IN = frozenset(normalize(word) for word in TWILIO_OPT_IN_WORDS)

# Courtesy words allowed around a whole-message keyword: "STOP please", "basta ya".
_COURTESY = frozenset(
    "please pls plz now thanks thank you thx ty ok okay por favor gracias ya".split()
)

_MEDIA = (
    r"(?:texts?|txts?|text\s+messages?|messages?|msgs?|sms|calls?|reminders?|notifications?|emails?"
    r"|alerts?|updates?|check\s*ins?|checkins?|subscriptions?)"
)
_VERB_ES = r"(?:enviar|mandar|escribir|contactar|llamar|molestar|textear)\w*"
_STOP_VERBS_EN = frozenset("stop quit cease end cancel".split())
_STOP_VERBS_ES = frozenset("deja dejen deje dejar para paren pare parar".split())
_PLAIN_REQUESTS = re.compile(
    "|".join(
        (
            # "stop texting me", "stop sending me messages", "please stop the texts"
            r"\b(?:stop|quit|cease|end|cancel)\s+(?:texting|txting|texing|messaging|msging|msgng"
            r"|contacting|calling|emailing|bothering|spamming)\b",
            rf"\b(?:stop|quit|cease|end|cancel)\s+sending(?:$|\s+(?:me|us|them|these|those|this"
            rf"|any|more|{_MEDIA})\b)",
            rf"\b(?:stop|quit|cease|end|cancel)\s+(?:(?:all|the|these|those|this|your|my|of)\s+)*"
            rf"(?:more\s+)?{_MEDIA}\b",
            # "I want to stop getting these texts"
            rf"\b(?:stop|quit|cease)\s+(?:receiving|getting)\s+"
            rf"(?:(?:these|those|the|your|any|all|of|more)\s+)*{_MEDIA}\b",
            # "don't text me anymore", "do not contact me", "never message me again"
            r"\b(?:dont|do\s+not|never)\s+(?:text|message|msg|contact|call|sms|email|bother)"
            r"\s+(?:me|us|this\s+number)\b",
            rf"\b(?:dont|do\s+not|never)\s+send\s+(?:me\s+|us\s+)?(?:any\s*more\s+|more\s+|any\s+"
            rf"|these\s+|the\s+)?{_MEDIA}\b",
            rf"\b(?:dont|do\s+not|no\s+longer)\s+want\s+(?:to\s+(?:get|receive)\s+)?"
            rf"(?:any\s+|these\s+|those\s+|your\s+|the\s+)?(?:more\s+)?{_MEDIA}\b",
            r"\b(?:dont|do\s+not|no\s+longer)\s+want\s+to\s+be\s+(?:contacted|texted|messaged)\b",
            r"\b(?:dont|do\s+not)\s+want\s+(?:you|anyone|u)\s+to\s+(?:text|message|contact|call)"
            r"\s+(?:me|us)\b",
            # "no more texts", "unsubscribe me", "remove me from this list", "opt me out"
            rf"\bno\s+more\s+{_MEDIA}\b",
            r"\b(?:unsubscribe|optout|stopall)\b",
            r"\bopt\s+(?:me\s+)?out\b",
            r"\brevoke\s+(?:my\s+)?consent\b",
            r"\b(?:remove|delete)\s+(?:me|my\s+number)\b",
            r"\btake\s+me\s+off\b",
            rf"\bi\s+want\s+out\b(?!\s+of)|\bwant\s+out\s+of\s+(?:this|these|the|your)\s+"
            rf"(?:list|program|{_MEDIA})\b",
            r"\bleave\s+me\s+alone\b",
            # "deja de enviarme mensajes", "no me mandes más mensajes", "no quiero más mensajes"
            rf"\b(?:deja|dejen|deje|dejar|para|paren|pare|parar)\s+de\s+{_VERB_ES}",
            r"\bno\s+(?:me\s+|nos\s+)?(?:mandes|manden|mande|envies|envien|envie|escribas"
            r"|escriban|escriba|contactes|contacten|contacte|llames|llamen|molestes|molesten"
            r"|moleste)\b",
            r"\bno\s+(?:quiero|deseo)\s+(?:recibir\s+)?(?:mas\s+)?(?:sus\s+|estos\s+|los\s+)?"
            r"(?:mensajes|textos|sms|llamadas)\b",
            r"\bno\s+mas\s+(?:mensajes|textos|sms|llamadas)\b",
            r"\bno\s+(?:quiero|deseo)\s+que\s+me\s+(?:llamen|llames|escriban|escribas|manden"
            r"|mandes|envien|envies|contacten|contactes|molesten|molestes)\b",
            r"\b(?:dar|darme|dame|denme|deme|me\s+doy|me\s+quiero\s+dar)\s+de\s+baja\b",
            r"\b(?:quitame|quitenme|sacame|saquenme|borrame|borrenme|eliminame|elimineme)\b",
            r"\b(?:dejame|dejenme|dejeme)\s+en\s+paz\b",
        )
    )
)


def _phrase(word: str) -> tuple[str, ...]:
    return tuple(normalize(word).split())


# Opt-out words as normalized words: "stop", "para", ("opt", "out"), ("no", "mas"), ...
_OPT_OUT_PHRASES = frozenset(_phrase(word) for word in OPT_OUT_WORDS)
_WHOLE_ONLY_PHRASES = frozenset(_phrase(word) for word in WHOLE_ONLY_OPT_OUT_WORDS)
OPT_OUT_TOKENS = frozenset(
    word for phrase in _OPT_OUT_PHRASES for word in phrase if len(phrase) == 1
)
_STOP_TOKEN = "stop"
# Idioms whose word only looks like an opt-out word: "non-stop pain", "para nada" (not at all).
_IDIOMS = (("non", "stop"), ("para", "nada"))
# Stands for an idiom's words (normalize never makes "_"): no filler, no opt-out word.
_IDIOM_MASK = "_"
# "it" / "this" / "that" before an opt-out word is what stops, not emphasis: "I want it to
# stop", "I wish it would end" speak of the pain; "stop it" is an opt-out.
_SUBJECTS = frozenset("it this that".split())
_BETWEEN_SUBJECT = frozenset("to would will can could just please already ever".split())
# A Spanish "no" right before these is a negation, not emphasis: "no para" (it does not stop),
# "no quiero parar" (I do not want to stop). Checked on the text with its punctuation kept.
_NEGATING_NO = re.compile(r"(?<!\w)no\s+(?:para|parar|quiero|deseo)(?!\w)")
_NEGATORS = frozenset("dont not never cant wont shouldnt couldnt wouldnt didnt doesnt".split())


_WORD = re.compile(r"[^\W_]+")  # letters and digits: "stop/end" and "alto-7" are two words


def _spelled(text: object) -> str:
    """The normalized text, a stop emoji read as the word "stop" ("🛑 help" is no "help")."""
    if not isinstance(text, str) or not text:
        return ""
    for emoji in STOP_EMOJI:
        if emoji in text:
            text = text.replace(emoji, f" {_STOP_TOKEN} ")
    return normalize(text)


def _words(text: object) -> list[str]:
    """The words of `text` as the opt-out reading sees them: normalized, a stop emoji read as
    "stop", the idioms masked."""
    words = _WORD.findall(_spelled(text))
    for idiom in _IDIOMS:
        size = len(idiom)
        for i in range(len(words) - size + 1):
            if tuple(words[i : i + size]) == idiom:
                words[i : i + size] = [_IDIOM_MASK] * size
    return words


def _folded(text: str) -> str:
    """Lower case without accents, punctuation kept."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _only_opt_out_and_fillers(words: Sequence[str]) -> bool:
    """True when every word is an opt-out word or a filler, and one at least is an opt-out."""
    found = False
    subject = False  # an "it" / "this" / "that" (and only linking words) since
    i = 0
    while i < len(words):
        pair = tuple(words[i : i + 2])
        size = (
            2 if len(pair) == 2 and (pair in _OPT_OUT_PHRASES or pair in _WHOLE_ONLY_PHRASES) else 1
        )
        if size == 2 or (words[i],) in _OPT_OUT_PHRASES or (words[i],) in _WHOLE_ONLY_PHRASES:
            if subject:
                return False  # "I want it to stop": the pain, not the texts
            found, i = True, i + size
        elif words[i] in OPT_OUT_FILLERS:
            subject = words[i] in _SUBJECTS or (subject and words[i] in _BETWEEN_SUBJECT)
            i += 1
        else:
            return False
    return found


def _plain_request(normalized: str) -> bool:
    """A plain request to stop anywhere in the text, not negated ("please don't stop texting
    me" asks the opposite)."""
    for match in _PLAIN_REQUESTS.finditer(normalized):
        before = normalized[: match.start()].split()[-1:]
        first = match.group(0).split()[0]
        if before and first in _STOP_VERBS_EN and before[0] in _NEGATORS:
            continue
        if before and first in _STOP_VERBS_ES and before[0] == "no":
            continue  # "no dejen de escribirme": do not stop writing to me
        return True
    return False


def is_opt_out(text: str) -> bool:
    """True when `text` asks to stop all messages (see the module docstring): as a whole, or
    in its last sentence ("who is this? STOP", "my pain won't end. Stop."), or an opt-out word
    with a wrong number ("STOP you have the wrong number", "Stop, wrong number"). Consent may
    be revoked in any reasonable manner (CLINICAL.md §7): a STOP given with its reason is
    still a STOP. A first sentence "Stop." followed by more ("Stop. My back hurts more
    today") stays an exclamation in another sense."""
    if _opt_out_as_a_whole(text):
        return True
    if not isinstance(text, str):
        return False
    sentences = [part for part in _SENTENCE_BREAK.split(text) if part.strip()]
    if len(sentences) > 1 and _opt_out_as_a_whole(sentences[-1]):
        return True
    return bool(_WRONG_NUMBER.search(_folded(text))) and mentions_opt_out_word(text)


# Where one sentence of a text ends: "Stop, wrong number", "who is this? stop".
_SENTENCE_BREAK = re.compile(r"[.,;:!?¡¿\n]+")
_WRONG_NUMBER = re.compile(r"(?<!\w)(?:wrong (?:number|person)|numero equivocado|"
                           r"no soy (?:yo|esa persona|ese paciente))(?!\w)")


def _opt_out_as_a_whole(text: str) -> bool:
    words = _words(text)
    if not words:
        return False
    if _only_opt_out_and_fillers(words) and not _NEGATING_NO.search(_folded(text)):
        return True
    return _plain_request(" ".join(word for word in words if word != _IDIOM_MASK))


def mentions_opt_out_word(text: str) -> bool:
    """True when an opt-out word (or stop emoji) is anywhere in `text`, in whatever sense:
    "cancel my appointment", "para mí es peor", "the end of my back". Not "no more", which
    counts only as a whole message, nor the idioms "non-stop" and "para nada"."""
    words = _words(text)
    return any(
        (word,) in _OPT_OUT_PHRASES or tuple(words[i : i + 2]) in _OPT_OUT_PHRASES
        for i, word in enumerate(words)
    )


def opt_out_reading(text: str) -> str | None:
    """ "opt_out" for an opt-out; "other_sense" for a text that uses an opt-out word otherwise
    ("my pain won't end"); None for a text with no opt-out word."""
    if is_opt_out(text):
        return "opt_out"
    if mentions_opt_out_word(text):
        return "other_sense"
    return None


def _core(normalized: str) -> str:
    """The message without courtesy words around it, and a keyword said twice said once."""
    words = normalized.split()
    while words and words[0] in _COURTESY:
        words.pop(0)
    while words and words[-1] in _COURTESY:
        words.pop()
    if len(words) > 1 and len(set(words)) == 1:  # "stop stop stop"
        words = words[:1]
    return " ".join(words)


def classify(text: str) -> str | None:
    """The control word `text` is: "stop", "start", "help", "restart", "lang_es", "lang_en",
    or None when it is not one (an answer, or any other message)."""
    if is_opt_out(text):
        return "stop"
    normalized = _spelled(text)
    if not normalized:
        return None
    word = _WHOLE.get(_core(normalized))
    return None if word == "stop" else word  # "no para": an opt-out word, not an opt-out


def is_twilio_opt_out(text: str) -> bool:
    """True when Twilio's own opt-out handling (when on for the number) also acted on `text`.

    The webhook's OptOutType says this authoritatively when present; this is for the case
    where it is absent. Case, surrounding whitespace and punctuation are ignored.
    """
    return normalize(text) in _TWILIO


def is_twilio_opt_in(text: str) -> bool:
    """True when Twilio's own opt-out handling (when on) also answered `text` as an opt-in; as
    with `is_twilio_opt_out`, OptOutType=START says so authoritatively when present."""
    return normalize(text) in _TWILIO_IN


def is_start_keyword(text: str, clinic_keywords: Sequence[str]) -> bool:
    """True when the whole message is one of the clinic's start keywords ("PAIN", "Dolor!")."""
    normalized = _spelled(text)  # "🛑 pain" is no start keyword
    if not normalized or not clinic_keywords or isinstance(clinic_keywords, str):
        return False
    return any(
        isinstance(keyword, str) and normalize(keyword) == normalized for keyword in clinic_keywords
    )
