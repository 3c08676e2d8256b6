"""Voice check-ins and reminder calls: the use cases behind /twilio/voice and the simulator.

One function per request of a call. Each runs in the caller's transaction: it finds the call by
Twilio's CallSid, runs the same engine through the same check-in internals as SMS
(`service.conversations.checkins`), persists every answer at once (a caller who hangs up early loses
nothing), and returns a `VoiceReply`: what to say and how to listen next, as plain data that the
webhook turns into TwiML and the simulator prints.

A number typed on the keypad or spoken is read back before it counts ("You pressed 1 0. Press 1
if that is right"), so a "1" sent by a pause is never taken for "10". No input twice offers to
finish by text or to talk to the clinic; a call that ends unfinished moves its check-in to SMS,
where the engine's wait timeout still applies (then INCOMPLETE, with its alert).

Reminder calls (the follow-up's 48-hour no-reply step) are rows first: `request_reminder_call`
writes one, `place_call` claims it and places it through a `service.voice.callers.Caller`, and a
busy / no-answer / failed status writes the next attempt (at most `MAX_ATTEMPTS`), each inside
the patient's allowed hours.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.orm import Session

from flows import engine, keywords, parsing
from flows.loader import get_flow, messages
from service.conversations import checkins
from service.logs import mask_phone
from service.messaging import outbox, quiet_hours
from service.messaging.senders import SendError
from service.phones import normalize_phone
from service.store.models import Call, CheckIn, Clinic, FollowUp, Message, Patient
from service.voice.callers import Caller, PlacedCall

log = logging.getLogger(__name__)

NUMBER_KINDS = ("pain_score", "age", "duration")
MACHINE = ("machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax")
FINAL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
RETRY_STATUSES = ("busy", "no-answer", "failed")
# Later states win; a callback for an earlier state that arrives late changes nothing.
STATUS_RANK = {"pending": 0, "placing": 0, "unknown": 0, "queued": 1, "initiated": 2,
               "ringing": 3, "in-progress": 4, "answered": 4, **dict.fromkeys(FINAL_STATUSES, 5)}

MAX_ATTEMPTS = 3  # a reminder call and up to two more tries
RETRY_AFTER = timedelta(hours=1)
REMINDER_CALL_AFTER = timedelta(hours=48)  # a follow-up with no reply this long gets a call
TRANSIENT_RETRY = timedelta(minutes=5)  # Twilio said 429/5xx: place the same attempt again
LEASE = timedelta(minutes=2)

# The follow-on path (under /twilio/voice/) that answers each stage's prompt.
STEP_OF_STAGE = {"language": "lang", "question": "answer", "confirm": "confirm",
                 "offer": "offer", "advice": "advice"}
DAYS_WORD = {"en": "days", "es": "días"}

_NUMBER_WORDS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve",
           "diez"),
}
# Speech hints: the answers expected at each prompt, so recognition leans towards them.
HINTS = {
    "yes_no": {"en": ("yes", "no", "not sure"), "es": ("sí", "no", "no sé")},
    "status": {"en": ("gone", "better", "the same", "worse"),
               "es": ("se fue", "mejor", "igual", "peor")},
    "pain_score": _NUMBER_WORDS,
    "age": {"en": ("years old", "years"), "es": ("años",)},
    "duration": {"en": ("days", "weeks", "months", "a year"),
                 "es": ("días", "semanas", "meses", "un año")},
    "confirm": {"en": ("yes", "no"), "es": ("sí", "no")},
    "language": {"en": ("English", "Spanish", "español"), "es": ("English", "Spanish", "español")},
    "offer": {"en": ("text", "clinic"), "es": ("mensaje", "clínica")},
    "advice": {"en": ("again", "clinic"), "es": ("otra vez", "clínica")},
}
_TEXT_WORDS = frozenset("text texto mensaje message sms".split())
_CLINIC_WORDS = frozenset("clinic clinica doctor nurse talk hablar person persona".split())
_AGAIN_WORDS = frozenset("again repeat otra vez repetir repita".split())


# ---- what to say and how to listen --------------------------------------------------------


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
    hangup: bool = False

    def to_dict(self) -> dict:
        return {"say": [[line.text, line.lang] for line in self.say],
                "prompt": [[line.text, line.lang] for line in self.prompt],
                "listen": None if self.listen is None else {
                    **self.listen.__dict__, "hints": list(self.listen.hints)},
                "turn": self.turn, "dial": self.dial, "hangup": self.hangup}

    @classmethod
    def from_dict(cls, data: dict) -> VoiceReply:
        listen = data.get("listen")
        return cls(say=tuple(Line(*line) for line in data.get("say", ())),
                   prompt=tuple(Line(*line) for line in data.get("prompt", ())),
                   listen=Listen(**{**listen, "hints": tuple(listen["hints"])}) if listen else None,
                   turn=data.get("turn", 0), dial=data.get("dial"),
                   hangup=data.get("hangup", False))

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


# ---- the call's context -------------------------------------------------------------------


@dataclass
class _Ctx:
    call: Call
    clinic: Clinic
    patient: Patient | None
    checkin: CheckIn | None
    now: datetime

    @property
    def lang(self) -> str:
        if self.checkin is not None and self.checkin.status == "active":
            return self.checkin.state.get("lang", self.call.language)
        return self.call.language


def _line(ctx: _Ctx, text: str, lang: str | None = None) -> Line:
    return Line(speakable(text, ctx.clinic), lang or ctx.lang)


def _t(ctx: _Ctx, key: str, lang: str | None = None, **extra) -> Line:
    lang = lang or ctx.lang
    return _line(ctx, checkins.text_for(key, ctx.clinic, lang, **extra), lang)


def _call_by_sid(session: Session, call_sid: str) -> Call | None:
    if not call_sid:
        return None
    return session.execute(sa.select(Call).where(Call.call_sid == call_sid)
                           .with_for_update()).scalar_one_or_none()


def _lock_patient(session: Session, patient_id: int | None) -> Patient | None:
    if patient_id is None:
        return None
    return session.execute(sa.select(Patient).where(Patient.id == patient_id)
                           .with_for_update()).scalar_one_or_none()


def _context(session: Session, call: Call, now: datetime) -> _Ctx:
    # The call first, then the patient: every voice request takes its locks in this order.
    patient = _lock_patient(session, call.patient_id)
    checkin = session.get(CheckIn, call.checkin_id) if call.checkin_id else None
    return _Ctx(call, session.get(Clinic, call.clinic_id), patient, checkin, now)


def _load(session: Session, call_sid: str, now: datetime) -> _Ctx | None:
    call = _call_by_sid(session, call_sid)
    return _context(session, call, now) if call is not None else None


def _reply(session: Session, ctx: _Ctx, reply: VoiceReply) -> VoiceReply:
    """Numbers the reply, keeps it for a repeated request, and records what is said."""
    ctx.call.turn += 1
    ctx.call.updated_at = ctx.now
    reply = replace(reply, turn=ctx.call.turn)
    ctx.call.last_reply = reply.to_dict()
    if reply.listen is None:
        ctx.call.stage = "ended"  # the call ends (or goes to the clinic) after this reply
    for line in reply.lines:
        _record(session, ctx, "out", line.text)
    return reply


def _record(session: Session, ctx: _Ctx, direction: str, text: str) -> None:
    """Every utterance of a call is a message of the voice channel, like a text."""
    if not text or ctx.patient is None:
        return
    inbound = ctx.call.direction == "inbound"
    clinic_number = ctx.call.to_number if inbound else ctx.call.from_number
    patient_number = ctx.call.from_number if inbound else ctx.call.to_number
    session.add(Message(
        clinic_id=ctx.clinic.id, patient_id=ctx.patient.id,
        checkin_id=ctx.checkin.id if ctx.checkin is not None else None, direction=direction,
        channel="voice", from_number=patient_number if direction == "in" else clinic_number,
        to_number=clinic_number if direction == "in" else patient_number, body=text[:1600],
        status="received" if direction == "in" else "spoken", created_at=ctx.now))


def _again(ctx: _Ctx) -> VoiceReply:
    """The reply given last: for a request that does not answer the current prompt."""
    if ctx.call.last_reply:
        return VoiceReply.from_dict(ctx.call.last_reply)
    return VoiceReply(hangup=True)


def _heard(session: Session, call_sid: str, stage: str, turn: int | None, heard: str,
           now: datetime) -> _Ctx | VoiceReply:
    """What every answer to a prompt does first: find the call, send a late or repeated
    request the current prompt again, and record what was heard. A VoiceReply means: answer
    with it and stop."""
    ctx = _load(session, call_sid, now)
    if ctx is None:
        return _unknown_call()
    if _stale(ctx, stage, turn):
        return _again(ctx)
    _record(session, ctx, "in", heard)
    ctx.call.silences = 0
    return ctx


def _stale(ctx: _Ctx, stage: str, turn: int | None) -> bool:
    return ctx.call.stage != stage or turn != ctx.call.turn


def _unknown_call() -> VoiceReply:
    return VoiceReply(say=(Line(messages().get("voice.unavailable", "en"), "en"),), hangup=True)


def _can_text(patient: Patient | None) -> bool:
    return (patient is not None and not patient.opted_out and patient.consent == "given"
            and not patient.number_invalid and patient.erased_at is None)


def _can_call(patient: Patient | None) -> bool:
    return (patient is not None and patient.calls_allowed and not patient.opted_out
            and patient.consent == "given" and not patient.number_invalid
            and patient.erased_at is None)


def _dialable(clinic: Clinic) -> bool:
    """The clinic's line can be dialled (and is not one of our own numbers, which would loop)."""
    own = {number.phone_e164 for number in clinic.numbers}
    return bool(clinic.phone) and clinic.phone not in own


