"""A call's context for one request: the call, clinic, patient and check-in, locked in one
order; replies numbered and every utterance recorded like a text."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flows.loader import messages
from service.conversations import checkins
from service.store.models import Call, CheckIn, Clinic, Message, Patient
from service.voice.replies import Line, VoiceReply, speakable

log = logging.getLogger(__name__)

MACHINE = ("machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax")


FINAL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")


RETRY_STATUSES = ("busy", "no-answer", "failed")


# Later states win; a callback for an earlier state that arrives late changes nothing.
STATUS_RANK = {"pending": 0, "placing": 0, "unknown": 0, "queued": 1, "initiated": 2,
               "ringing": 3, "in-progress": 4, "answered": 4, **dict.fromkeys(FINAL_STATUSES, 5)}


@dataclass
class CallContext:
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


def line_of(ctx: CallContext, text: str, lang: str | None = None) -> Line:
    return Line(speakable(text, ctx.clinic), lang or ctx.lang)


def line_for(ctx: CallContext, key: str, lang: str | None = None, **extra) -> Line:
    lang = lang or ctx.lang
    return line_of(ctx, checkins.text_for(key, ctx.clinic, lang, **extra), lang)


def call_by_sid(session: Session, call_sid: str) -> Call | None:
    if not call_sid:
        return None
    return session.execute(sa.select(Call).where(Call.call_sid == call_sid)
                           .with_for_update()).scalar_one_or_none()


def lock_patient(session: Session, patient_id: int | None) -> Patient | None:
    if patient_id is None:
        return None
    return session.execute(sa.select(Patient).where(Patient.id == patient_id)
                           .with_for_update()).scalar_one_or_none()


def call_context(session: Session, call: Call, now: datetime) -> CallContext:
    # The call first, then the patient: every voice request takes its locks in this order.
    patient = lock_patient(session, call.patient_id)
    checkin = session.get(CheckIn, call.checkin_id) if call.checkin_id else None
    return CallContext(call, session.get(Clinic, call.clinic_id), patient, checkin, now)


def load_call(session: Session, call_sid: str, now: datetime) -> CallContext | None:
    call = call_by_sid(session, call_sid)
    return call_context(session, call, now) if call is not None else None


def reply_with(session: Session, ctx: CallContext, reply: VoiceReply) -> VoiceReply:
    """Numbers the reply, keeps it for a repeated request, and records what is said."""
    ctx.call.turn += 1
    ctx.call.updated_at = ctx.now
    reply = replace(reply, turn=ctx.call.turn)
    ctx.call.last_reply = reply.to_dict()
    if reply.listen is None:
        ctx.call.stage = "ended"  # the call ends (or goes to the clinic) after this reply
    for line in reply.lines:
        record_utterance(session, ctx, "out", line.text)
    return reply


def record_utterance(session: Session, ctx: CallContext, direction: str, text: str) -> None:
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


def again(ctx: CallContext) -> VoiceReply:
    """The reply given last: for a request that does not answer the current prompt."""
    if ctx.call.last_reply:
        return VoiceReply.from_dict(ctx.call.last_reply)
    return VoiceReply(hangup=True)


def heard(session: Session, call_sid: str, stage: str, turn: int | None, heard: str,
           now: datetime) -> CallContext | VoiceReply:
    """What every answer to a prompt does first: find the call, send a late or repeated
    request the current prompt again, and record what was heard. A VoiceReply means: answer
    with it and stop."""
    ctx = load_call(session, call_sid, now)
    if ctx is None:
        return unknown_call()
    if stale(ctx, stage, turn):
        return again(ctx)
    record_utterance(session, ctx, "in", heard)
    ctx.call.silences = 0
    return ctx


def stale(ctx: CallContext, stage: str, turn: int | None) -> bool:
    return ctx.call.stage != stage or turn != ctx.call.turn


def unknown_call() -> VoiceReply:
    return VoiceReply(say=(Line(messages().get("voice.unavailable", "en"), "en"),), hangup=True)


def can_text(patient: Patient | None) -> bool:
    return (patient is not None and not patient.opted_out and patient.consent == "given"
            and not patient.number_invalid and patient.erased_at is None)


def can_call(patient: Patient | None) -> bool:
    return (patient is not None and patient.calls_allowed and not patient.opted_out
            and patient.consent == "given" and not patient.number_invalid
            and patient.erased_at is None)


def dialable(clinic: Clinic) -> bool:
    """The clinic's line can be dialled (and is not one of our own numbers, which would loop)."""
    own = {number.phone_e164 for number in clinic.numbers}
    return bool(clinic.phone) and clinic.phone not in own


def in_check_in(ctx: CallContext) -> bool:
    return ctx.checkin is not None and ctx.checkin.status == "active"


def gone(ctx: CallContext) -> VoiceReply:
    """The check-in ended while the call went on (answered by text, or timed out)."""
    return VoiceReply(say=(line_for(ctx, "voice.nothing_due"),), hangup=True)

