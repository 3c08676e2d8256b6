"""What a call says and how it listens next, as plain data (the webhook turns it into TwiML,
the simulator prints it), and the words and hints each prompt expects."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

from service.store.models import Clinic

NUMBER_KINDS = ("pain_score", "age", "duration")


# The follow-on path (under /twilio/voice/) that answers each stage's prompt.
STEP_OF_STAGE = {"language": "lang", "question": "answer", "confirm": "confirm",
                 "offer": "offer", "advice": "advice"}


DAYS_WORD = {"en": "days", "es": "días"}


NUMBER_WORDS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve",
           "diez"),
}


# Speech hints: the answers expected at each prompt, so recognition leans towards them.
HINTS = {
    "yes_no": {"en": ("yes", "no", "not sure"), "es": ("sí", "no", "no sé")},
    "status": {"en": ("gone", "better", "the same", "worse"),
               "es": ("se fue", "mejor", "igual", "peor")},
    "pain_score": NUMBER_WORDS,
    "age": {"en": ("years old", "years"), "es": ("años",)},
    "duration": {"en": ("days", "weeks", "months", "a year"),
                 "es": ("días", "semanas", "meses", "un año")},
    "confirm": {"en": ("yes", "no"), "es": ("sí", "no")},
    "language": {"en": ("English", "Spanish", "español"), "es": ("English", "Spanish", "español")},
    "offer": {"en": ("text", "clinic"), "es": ("mensaje", "clínica")},
    "advice": {"en": ("again", "clinic"), "es": ("otra vez", "clínica")},
}


@dataclass(frozen=True)
class Line:
    text: str
    lang: str


@dataclass(frozen=True)
class Listen:
    step: str  # follow-on path under /twilio/voice/: lang | answer | confirm | offer | advice
    lang: str  # the language speech is recognised in
    hints: tuple[str, ...] = ()
    num_digits: int | None = 1  # a menu: one key press is the answer
    finish_on_key: str | None = None  # "#" ends a number
    timeout: int = 5  # seconds of silence before "no input"


@dataclass(frozen=True)
class VoiceReply:
    say: tuple[Line, ...] = ()  # said first; a key press does not cut it short
    prompt: tuple[Line, ...] = ()  # said while listening (or after `say`, when not listening)
    listen: Listen | None = None
    turn: int = 0  # numbers the prompt: the answer's URL carries it, so a stale one is seen
    dial: str | None = None  # connect the caller to this number
    record: bool = False  # record a message for the clinic (after the prompt)
    hangup: bool = False

    def to_dict(self) -> dict:
        return {"say": [[line.text, line.lang] for line in self.say],
                "prompt": [[line.text, line.lang] for line in self.prompt],
                "listen": None if self.listen is None else {
                    **self.listen.__dict__, "hints": list(self.listen.hints)},
                "turn": self.turn, "dial": self.dial, "record": self.record,
                "hangup": self.hangup}

    @classmethod
    def from_dict(cls, data: dict) -> VoiceReply:
        listen = data.get("listen")
        return cls(say=tuple(Line(*line) for line in data.get("say", ())),
                   prompt=tuple(Line(*line) for line in data.get("prompt", ())),
                   listen=Listen(**{**listen, "hints": tuple(listen["hints"])}) if listen else None,
                   turn=data.get("turn", 0), dial=data.get("dial"),
                   record=data.get("record", False), hangup=data.get("hangup", False))

    @property
    def lines(self) -> tuple[Line, ...]:
        return self.say + self.prompt


def spell_number(number: str) -> str:
    """A phone number as it should be spoken: "+16175550100" -> "6 1 7, 5 5 5, 0 1 0 0"."""
    groups: list[str] = []
    try:
        parsed = phonenumbers.parse(number, "US")
        national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        groups = re.findall(r"\d+", national)
    except phonenumbers.NumberParseException:
        pass
    if not groups or len(re.sub(r"\D", "", number)) <= 4:  # short codes such as 911
        groups = [re.sub(r"\D", "", number)]
    return ", ".join(" ".join(group) for group in groups if group)


def speakable(text: str, clinic: Clinic) -> str:
    """Phone numbers read digit by digit ("9 1 1", not "nine hundred eleven")."""
    for number in sorted({clinic.phone or "", clinic.emergency_number or ""}, key=len,
                         reverse=True):
        if sum(ch.isdigit() for ch in number) >= 3:
            text = text.replace(number, spell_number(number))
    return text