def _active(ctx: _Ctx) -> bool:
    return ctx.checkin is not None and ctx.checkin.status == "active"


def _gone(ctx: _Ctx) -> VoiceReply:
    """The check-in ended while the call went on (answered by text, or timed out)."""
    return VoiceReply(say=(_t(ctx, "voice.nothing_due"),), hangup=True)


# ---- inbound and answered calls -----------------------------------------------------------


def answer_call(session: Session, *, call_sid: str, to: str, from_: str, now: datetime,
                answered_by: str | None = None, call_id: int | None = None) -> VoiceReply:
    """POST /twilio/voice: a patient calls the clinic's number, or answers our reminder call."""
    call = _call_by_sid(session, call_sid)
    if call is None and call_id is not None:
        call = session.execute(sa.select(Call).where(Call.id == call_id, Call.direction == "outbound")
                               .with_for_update()).scalar_one_or_none()
        if call is not None and call.call_sid not in (None, call_sid):
            call = None  # that row is another call's
        if call is not None:
            call.call_sid = call_sid  # answered before the placing worker recorded the SID
    if call is not None and call.turn > 0:
        return _again(_context(session, call, now))  # the same webhook again
    if call is None:
        return _answer_inbound(session, call_sid=call_sid, to=to, from_=from_, now=now)
    return _answer_outbound(session, _context(session, call, now), answered_by)


