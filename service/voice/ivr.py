"""The IVR: one function per request of a call, the use cases behind /twilio/voice and the
simulator.

One function per request of a call. Each runs in the caller's transaction: it finds the call by
Twilio's CallSid, runs the same engine through the same check-in internals as SMS
(`service.conversations.checkins`), persists every answer at once (a caller who hangs up early loses
nothing), and returns a `VoiceReply`: what to say and how to listen next, as plain data that the
webhook turns into TwiML and the simulator prints.

A number typed on the keypad or spoken is read back before it counts ("You pressed 1 0. Press 1
if that is right"), so a "1" sent by a pause is never taken for "10". No input twice offers to
finish by text or to talk to the clinic; a call that ends unfinished moves its check-in to SMS,
where the engine's wait timeout still applies (then INCOMPLETE, with its alert).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flows import engine, keywords, menus, parsing
from flows.loader import get_flow
from service.conversations import checkins, consent, inbound
from service.logs import mask_phone
from service.messaging import outbox
from service.phones import normalize_phone
from service.records.alerts import raise_alert
from service.store import queries
from service.store.models import Call, Patient
from service.voice import context, replies
from service.voice.context import (
    CallContext,
    again,
    call_by_sid,
    call_context,
    can_text,
    dialable,
    gone,
    heard,
    in_check_in,
    line_for,
    line_of,
    load_call,
    reply_with,
    unknown_call,
)
from service.voice.replies import Line, Listen, VoiceReply

log = logging.getLogger(__name__)

def answer_call(session: Session, *, call_sid: str, to: str, from_: str, now: datetime,
                answered_by: str | None = None, call_id: int | None = None) -> VoiceReply:
    """POST /twilio/voice: a patient calls the clinic's number, or answers our reminder call."""
    call = call_by_sid(session, call_sid)
    if call is None and call_id is not None:
        call = session.execute(sa.select(Call).where(Call.id == call_id,
                                                     Call.direction == "outbound")
                               .with_for_update()).scalar_one_or_none()
        if call is not None and call.call_sid not in (None, call_sid):
            call = None  # that row is another call's
        if call is not None:
            call.call_sid = call_sid  # answered before the placing worker recorded the SID
    if call is not None and call.turn > 0:
        return again(call_context(session, call, now))  # the same webhook again
    if call is None:
        return _answer_inbound(session, call_sid=call_sid, to=to, from_=from_, now=now)
    return _answer_outbound(session, call_context(session, call, now), answered_by)


def _answer_inbound(session: Session, *, call_sid: str, to: str, from_: str,
                    now: datetime) -> VoiceReply:
    clinic = inbound.clinic_for_number(session, to)
    if clinic is None:
        log.warning("inbound call %s to a number no clinic owns", call_sid)
        return unknown_call()
    try:
        phone = normalize_phone(from_)
    except ValueError:
        # A withheld or foreign caller ID: no patient to keep answers for.
        return VoiceReply(say=tuple(
            Line(replies.speakable(checkins.text_for("voice.hidden_number", clinic, lang),
                                   clinic), lang)
            for lang in ("en", "es")), hangup=True)
    patient = inbound.lock_patient(session, clinic.id, phone)
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
    ctx = CallContext(call, clinic, patient, queries.active_checkin(session, patient.id), now)
    log.info("inbound call %s (clinic %s)", call.id, clinic.id)
    return reply_with(session, ctx, _language_menu(ctx))


def _answer_outbound(session: Session, ctx: CallContext, answered_by: str | None) -> VoiceReply:
    call = ctx.call
    call.answered_by = answered_by or call.answered_by
    if context.STATUS_RANK.get(call.status, 0) < context.STATUS_RANK["in-progress"]:
        call.status = "in-progress"
    if answered_by in context.MACHINE:
        # A voicemail hears who called and how to reach us, never anything about health.
        log.info("call %s reached %s", call.id, answered_by)
        if answered_by == "fax":
            return reply_with(session, ctx, VoiceReply(hangup=True))
        lang = ctx.patient.language if ctx.patient else "en"
        return reply_with(session, ctx, VoiceReply(say=(line_for(ctx, "voice.machine", lang),),
                                               hangup=True))
    if not in_check_in(ctx) or ctx.patient is None or ctx.patient.opted_out:
        return reply_with(session, ctx, gone(ctx))
    return reply_with(session, ctx, _language_menu(ctx))


