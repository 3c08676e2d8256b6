"""The one place that knows the control words of the SMS channel (CLINICAL.md §7).

`classify(text)` says whether a message is a control word rather than an answer: opt-out
("stop"), opt-in ("start"), "help", "restart", or a language switch. Opt-out is checked
first and is the most forgiving: the US FCC rule of 2025 lets a patient revoke consent "in
any reasonable manner", so plain requests such as "please stop texting me" count too. It is
also careful: an answer about the pain ("no", "the pain won't stop", "it doesn't stop
hurting") is never an opt-out. Everything else must be the whole message (case, accents,
punctuation and a "please" / "por favor" around it do not matter).

Pure functions: no I/O; no function raises on any str input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from flows.parsing import normalize

__all__ = [
    "HELP_WORDS",
    "LANG_EN_WORDS",
    "LANG_ES_WORDS",
    "OPT_OUT_WORDS",
    "RESTART_WORDS",
    "START_WORDS",
    "TWILIO_OPT_IN_WORDS",
    "TWILIO_OPT_OUT_WORDS",
    "classify",
    "is_start_keyword",
    "is_twilio_opt_in",
    "is_twilio_opt_out",
]

# Whole-message keywords, as a patient would type them; matching is on normalize(word).
OPT_OUT_WORDS = (
    "STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
    "OPT OUT", "OPT-OUT", "ALTO", "PARAR", "BASTA", "CANCELAR",
)  # fmt: skip
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

_MEDIA = r"(?:texts?|text\s+messages?|messages?|msgs?|sms|calls?|reminders?|notifications?|emails?)"
_VERB_ES = r"(?:enviar|mandar|escribir|contactar|llamar|molestar|textear)\w*"
_PLAIN_REQUESTS = re.compile(
    "|".join(
        (
            # "stop texting me", "stop sending me messages", "please stop the texts"
            r"\b(?:stop|quit|cease|end|cancel)\s+(?:texting|messaging|contacting|calling|emailing"
            r"|bothering|spamming)\b",
            rf"\b(?:stop|quit|cease|end|cancel)\s+sending(?:$|\s+(?:me|us|them|these|those|this"
            rf"|any|more|{_MEDIA})\b)",
            rf"\b(?:stop|quit|cease|end|cancel)\s+(?:(?:all|the|these|those|this|your|my|of)\s+)*"
            rf"(?:more\s+)?{_MEDIA}\b",
            # "don't text me anymore", "do not contact me", "never message me again"
            r"\b(?:dont|do\s+not|never)\s+(?:text|message|msg|contact|call|sms|email|bother)"
            r"\s+(?:me|us|this\s+number)\b",
            rf"\b(?:dont|do\s+not|never)\s+send\s+(?:me\s+|us\s+)?(?:any\s*more\s+|more\s+|any\s+"
            rf"|these\s+|the\s+)?{_MEDIA}\b",
            rf"\b(?:dont|do\s+not|no\s+longer)\s+want\s+(?:to\s+(?:get|receive)\s+)?"
            rf"(?:any\s+|these\s+|those\s+|your\s+|the\s+)?(?:more\s+)?{_MEDIA}\b",
            r"\b(?:dont|do\s+not|no\s+longer)\s+want\s+to\s+be\s+(?:contacted|texted|messaged)\b",
            # "no more texts", "unsubscribe me", "remove me from this list", "opt me out"
            rf"\bno\s+more\s+{_MEDIA}\b",
            r"\b(?:unsubscribe|optout|stopall)\b",
            r"\bopt\s+(?:me\s+)?out\b",
            r"\brevoke\s+(?:my\s+)?consent\b",
            r"\b(?:remove|delete)\s+(?:me|my\s+number)\b",
            r"\btake\s+me\s+off\b",
            r"\bleave\s+me\s+alone\b",
            # "deja de enviarme mensajes", "no me mandes más mensajes", "no quiero más mensajes"
            rf"\b(?:deja|dejen|deje|dejar)\s+de\s+{_VERB_ES}",
            r"\bno\s+(?:me\s+|nos\s+)?(?:mandes|manden|mande|envies|envien|envie|escribas"
            r"|escriban|escriba|contactes|contacten|contacte|llames|llamen|molestes|molesten"
            r"|moleste)\b",
            r"\bno\s+(?:quiero|deseo)\s+(?:recibir\s+)?(?:mas\s+)?(?:sus\s+|estos\s+|los\s+)?"
            r"(?:mensajes|textos|sms|llamadas)\b",
            r"\bno\s+mas\s+(?:mensajes|textos|sms|llamadas)\b",
            r"\b(?:dar|darme|dame|denme|deme|me\s+doy|me\s+quiero\s+dar)\s+de\s+baja\b",
            r"\b(?:quitame|quitenme|sacame|saquenme|borrame|borrenme|eliminame|elimineme)\b",
            r"\b(?:dejame|dejenme|dejeme)\s+en\s+paz\b",
        )
    )
)


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
    normalized = normalize(text)
    if not normalized:
        return None
    core = _core(normalized)
    if _WHOLE.get(core) == "stop" or _PLAIN_REQUESTS.search(normalized):
        return "stop"
    return _WHOLE.get(core)


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
    normalized = normalize(text)
    if not normalized or not clinic_keywords or isinstance(clinic_keywords, str):
        return False
    return any(
        isinstance(keyword, str) and normalize(keyword) == normalized for keyword in clinic_keywords
    )