def _answer_inbound(session: Session, *, call_sid: str, to: str, from_: str,
                    now: datetime) -> VoiceReply:
    clinic = checkins.clinic_for_number(session, to)
    if clinic is None:
        log.warning("inbound call %s to a number no clinic owns", call_sid)
        return _unknown_call()
    try:
        phone = normalize_phone(from_)
    except ValueError:
        # A withheld or foreign caller ID: no patient to keep answers for.
        return VoiceReply(say=tuple(
            Line(speakable(checkins.text_for("voice.hidden_number", clinic, lang), clinic), lang)
            for lang in ("en", "es")), hangup=True)
    patient = checkins.lock_patient(session, clinic.id, phone)
    if patient is None:
        # Calling the check-in line asks for a check-in, as texting the start keyword does.
        patient = Patient(clinic_id=clinic.id, phone_e164=phone, language="en", consent="given",
                          consented_at=now, created_at=now)
        session.add(patient)
        session.flush()
        log.info("new patient %s by calling (clinic %s)", mask_phone(phone), clinic.id)
    call = Call(clinic_id=clinic.id, patient_id=patient.id, call_sid=call_sid,
                direction="inbound", purpose="checkin", from_number=phone,
                to_number=normalize_phone(to), status="in-progress",
                stage="language", language=patient.language, created_at=now, updated_at=now)
    session.add(call)
    session.flush()
    ctx = _Ctx(call, clinic, patient, checkins.active_checkin(session, patient.id), now)
    log.info("inbound call %s (clinic %s)", call.id, clinic.id)
    return _reply(session, ctx, _language_menu(ctx))


def _answer_outbound(session: Session, ctx: _Ctx, answered_by: str | None) -> VoiceReply:
    call = ctx.call
    call.answered_by = answered_by or call.answered_by
    if STATUS_RANK.get(call.status, 0) < STATUS_RANK["in-progress"]:
        call.status = "in-progress"
    if answered_by in MACHINE:
        # A voicemail hears who called and how to reach us, never anything about health.
        log.info("call %s reached %s", call.id, answered_by)
        if answered_by == "fax":
            return _reply(session, ctx, VoiceReply(hangup=True))
        lang = ctx.patient.language if ctx.patient else "en"
        return _reply(session, ctx, VoiceReply(say=(_t(ctx, "voice.machine", lang),),
                                               hangup=True))
    if not _active(ctx) or ctx.patient is None or ctx.patient.opted_out:
        return _reply(session, ctx, _gone(ctx))
    return _reply(session, ctx, _language_menu(ctx))


def _language_menu(ctx: _Ctx) -> VoiceReply:
    ctx.call.stage, ctx.call.pending = "language", {}
    lang = ctx.patient.language if ctx.patient else "en"
    return VoiceReply(prompt=(_t(ctx, "voice.language", "en"), _t(ctx, "voice.language", "es")),
                      listen=Listen("lang", lang, HINTS["language"][lang]))


def _language_of(digits: str, speech: str) -> str | None:
    if digits:
        return {"1": "en", "2": "es"}.get(digits)
    word = keywords.classify(speech)
    if word in ("lang_en", "lang_es"):
        return word[-2:]
    tokens = set(parsing.normalize(speech).split())
    en, es = bool(tokens & {"english", "ingles"}), bool(tokens & {"spanish", "espanol"})
    return "en" if en and not es else "es" if es and not en else None