def _language_menu(ctx: CallContext) -> VoiceReply:
    ctx.call.stage, ctx.call.pending = "language", {}
    lang = ctx.patient.language if ctx.patient else "en"
    return VoiceReply(prompt=(line_for(ctx, "voice.language", "en"),
                              line_for(ctx, "voice.language", "es")),
                      listen=Listen("lang", lang, replies.HINTS["language"][lang]))


def choose_language(session: Session, *, call_sid: str, turn: int | None, digits: str = "",
                    speech: str = "", now: datetime) -> VoiceReply:
    """POST /twilio/voice/lang: 1 English, 2 español (or said); then the check-in begins."""
    ctx = heard(session, call_sid, "language", turn, digits or speech, now)
    if isinstance(ctx, VoiceReply):
        return ctx
    lang = menus.language_choice(digits, speech)
    if lang is None:
        tries = ctx.call.pending.get("tries", 0) + 1
        if tries < 2:
            reply = _language_menu(ctx)
            ctx.call.pending = {"tries": tries}
            return reply_with(session, ctx, reply)
        lang = ctx.patient.language
    return reply_with(session, ctx, _begin(session, ctx, lang))


def _begin(session: Session, ctx: CallContext, lang: str) -> VoiceReply:
    """The check-in in the chosen language: the one in progress (begun by text or on an earlier
    call), else a new one; first the flow's spoken opening with the disclaimer."""
    patient, now = ctx.patient, ctx.now
    ctx.call.language = lang
    patient.language = lang
    if patient.consent != "given":
        patient.consent, patient.consented_at = "given", now  # they called, or answered and chose
    how = checkins.text_for("voice.how_to_answer", ctx.clinic, lang)
    checkin = queries.active_checkin(session, patient.id)
    if checkin is not None:
        flow = get_flow(checkin.flow_id, checkin.flow_version)
        checkins.switch_channel(checkin, "voice", lang if lang in flow.languages else None)
        ctx.checkin, ctx.call.checkin_id = checkin, checkin.id
        opening = flow.nodes[flow.start]
        intro = [engine.render(opening.text_for(checkin.language, "voice"),
                               checkin.state["context"], checkin.language)] \
            if opening.kind == "say" else []
        return _ask(ctx, intro + [how] + checkins.repeat_question(checkin))
    kind = "followup" if queries.open_episode(session, patient.id) is not None else "intake"
    texts = checkins.start(session, ctx.clinic, patient, kind, now, reply=True, channel="voice")
    checkin = queries.active_checkin(session, patient.id)
    if checkin is None:  # the flow ended at once (nothing left to ask)
        return VoiceReply(say=tuple(line_of(ctx, text, lang) for text in texts), hangup=True)
    ctx.checkin, ctx.call.checkin_id = checkin, checkin.id
    return _ask(ctx, texts[:-1] + [how] + texts[-1:])


def _listen_for(kind: str, lang: str) -> Listen:
    hints = replies.HINTS[kind][lang]
    if kind in replies.NUMBER_KINDS:
        return Listen("answer", lang, hints, num_digits=None, finish_on_key="#", timeout=8)
    return Listen("answer", lang, hints)


def _ask(ctx: CallContext, texts: list[str]) -> VoiceReply:
    """Says all but the last text, then asks the last one, listening for the current question."""
    checkin = ctx.checkin
    flow = get_flow(checkin.flow_id, checkin.flow_version)
    node = engine.current_question(flow, checkin.state)
    lang = checkin.state["lang"]
    ctx.call.stage, ctx.call.node, ctx.call.pending = "question", node.id, {}
    texts = texts or checkins.repeat_question(checkin)
    return VoiceReply(say=tuple(line_of(ctx, text, lang) for text in texts[:-1]),
                      prompt=(line_of(ctx, texts[-1], lang),), listen=_listen_for(node.parse, lang))


def _current_node(ctx: CallContext):
    flow = get_flow(ctx.checkin.flow_id, ctx.checkin.flow_version)
    return engine.current_question(flow, ctx.checkin.state)


def _feed(session: Session, ctx: CallContext, text: str) -> VoiceReply:
    """One answer through the engine, persisted now; the next question, or the advice."""
    texts = checkins.step(session, ctx.clinic, ctx.patient, ctx.checkin, engine.Reply(text),
                           ctx.now, reply=True)
    if ctx.checkin.status == "active":
        return _ask(ctx, texts)
    log.info("voice check-in %s ended on call %s: %s", ctx.checkin.id, ctx.call.id,
             ctx.checkin.level)
    return _advice(ctx, texts)


def _advice(ctx: CallContext, texts: list[str]) -> VoiceReply:
    lang = ctx.checkin.language
    ctx.call.stage, ctx.call.node, ctx.call.pending = "advice", None, {"advice": list(texts)}
    options = [line_for(ctx, "voice.option.repeat", lang)]
    if dialable(ctx.clinic):
        options.append(line_for(ctx, "voice.option.clinic", lang))
    options.append(line_for(ctx, "voice.option.hangup", lang))
    return VoiceReply(say=tuple(line_of(ctx, text, lang) for text in texts), prompt=tuple(options),
                      listen=Listen("advice", lang, replies.HINTS["advice"][lang]))


def answer(session: Session, *, call_sid: str, turn: int | None, digits: str = "",
           speech: str = "", now: datetime) -> VoiceReply:
    """POST /twilio/voice/answer: keys or words answering the current question."""
    ctx = heard(session, call_sid, "question", turn, digits or speech, now)
    if isinstance(ctx, VoiceReply):
        return ctx
    if not in_check_in(ctx):
        return reply_with(session, ctx, gone(ctx))
    if speech and not digits and keywords.classify(speech) == "stop":
        return reply_with(session, ctx, _opt_out(session, ctx, speech))
    node = _current_node(ctx)
    if node.id != ctx.call.node:  # the check-in moved on by text meanwhile
        return reply_with(session, ctx, _ask(ctx, []))
    if node.parse in replies.NUMBER_KINDS:
        readback = _readback(ctx, node, digits, speech)
        if readback is not None:
            return reply_with(session, ctx, readback)
        text = f"{digits} {replies.DAYS_WORD[ctx.lang]}" if digits and node.parse == "duration" \
            else (digits or speech)
    else:
        text = digits or speech
    return reply_with(session, ctx, _feed(session, ctx, text))


def _readback(ctx: CallContext, node, digits: str, speech: str) -> VoiceReply | None:
    """"You pressed 1 0. Press 1 if that is right": a number counts only once confirmed."""
    lang, kind = ctx.lang, node.parse
    if digits:
        text = f"{digits} {replies.DAYS_WORD[lang]}" if kind == "duration" else digits
        parsed = parsing.parse(kind, text, lang)
        if not parsed.ok:
            return None  # out of range or not a number: the engine re-asks
        spelled = " ".join(digits)
        line = line_for(ctx, "voice.confirm.days" if kind == "duration" else "voice.confirm.keys",
                  answer=spelled, days=str(parsed.value))
    else:
        text = speech.strip()
        parsed = parsing.parse(kind, text, lang)
        if not parsed.ok:
            return None
        understood = text.rstrip(".!?") if kind == "duration" else str(parsed.value)
        line = line_for(ctx, "voice.confirm.speech", answer=understood)
    ctx.call.stage, ctx.call.pending = "confirm", {"text": text, "node": node.id}
    return VoiceReply(prompt=(line,),
                      listen=Listen("confirm", lang, replies.HINTS["confirm"][lang]))


def confirm(session: Session, *, call_sid: str, turn: int | None, digits: str = "",
            speech: str = "", now: datetime) -> VoiceReply:
    """POST /twilio/voice/confirm: 1 (or "yes") takes the number read back; 2 asks again."""
    ctx = heard(session, call_sid, "confirm", turn, digits or speech, now)
    if isinstance(ctx, VoiceReply):
        return ctx
    if not in_check_in(ctx):
        return reply_with(session, ctx, gone(ctx))
    said = parsing.parse_yes_no(speech, ctx.lang) if speech and not digits else parsing.UNCLEAR
    yes = digits == "1" or said.value is True
    no = digits == "2" or said.value is False
    pending = dict(ctx.call.pending)
    if yes and pending.get("node") == ctx.checkin.state.get("node"):
        return reply_with(session, ctx, _feed(session, ctx, pending["text"]))
    tries = pending.get("tries", 0) + 1
    if yes or no or tries >= 2:
        return reply_with(session, ctx, _ask(ctx, []))  # the question again, from the start
    last = again(ctx)
    ctx.call.pending = {**pending, "tries": tries}
    return reply_with(session, ctx, replace(last, say=()))