def choose_language(session: Session, *, call_sid: str, turn: int | None, digits: str = "",
                    speech: str = "", now: datetime) -> VoiceReply:
    """POST /twilio/voice/lang: 1 English, 2 español (or said); then the check-in begins."""
    ctx = _heard(session, call_sid, "language", turn, digits or speech, now)
    if isinstance(ctx, VoiceReply):
        return ctx
    lang = _language_of(digits, speech)
    if lang is None:
        tries = ctx.call.pending.get("tries", 0) + 1
        if tries < 2:
            reply = _language_menu(ctx)
            ctx.call.pending = {"tries": tries}
            return _reply(session, ctx, reply)
        lang = ctx.patient.language
    return _reply(session, ctx, _begin(session, ctx, lang))


def _begin(session: Session, ctx: _Ctx, lang: str) -> VoiceReply:
    """The check-in in the chosen language: the one in progress (begun by text or on an earlier
    call), else a new one; first the flow's spoken opening with the disclaimer."""
    patient, now = ctx.patient, ctx.now
    ctx.call.language = lang
    patient.language = lang
    if patient.consent != "given":
        patient.consent, patient.consented_at = "given", now  # they called, or answered and chose
    how = checkins.text_for("voice.how_to_answer", ctx.clinic, lang)
    checkin = checkins.active_checkin(session, patient.id)
    if checkin is not None:
        flow = get_flow(checkin.flow_id, checkin.flow_version)
        checkins.switch_channel(checkin, "voice", lang if lang in flow.languages else None)
        ctx.checkin, ctx.call.checkin_id = checkin, checkin.id
        opening = flow.nodes[flow.start]
        intro = [engine.render(opening.text_for(checkin.language, "voice"),
                               checkin.state["context"], checkin.language)] \
            if opening.kind == "say" else []
        return _ask(ctx, intro + [how] + checkins._repeat_question(checkin))
    kind = "followup" if checkins.open_episode(session, patient.id) is not None else "intake"
    texts = checkins._start(session, ctx.clinic, patient, kind, now, reply=True, channel="voice")
    checkin = checkins.active_checkin(session, patient.id)
    if checkin is None:  # the flow ended at once (nothing left to ask)
        return VoiceReply(say=tuple(_line(ctx, text, lang) for text in texts), hangup=True)
    ctx.checkin, ctx.call.checkin_id = checkin, checkin.id
    return _ask(ctx, texts[:-1] + [how] + texts[-1:])


# ---- questions and answers ----------------------------------------------------------------


def _listen_for(kind: str, lang: str) -> Listen:
    hints = HINTS[kind][lang]
    if kind in NUMBER_KINDS:
        return Listen("answer", lang, hints, num_digits=None, finish_on_key="#", timeout=8)
    return Listen("answer", lang, hints)


def _ask(ctx: _Ctx, texts: list[str]) -> VoiceReply:
    """Says all but the last text, then asks the last one, listening for the current question."""
    checkin = ctx.checkin
    flow = get_flow(checkin.flow_id, checkin.flow_version)
    node = engine.current_question(flow, checkin.state)
    lang = checkin.state["lang"]
    ctx.call.stage, ctx.call.node, ctx.call.pending = "question", node.id, {}
    texts = texts or checkins._repeat_question(checkin)
    return VoiceReply(say=tuple(_line(ctx, text, lang) for text in texts[:-1]),
                      prompt=(_line(ctx, texts[-1], lang),), listen=_listen_for(node.parse, lang))


def _current_node(ctx: _Ctx):
    flow = get_flow(ctx.checkin.flow_id, ctx.checkin.flow_version)
    return engine.current_question(flow, ctx.checkin.state)


def _feed(session: Session, ctx: _Ctx, text: str) -> VoiceReply:
    """One answer through the engine, persisted now; the next question, or the advice."""
    texts = checkins._step(session, ctx.clinic, ctx.patient, ctx.checkin, engine.Reply(text),
                           ctx.now, reply=True)
    if ctx.checkin.status == "active":
        return _ask(ctx, texts)
    log.info("voice check-in %s ended on call %s: %s", ctx.checkin.id, ctx.call.id,
             ctx.checkin.level)
    return _advice(ctx, texts)


def _advice(ctx: _Ctx, texts: list[str]) -> VoiceReply:
    lang = ctx.checkin.language
    ctx.call.stage, ctx.call.node, ctx.call.pending = "advice", None, {"advice": list(texts)}
    options = [_t(ctx, "voice.option.repeat", lang)]
    if _dialable(ctx.clinic):
        options.append(_t(ctx, "voice.option.clinic", lang))
    options.append(_t(ctx, "voice.option.hangup", lang))
    return VoiceReply(say=tuple(_line(ctx, text, lang) for text in texts), prompt=tuple(options),
                      listen=Listen("advice", lang, HINTS["advice"][lang]))