def silence(session: Session, *, call_sid: str, turn: int | None, now: datetime) -> VoiceReply:
    """POST /twilio/voice/silence: the prompt got no input at all (the <Gather> timed out)."""
    ctx = load_call(session, call_sid, now)
    if ctx is None:
        return unknown_call()
    if turn != ctx.call.turn or ctx.call.stage not in replies.STEP_OF_STAGE:
        return again(ctx)
    call = ctx.call
    call.silences += 1
    if call.stage == "advice":
        return reply_with(session, ctx,
                          VoiceReply(say=(line_for(ctx, "voice.goodbye"),), hangup=True))
    if call.stage == "offer" and call.pending.get("after") == "dial":
        return _leave_message(session, ctx)  # nobody answered, and the caller said nothing
    if call.stage == "offer":
        return reply_with(session, ctx, _end_kept(session, ctx))
    if call.stage == "language":
        if call.silences >= 2:  # go on in the language we know for them
            call.silences = 0
            return reply_with(session, ctx, _begin(session, ctx, ctx.patient.language))
        return reply_with(session, ctx, replace(again(ctx), say=(line_for(ctx, "voice.silence"),)))
    if not in_check_in(ctx):
        return reply_with(session, ctx, gone(ctx))
    if call.silences >= 2:
        return reply_with(session, ctx, _offer(ctx))
    return reply_with(session, ctx, replace(again(ctx), say=(line_for(ctx, "voice.silence"),)))


def _offer(ctx: CallContext) -> VoiceReply:
    """After no input twice: finish by text, or talk to the clinic, or hang up."""
    ctx.call.stage = "offer"
    options = [line_for(ctx, "voice.offer")]
    if can_text(ctx.patient):
        options.append(line_for(ctx, "voice.option.text"))
    if dialable(ctx.clinic):
        options.append(line_for(ctx, "voice.option.clinic"))
    options.append(line_for(ctx, "voice.option.hangup"))
    return VoiceReply(prompt=tuple(options), listen=Listen("offer", ctx.lang,
                                                           replies.HINTS["offer"][ctx.lang]))


def offer(session: Session, *, call_sid: str, turn: int | None, digits: str = "",
          speech: str = "", now: datetime) -> VoiceReply:
    """POST /twilio/voice/offer: 1 finish by text, 2 talk to the clinic; else the question."""
    ctx = heard(session, call_sid, "offer", turn, digits or speech, now)
    if isinstance(ctx, VoiceReply):
        return ctx
    if not in_check_in(ctx):
        return reply_with(session, ctx, gone(ctx))
    choice = menus.menu_choice(digits, speech, menus.OFFER)
    if choice == "one" and can_text(ctx.patient):
        continue_by_text(session, ctx, at_once=True)
        return reply_with(session, ctx,
                          VoiceReply(say=(line_for(ctx, "voice.texting"),), hangup=True))
    if choice == "two" and dialable(ctx.clinic):
        return reply_with(session, ctx, _connect(ctx))
    return reply_with(session, ctx, _ask(ctx, []))


def _connect(ctx: CallContext) -> VoiceReply:
    return VoiceReply(say=(line_for(ctx, "voice.connecting"),), dial=ctx.clinic.phone, hangup=True)


# <Dial>'s outcomes (DialCallStatus) that mean someone at the clinic took the call.
DIAL_ANSWERED = ("completed", "answered")


def dialed(session: Session, *, call_sid: str, turn: int | None, status: str,
           now: datetime) -> VoiceReply:
    """POST /twilio/voice/dialed (the <Dial>'s action): the clinic's line answered, or nobody
    did (busy, no answer, failed). Then the caller is not hung up on: they may finish by text
    or leave a message for the clinic."""
    ctx = load_call(session, call_sid, now)
    if ctx is None:
        return unknown_call()
    if turn != ctx.call.turn or ctx.call.stage != "ended":
        return VoiceReply(hangup=True)  # a late or repeated request: the call went on
    if status in DIAL_ANSWERED or ctx.patient is None:
        return reply_with(session, ctx, VoiceReply(hangup=True))
    log.info("call %s: the clinic's line did not answer (%s)", ctx.call.id, status or "?")
    # An offer of its own (stage "offer", marked in `pending`): no new stage, no migration.
    ctx.call.stage, ctx.call.pending = "offer", {"after": "dial"}
    options = [line_for(ctx, "voice.unanswered")]
    if can_text(ctx.patient) and in_check_in(ctx):
        options.append(line_for(ctx, "voice.option.text"))
    options.append(line_for(ctx, "voice.option.message"))
    return reply_with(session, ctx, VoiceReply(prompt=tuple(options), listen=Listen(
        "unanswered", ctx.lang, replies.HINTS["offer"][ctx.lang])))