def answer(session: Session, *, call_sid: str, turn: int | None, digits: str = "",
           speech: str = "", now: datetime) -> VoiceReply:
    """POST /twilio/voice/answer: keys or words answering the current question."""
    ctx = _heard(session, call_sid, "question", turn, digits or speech, now)
    if isinstance(ctx, VoiceReply):
        return ctx
    if not _active(ctx):
        return _reply(session, ctx, _gone(ctx))
    if speech and not digits and keywords.classify(speech) == "stop":
        return _reply(session, ctx, _opt_out(session, ctx, speech))
    node = _current_node(ctx)
    if node.id != ctx.call.node:  # the check-in moved on by text meanwhile
        return _reply(session, ctx, _ask(ctx, []))
    if node.parse in NUMBER_KINDS:
        readback = _readback(ctx, node, digits, speech)
        if readback is not None:
            return _reply(session, ctx, readback)
        text = f"{digits} {DAYS_WORD[ctx.lang]}" if digits and node.parse == "duration" \
            else (digits or speech)
    else:
        text = digits or speech
    return _reply(session, ctx, _feed(session, ctx, text))


def _readback(ctx: _Ctx, node, digits: str, speech: str) -> VoiceReply | None:
    """"You pressed 1 0. Press 1 if that is right": a number counts only once confirmed."""
    lang, kind = ctx.lang, node.parse
    if digits:
        text = f"{digits} {DAYS_WORD[lang]}" if kind == "duration" else digits
        parsed = parsing.parse(kind, text, lang)
        if not parsed.ok:
            return None  # out of range or not a number: the engine re-asks
        spelled = " ".join(digits)
        line = _t(ctx, "voice.confirm.days" if kind == "duration" else "voice.confirm.keys",
                  answer=spelled, days=str(parsed.value))
    else:
        text = speech.strip()
        parsed = parsing.parse(kind, text, lang)
        if not parsed.ok:
            return None
        heard = text.rstrip(".!?") if kind == "duration" else str(parsed.value)
        line = _t(ctx, "voice.confirm.speech", answer=heard)
    ctx.call.stage, ctx.call.pending = "confirm", {"text": text, "node": node.id}
    return VoiceReply(prompt=(line,), listen=Listen("confirm", lang, HINTS["confirm"][lang]))


def confirm(session: Session, *, call_sid: str, turn: int | None, digits: str = "",
            speech: str = "", now: datetime) -> VoiceReply:
    """POST /twilio/voice/confirm: 1 (or "yes") takes the number read back; 2 asks again."""
    ctx = _heard(session, call_sid, "confirm", turn, digits or speech, now)
    if isinstance(ctx, VoiceReply):
        return ctx
    if not _active(ctx):
        return _reply(session, ctx, _gone(ctx))
    said = parsing.parse_yes_no(speech, ctx.lang) if speech and not digits else parsing.UNCLEAR
    yes = digits == "1" or said.value is True
    no = digits == "2" or said.value is False
    pending = dict(ctx.call.pending)
    if yes and pending.get("node") == ctx.checkin.state.get("node"):
        return _reply(session, ctx, _feed(session, ctx, pending["text"]))
    tries = pending.get("tries", 0) + 1
    if yes or no or tries >= 2:
        return _reply(session, ctx, _ask(ctx, []))  # the question again, from the start
    again = _again(ctx)
    ctx.call.pending = {**pending, "tries": tries}
    return _reply(session, ctx, replace(again, say=()))


# ---- no input -----------------------------------------------------------------------------


def silence(session: Session, *, call_sid: str, turn: int | None, now: datetime) -> VoiceReply:
    """POST /twilio/voice/silence: the prompt got no input at all (the <Gather> timed out)."""
    ctx = _load(session, call_sid, now)
    if ctx is None:
        return _unknown_call()
    if turn != ctx.call.turn or ctx.call.stage not in STEP_OF_STAGE:
        return _again(ctx)
    call = ctx.call
    call.silences += 1
    if call.stage == "advice":
        return _reply(session, ctx, VoiceReply(say=(_t(ctx, "voice.goodbye"),), hangup=True))
    if call.stage == "offer":
        return _reply(session, ctx, _end_kept(session, ctx))
    if call.stage == "language":
        if call.silences >= 2:  # go on in the language we know for them
            call.silences = 0
            return _reply(session, ctx, _begin(session, ctx, ctx.patient.language))
        return _reply(session, ctx, replace(_again(ctx), say=(_t(ctx, "voice.silence"),)))
    if not _active(ctx):
        return _reply(session, ctx, _gone(ctx))
    if call.silences >= 2:
        return _reply(session, ctx, _offer(ctx))
    return _reply(session, ctx, replace(_again(ctx), say=(_t(ctx, "voice.silence"),)))