def unanswered(session: Session, *, call_sid: str, turn: int | None, digits: str = "",
               speech: str = "", now: datetime) -> VoiceReply:
    """POST /twilio/voice/unanswered: 1 finishes by text; anything else leaves a message."""
    ctx = heard(session, call_sid, "offer", turn, digits or speech, now)
    if isinstance(ctx, VoiceReply):
        return ctx
    if ctx.call.pending.get("after") != "dial":
        return again(ctx)
    choice = menus.menu_choice(digits, speech, menus.OFFER)
    if choice == "one" and can_text(ctx.patient) and in_check_in(ctx):
        continue_by_text(session, ctx, at_once=True)
        return reply_with(session, ctx, VoiceReply(
            say=(line_for(ctx, "voice.texting"),), hangup=True))
    return _leave_message(session, ctx)


def _leave_message(session: Session, ctx: CallContext) -> VoiceReply:
    ctx.call.pending = {"after": "record"}  # the recording's action comes with this turn
    return reply_with(session, ctx, VoiceReply(
        say=(line_for(ctx, "voice.message.start"),), record=True, hangup=True))


def recorded(session: Session, *, call_sid: str, turn: int | None, recording_url: str,
             seconds: str, now: datetime) -> VoiceReply:
    """POST /twilio/voice/recorded (the <Record>'s action): the clinic hears of the message
    as a callback request, with the recording's address (in Twilio, behind its credentials)."""
    ctx = load_call(session, call_sid, now)
    if ctx is None:
        return unknown_call()
    if turn != ctx.call.turn or ctx.call.pending.get("after") != "record":
        return VoiceReply(hangup=True)
    if recording_url and ctx.patient is not None:
        raise_alert(session, ctx.clinic, ctx.patient, kind="callback_requested", level="soon",
                    now=now, episode=queries.open_episode(session, ctx.patient.id),
                    summary=f"The patient asked for the clinic on a call; nobody answered, and "
                            f"they left a voice message ({seconds or '?'} s): {recording_url}")
    return reply_with(session, ctx, VoiceReply(
        say=(line_for(ctx, "voice.message.thanks"),), hangup=True))


def _end_kept(session: Session, ctx: CallContext) -> VoiceReply:
    """No input to the offer either: end politely; the answers so far are kept."""
    continue_by_text(session, ctx, at_once=False)
    return VoiceReply(say=(line_for(ctx, "voice.kept"),), hangup=True)


def continue_by_text(session: Session, ctx: CallContext, *, at_once: bool) -> None:
    """Moves an unfinished voice check-in to SMS and texts the current question. The engine's
    wait (reminder, then timeout and INCOMPLETE with its alert) runs on from when it was asked."""
    checkin, patient = ctx.checkin, ctx.patient
    if not in_check_in(ctx) or checkin.channel != "voice":
        return
    checkins.switch_channel(checkin, "sms")
    if not can_text(patient):
        return
    tz = checkins.timezone_of(patient, ctx.clinic)
    for body in [checkins.text_for("resume.sms", ctx.clinic, checkin.language),
                 *checkins.repeat_question(checkin)]:
        # Asked for on the call: at once. Otherwise it waits for the allowed hours.
        outbox.enqueue(session, clinic=ctx.clinic, patient=patient, body=body, kind="checkin",
                       now=ctx.now, tz=tz, checkin=checkin, quiet=not at_once)
    log.info("voice check-in %s continues by text", checkin.id)


def _opt_out(session: Session, ctx: CallContext, said: str) -> VoiceReply:
    """"Stop calling me": recorded like a texted STOP; the spoken confirmation is the only one."""
    consent.opt_out(session, ctx.clinic, ctx.patient, said, ctx.now)
    ctx.patient.calls_allowed = False
    return VoiceReply(say=(line_for(ctx, "voice.optout"),), hangup=True)


def advice(session: Session, *, call_sid: str, turn: int | None, digits: str = "",
           speech: str = "", now: datetime) -> VoiceReply:
    """POST /twilio/voice/advice: 1 hears the advice again, 2 talks to the clinic."""
    ctx = heard(session, call_sid, "advice", turn, digits or speech, now)
    if isinstance(ctx, VoiceReply):
        return ctx
    choice = menus.menu_choice(digits, speech, menus.ADVICE)
    if choice == "one":
        return reply_with(session, ctx, _advice(ctx, ctx.call.pending.get("advice", [])))
    if choice == "two" and dialable(ctx.clinic):
        return reply_with(session, ctx, _connect(ctx))
    return reply_with(session, ctx, VoiceReply(say=(line_for(ctx, "voice.goodbye"),), hangup=True))