def _offer(ctx: _Ctx) -> VoiceReply:
    """After no input twice: finish by text, or talk to the clinic, or hang up."""
    ctx.call.stage = "offer"
    options = [_t(ctx, "voice.offer")]
    if _can_text(ctx.patient):
        options.append(_t(ctx, "voice.option.text"))
    if _dialable(ctx.clinic):
        options.append(_t(ctx, "voice.option.clinic"))
    options.append(_t(ctx, "voice.option.hangup"))
    return VoiceReply(prompt=tuple(options), listen=Listen("offer", ctx.lang,
                                                           HINTS["offer"][ctx.lang]))


def _choice(digits: str, speech: str, words: dict[str, frozenset[str]]) -> str | None:
    if digits:
        return {"1": "one", "2": "two"}.get(digits)
    tokens = set(parsing.normalize(speech).split())
    found = [name for name, options in words.items() if tokens & options]
    return found[0] if len(found) == 1 else None


def offer(session: Session, *, call_sid: str, turn: int | None, digits: str = "",
          speech: str = "", now: datetime) -> VoiceReply:
    """POST /twilio/voice/offer: 1 finish by text, 2 talk to the clinic; else back to the question."""
    ctx = _heard(session, call_sid, "offer", turn, digits or speech, now)
    if isinstance(ctx, VoiceReply):
        return ctx
    if not _active(ctx):
        return _reply(session, ctx, _gone(ctx))
    choice = _choice(digits, speech, {"one": _TEXT_WORDS, "two": _CLINIC_WORDS})
    if choice == "one" and _can_text(ctx.patient):
        _continue_by_text(session, ctx, at_once=True)
        return _reply(session, ctx, VoiceReply(say=(_t(ctx, "voice.texting"),), hangup=True))
    if choice == "two" and _dialable(ctx.clinic):
        return _reply(session, ctx, _connect(ctx))
    return _reply(session, ctx, _ask(ctx, []))


def _connect(ctx: _Ctx) -> VoiceReply:
    return VoiceReply(say=(_t(ctx, "voice.connecting"),), dial=ctx.clinic.phone, hangup=True)


def _end_kept(session: Session, ctx: _Ctx) -> VoiceReply:
    """No input to the offer either: end politely; the answers so far are kept."""
    _continue_by_text(session, ctx, at_once=False)
    return VoiceReply(say=(_t(ctx, "voice.kept"),), hangup=True)


def _continue_by_text(session: Session, ctx: _Ctx, *, at_once: bool) -> None:
    """Moves an unfinished voice check-in to SMS and texts the current question. The engine's
    wait (reminder, then timeout and INCOMPLETE with its alert) runs on from when it was asked."""
    checkin, patient = ctx.checkin, ctx.patient
    if not _active(ctx) or checkin.channel != "voice":
        return
    checkins.switch_channel(checkin, "sms")
    if not _can_text(patient):
        return
    tz = checkins.timezone_of(patient, ctx.clinic)
    for body in [checkins.text_for("resume.sms", ctx.clinic, checkin.language),
                 *checkins._repeat_question(checkin)]:
        # Asked for on the call: at once. Otherwise it waits for the allowed hours.
        outbox.enqueue(session, clinic=ctx.clinic, patient=patient, body=body, kind="checkin",
                       now=ctx.now, tz=tz, checkin=checkin, quiet=not at_once)
    log.info("voice check-in %s continues by text", checkin.id)


def _opt_out(session: Session, ctx: _Ctx, said: str) -> VoiceReply:
    """"Stop calling me": recorded like a texted STOP; the spoken confirmation is the only one."""
    checkins.opt_out(session, ctx.clinic, ctx.patient, said, ctx.now)
    ctx.patient.calls_allowed = False
    return VoiceReply(say=(_t(ctx, "voice.optout"),), hangup=True)


# ---- after the outcome --------------------------------------------------------------------


def advice(session: Session, *, call_sid: str, turn: int | None, digits: str = "",
           speech: str = "", now: datetime) -> VoiceReply:
    """POST /twilio/voice/advice: 1 hears the advice again, 2 talks to the clinic."""
    ctx = _heard(session, call_sid, "advice", turn, digits or speech, now)
    if isinstance(ctx, VoiceReply):
        return ctx
    choice = _choice(digits, speech, {"one": _AGAIN_WORDS, "two": _CLINIC_WORDS})
    if choice == "one":
        return _reply(session, ctx, _advice(ctx, ctx.call.pending.get("advice", [])))
    if choice == "two" and _dialable(ctx.clinic):
        return _reply(session, ctx, _connect(ctx))
    return _reply(session, ctx, VoiceReply(say=(_t(ctx, "voice.goodbye"),), hangup=True))


# ---- call status callbacks ----------------------------------------------------------------


def record_call_status(session: Session, *, call_sid: str, status: str, now: datetime,
                       answered_by: str | None = None, duration: int | None = None,
                       error_code: int | None = None, call_id: int | None = None) -> bool:
    """Applies one call status callback (idempotent, never backwards); True if it changed
    anything. The end of a call moves an unfinished check-in to SMS, and a reminder call that
    was busy, not answered or failed gets its next attempt."""
    status = (status or "").lower()
    if status not in STATUS_RANK:
        return False
    call = _call_by_sid(session, call_sid)
    if call is None and call_id is not None:
        call = session.execute(sa.select(Call).where(Call.id == call_id, Call.call_sid.is_(None))
                               .with_for_update()).scalar_one_or_none()
        if call is not None:
            call.call_sid = call_sid
    if call is None:
        return False
    if answered_by:
        call.answered_by = answered_by
    if duration is not None:
        call.duration_s = duration
    if error_code:
        call.error_code = error_code
    if STATUS_RANK.get(call.status, 0) >= STATUS_RANK[status]:
        return False
    call.status, call.updated_at = status, now
    if status not in FINAL_STATUSES:
        return True
    call.ended_at, call.stage = now, "ended"
    ctx = _context(session, call, now)
    log.info("call %s ended: %s", call.id, status)
    if status == "completed":
        _continue_by_text(session, ctx, at_once=False)
    elif status in RETRY_STATUSES and call.purpose == "reminder":
        _next_attempt(session, ctx)
    return True


def _next_attempt(session: Session, ctx: _Ctx) -> Call | None:
    call = ctx.call
    if call.attempt >= MAX_ATTEMPTS:
        log.info("reminder call %s: no answer after %d attempts", call.id, call.attempt)
        return None
    if not (_can_call(ctx.patient) and _active(ctx)):
        return None
    tz = checkins.timezone_of(ctx.patient, ctx.clinic)
    retry = Call(clinic_id=call.clinic_id, patient_id=call.patient_id, checkin_id=call.checkin_id,
                 followup_id=call.followup_id, direction="outbound", purpose="reminder",
                 from_number=call.from_number, to_number=call.to_number, status="pending",
                 stage="pending", attempt=call.attempt + 1, language=call.language,
                 not_before=quiet_hours.next_allowed(ctx.now + RETRY_AFTER, tz),
                 created_at=ctx.now, updated_at=ctx.now)
    session.add(retry)
    session.flush()
    log.info("reminder call %s: attempt %d due %s", retry.id, retry.attempt, retry.not_before)
    return retry


# ---- reminder calls -----------------------------------------------------------------------


def request_reminder_call(session: Session, target: CheckIn | FollowUp,
                          now: datetime) -> Call | None:
    """Writes the first reminder call of a check-in (or of a follow-up's check-in), due at once
    or at the next allowed hour; None when the patient does not take calls, the check-in is no
    longer waiting, or it already had its reminder calls."""
    checkin = target.checkin if isinstance(target, FollowUp) else target
    if checkin is None or checkin.status != "active":
        return None
    patient = _lock_patient(session, checkin.patient_id)
    if not _can_call(patient):
        return None
    called = session.execute(sa.select(Call.id).where(
        Call.checkin_id == checkin.id, Call.purpose == "reminder")).first()
    if called is not None:
        return None
    clinic = session.get(Clinic, checkin.clinic_id)
    from_number = checkins.clinic_number(clinic)
    if from_number is None:
        return None
    call = Call(clinic_id=clinic.id, patient_id=patient.id, checkin_id=checkin.id,
                followup_id=checkin.followup_id, direction="outbound", purpose="reminder",
                from_number=from_number, to_number=patient.phone_e164, status="pending",
                stage="pending", attempt=1, language=patient.language,
                not_before=quiet_hours.next_allowed(now, checkins.timezone_of(patient, clinic)),
                created_at=now, updated_at=now)
    session.add(call)
    session.flush()
    log.info("reminder call %s requested for check-in %s", call.id, checkin.id)
    return call


def due_reminder_checkin_ids(session: Session, now: datetime, limit: int = 200) -> list[int]:
    """Follow-up check-ins sent by text that got no reply for 48 hours, from patients who take
    calls, and that have had no reminder call yet."""
    replied = sa.select(Message.id).where(Message.checkin_id == CheckIn.id,
                                          Message.direction == "in").exists()
    called = sa.select(Call.id).where(Call.checkin_id == CheckIn.id,
                                      Call.purpose == "reminder").exists()
    return list(session.execute(
        sa.select(CheckIn.id).join(Patient, Patient.id == CheckIn.patient_id).where(
            CheckIn.status == "active", CheckIn.kind == "followup", CheckIn.channel == "sms",
            CheckIn.started_at <= now - REMINDER_CALL_AFTER, Patient.calls_allowed.is_(True),
            Patient.opted_out.is_(False), Patient.erased_at.is_(None), ~replied, ~called)
        .order_by(CheckIn.started_at).limit(limit)).scalars())


def request_due_reminder_calls(session: Session, now: datetime) -> list[int]:
    """The 48-hour no-reply step: writes a reminder call for each such check-in; their ids."""
    ids = []
    for checkin_id in due_reminder_checkin_ids(session, now):
        call = request_reminder_call(session, session.get(CheckIn, checkin_id), now)
        if call is not None:
            ids.append(call.id)
    return ids


def _replied(session: Session, checkin: CheckIn) -> bool:
    """The patient answered since (by text or on a call): a reminder call is not needed."""
    return session.execute(sa.select(Message.id).where(
        Message.checkin_id == checkin.id, Message.direction == "in").limit(1)).first() is not None


def due_call_ids(session: Session, now: datetime, limit: int = 200) -> list[int]:
    """Call attempts to place now: pending and due, or claimed by a worker whose lease ran out."""
    return list(session.execute(sa.select(Call.id).where(sa.or_(
        sa.and_(Call.status == "pending", Call.not_before <= now),
        sa.and_(Call.status.in_(("placing", "unknown")), Call.claimed_until <= now),
    )).order_by(Call.not_before, Call.id).limit(limit)).scalars())


def place_call(db, call_id: int, caller: Caller, now: datetime) -> str:
    """Claim (one transaction), call Twilio (none open), record the SID (another transaction).
    Returns placed / skipped / cancelled / quiet / retry / unknown / failed."""
    with db.transaction() as session:
        call = session.execute(sa.select(Call).where(Call.id == call_id)
                               .with_for_update(skip_locked=True)).scalar_one_or_none()
        if call is None:
            return "skipped"
        ready = (call.status == "pending" and call.not_before is not None
                 and call.not_before <= now) or (
            call.status in ("placing", "unknown") and call.claimed_until is not None
            and call.claimed_until <= now)
        if not ready:
            return "skipped"
        ctx = _context(session, call, now)
        if not (_can_call(ctx.patient) and _active(ctx)) or _replied(session, ctx.checkin):
            call.status, call.stage, call.claimed_until = "cancelled", "ended", None
            return "cancelled"
        allowed = quiet_hours.next_allowed(now, checkins.timezone_of(ctx.patient, ctx.clinic))
        if allowed != now:
            call.status, call.not_before, call.claimed_until = "pending", allowed, None
            return "quiet"
        resend = call.status in ("placing", "unknown")
        call.status, call.claimed_until, call.updated_at = "placing", now + LEASE, now
        to, from_, since = call.to_number, call.from_number, call.created_at
    base = caller.base_url.rstrip("/")
    try:
        sid = caller.find_placed(to=to, from_=from_, since=since) if resend else None
        placed = PlacedCall(sid, "queued") if sid else caller.call(
            to=to, from_=from_, url=f"{base}/twilio/voice?call={call_id}",
            status_callback=f"{base}/twilio/status?call={call_id}")
    except SendError as exc:
        return _call_failed(db, call_id, exc, now)
    with db.transaction() as session:
        call = session.execute(sa.select(Call).where(Call.id == call_id)
                               .with_for_update()).scalar_one()
        call.call_sid = call.call_sid or placed.sid
        call.claimed_until, call.last_error = None, None
        if call.status in ("placing", "unknown"):
            call.status = placed.status if placed.status in STATUS_RANK else "queued"
    log.info("call %s placed via %s (attempt %d)", call_id, caller.name, call.attempt)
    return "placed"


def _call_failed(db, call_id: int, exc: SendError, now: datetime) -> str:
    with db.transaction() as session:
        call = session.get(Call, call_id)
        call.last_error, call.error_code = str(exc)[:500], exc.code
        if exc.unknown:  # it may have been placed: look for it before placing it again
            call.status, call.claimed_until = "unknown", now + LEASE
            return "unknown"
        if exc.transient:
            call.status, call.claimed_until = "pending", None
            call.not_before = now + TRANSIENT_RETRY
            return "retry"
        call.status, call.stage, call.claimed_until, call.ended_at = "failed", "ended", None, now
    log.warning("call %s could not be placed: %s", call_id, exc)
    return "failed"


def place_reminder_call(db, target: CheckIn | FollowUp, now: datetime, caller: Caller) -> str | None:
    """The follow-up schedule's 48-hour no-reply step for one check-in (or follow-up): writes
    the reminder call and places it if the hour allows (else the row waits for `due_call_ids`).
    Returns place_call's outcome, or None when no call is due."""
    model = FollowUp if isinstance(target, FollowUp) else CheckIn
    with db.transaction() as session:
        call = request_reminder_call(session, session.get(model, target.id), now)
        call_id = call.id if call is not None else None
    if call_id is None:
        return None
    return place_call(db, call_id, caller, now)
