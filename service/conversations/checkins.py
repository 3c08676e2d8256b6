"""Check-in use cases: every channel (SMS webhook, simulator, API, dashboard, tasks) calls these.

Each function runs inside the caller's unit of work (one transaction): it loads state, runs the
engine, and persists answers, outcome, alerts, follow-ups and outgoing messages together.
Replies to a patient's own message are returned (the webhook answers with TwiML at once);
messages the service starts go to the outbox, held for quiet hours.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from flows import engine, keywords, parsing, triage
from flows.loader import get_flow, messages
from service.logs import mask_phone
from service.messaging import outbox, quiet_hours
from service.phones import normalize_phone
from service.store.models import (
    Alert,
    CheckIn,
    Clinic,
    ClinicNumber,
    Episode,
    FollowUp,
    Message,
    Patient,
    WebhookReceipt,
)

log = logging.getLogger(__name__)

# A follow-up due while another conversation is going on is tried again after this.
DEFER_RECHECK = timedelta(minutes=15)
# Twilio's own opt-out handling answers these words itself (and blocks later messages).
ALERT_LEVEL_FOR = {"emergency": "emergency", "urgent": "urgent", "soon": "soon"}


class CheckInError(Exception):
    """A request the current state does not allow (maps to 409 in the API)."""


@dataclass
class InboundResult:
    replies: list[str] = field(default_factory=list)
    duplicate: bool = False
    reason: str = ""  # why there is no reply, for logs: unknown_clinic, opted_out, ...
    # The sender and the conversation as the use case left them, so that recording the replies
    # does not read them again; None when the use case did not have them at hand.
    patient: Patient | None = field(default=None, compare=False, repr=False)
    checkin: CheckIn | None = field(default=None, compare=False, repr=False)
    send_soon: bool = False  # it queued texts or raised an alert: the sender has work now


# ---- lookups ------------------------------------------------------------------------------


def clinic_for_number(session: Session, to_number: str) -> Clinic | None:
    try:
        phone = normalize_phone(to_number)
    except ValueError:
        return None
    # The numbers come in the same statement: every inbound text records the clinic's number.
    row = session.execute(
        sa.select(Clinic).join(ClinicNumber).where(ClinicNumber.phone_e164 == phone)
        .options(joinedload(Clinic.numbers))
    ).unique().scalar_one_or_none()
    return row


def lock_patient(session: Session, clinic_id: int, phone: str) -> Patient | None:
    """The patient row, locked until commit on PostgreSQL so one patient's messages queue up."""
    return session.execute(
        sa.select(Patient)
        .where(Patient.clinic_id == clinic_id, Patient.phone_e164 == phone,
               Patient.erased_at.is_(None))
        .with_for_update()
    ).scalar_one_or_none()


# Built once: the webhook runs these for every text, and a prebuilt statement skips SQLAlchemy's
# construction and cache-key work (a fifth of the webhook's CPU when built per call).
_SENDER = (
    sa.select(Patient, Clinic,
              sa.select(WebhookReceipt.response_body)
              .where(WebhookReceipt.sid == sa.bindparam("sid")).scalar_subquery())
    .join(Clinic, Clinic.id == Patient.clinic_id)
    .join(ClinicNumber, ClinicNumber.clinic_id == Clinic.id)
    .where(ClinicNumber.phone_e164 == sa.bindparam("clinic_phone"),
           Patient.phone_e164 == sa.bindparam("phone"), Patient.erased_at.is_(None))
    .with_for_update(of=Patient)
)
_INSERT_MESSAGES = sa.insert(Message.__table__)
_INSERT_RECEIPT = sa.insert(WebhookReceipt.__table__)
_ACTIVE_CHECKIN = sa.select(CheckIn).where(CheckIn.patient_id == sa.bindparam("patient_id"),
                                           CheckIn.status == "active")


def _lock_sender(session: Session, clinic_phone: str, phone: str,
                 sid: str) -> tuple[Patient, Clinic, str | None] | None:
    """(patient, clinic, reply already given to `sid`) in one statement, the patient row locked
    until commit on PostgreSQL; None when the number is no patient of the clinic texted.

    The receipt is read with the statement's snapshot, taken before any wait on the lock: a
    duplicate delivery racing the first one can miss it. It then fails on a unique key when it
    writes the text (`messages.twilio_sid`, else the receipt's key) and its transaction is
    rolled back; `Database.run` runs it again, and the new statement sees the receipt.
    """
    row = session.execute(_SENDER, {"sid": sid, "clinic_phone": clinic_phone,
                                    "phone": phone}).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


def active_checkin(session: Session, patient_id: int) -> CheckIn | None:
    return session.execute(_ACTIVE_CHECKIN, {"patient_id": patient_id}).scalar_one_or_none()


def open_episode(session: Session, patient_id: int) -> Episode | None:
    return session.execute(
        sa.select(Episode).where(Episode.patient_id == patient_id, Episode.status == "open")
    ).scalar_one_or_none()


def clinic_number(clinic: Clinic) -> str | None:
    return clinic.numbers[0].phone_e164 if clinic.numbers else None


def text_for(key: str, clinic: Clinic, lang: str, **extra) -> str:
    lang = lang if lang in messages().languages else "en"
    return engine.render(messages().get(key, lang), _context_values(clinic), lang, **extra)


def _context_values(clinic: Clinic) -> dict:
    return {"clinic": clinic.name, "emergency": clinic.emergency_number,
            "clinic_phone": clinic.phone}


def timezone_of(patient: Patient, clinic: Clinic) -> str:
    return quiet_hours.patient_timezone(patient.timezone, clinic.timezone, patient.phone_e164)


# ---- inbound SMS --------------------------------------------------------------------------


def handle_inbound_sms(session: Session, *, to: str, from_: str, body: str | None, sid: str,
                       now: datetime, opt_out_type: str | None = None,
                       replies_via_outbox: bool = False) -> InboundResult:
    """One inbound text: the whole use case, in the caller's transaction.

    The replies are returned for the webhook's TwiML and recorded as messages. With
    `replies_via_outbox` (a spooled text replayed after its webhook answered) they are queued in
    the outbox instead, to go out at once; the send records them, so each exists once.

    A duplicate delivery racing the first one raises IntegrityError: call it through
    `Database.run`, which runs it again in a new transaction.
    """
    clinic_phone, phone = _phone_or_none(to), _phone_or_none(from_)
    found = _lock_sender(session, clinic_phone, phone, sid) if clinic_phone and phone else None
    if found is not None:
        patient, clinic, answered = found
    else:
        # Not a patient of the clinic texted (or no such clinic): the slower, rarer path.
        clinic = clinic_for_number(session, to)
        if clinic is None:
            log.warning("inbound sms to a number no clinic owns (sid=%s)", sid)
            return InboundResult(reason="unknown_clinic")
        if phone is None:
            log.warning("inbound sms from a malformed number (sid=%s)", sid)
            return InboundResult(reason="bad_from")
        patient = lock_patient(session, clinic.id, phone)
        receipt = session.get(WebhookReceipt, sid) if sid else None
        answered = receipt.response_body if receipt is not None else None
    if sid and answered is not None:
        return InboundResult(json.loads(answered), duplicate=True)
    text = (body or "").replace("\x00", "").strip()  # PostgreSQL text cannot hold NUL
    # clinic_phone is set: the clinic was found by it.
    sms = _Text(clinic_phone, phone, text, sid, now, opt_out_type)
    result = _inbound(session, clinic, patient, sms)
    _deliver_replies(session, clinic, sms, result, via_outbox=replies_via_outbox)
    # Written as plain rows (nothing reads them back in this unit of work): the ORM's unit of
    # work would fetch each message's id and cost the webhook a third of its CPU. The text's
    # SID is unique in both tables: this is what stops a racing duplicate (see _lock_sender),
    # so every delivery with a SID must write one of them.
    if sms.messages:
        session.execute(_INSERT_MESSAGES, sms.messages)
    if sid:
        session.execute(_INSERT_RECEIPT, {"sid": sid, "kind": "sms", "created_at": now,
                                          "response_body": json.dumps(result.replies)})
    result.send_soon = outbox.send_soon(session)
    return result


def _phone_or_none(text: str) -> str | None:
    try:
        return normalize_phone(text)
    except ValueError:
        return None


@dataclass(slots=True)
class _Text:
    """One inbound text (the clinic number it was sent to and the sender's, both E.164), and
    the message rows it leaves: the text itself and the replies, written in one statement."""

    clinic_phone: str
    phone: str
    text: str
    sid: str
    now: datetime
    opt_out_type: str | None
    messages: list[dict] = field(default_factory=list)


def _inbound(session, clinic, patient, sms: _Text) -> InboundResult:
    word = keywords.classify(sms.text)
    # Twilio's own opt-out handling says what it did with this text (its keywords may go beyond
    # ours, e.g. YES as an opt-in word): the patient's choice is recorded here too.
    word = {"STOP": "stop", "START": "start"}.get((sms.opt_out_type or "").upper(), word)
    if patient is None:
        patient = _unknown_number(session, clinic, sms, word)
        if isinstance(patient, InboundResult):
            return patient
        _record_in(patient, sms, None)
        return InboundResult(_start(session, clinic, patient, "intake", sms.now, reply=True),
                             patient=patient)
    checkin = active_checkin(session, patient.id)
    _record_in(patient, sms, checkin)
    result = _from_patient(session, clinic, patient, checkin, sms.text, word, sms.now,
                           sms.opt_out_type)
    result.patient, result.checkin = patient, checkin
    return result


def _from_patient(session, clinic, patient, checkin, text, word, now, opt_out_type):
    lang = patient.language
    if word == "stop":
        return InboundResult(opt_out(session, clinic, patient, text, now, opt_out_type))
    if word == "start" and patient.opted_out:
        patient.opted_out, patient.opted_out_at = False, None
        if _twilio_answered(clinic, text, opt_out_type, "START"):
            return InboundResult(reason="twilio_confirms_start")  # Twilio answers START itself
        return InboundResult([text_for("optin.confirm", clinic, lang)])
    if patient.opted_out:
        return InboundResult(reason="opted_out")
    if word == "help":
        return InboundResult([text_for("help", clinic, lang)])
    # START from a patient who never opted out asks for a check-in, like the clinic's keywords.
    starting = word == "start" or keywords.is_start_keyword(text, clinic.start_keywords)
    if patient.consent != "given":
        answer = parsing.parse_yes_no(text, lang)
        if starting or answer.value is True:
            patient.consent, patient.consented_at = "given", now
            return InboundResult(_start(session, clinic, patient, "intake", now, reply=True))
        if text and not answer.ok:
            # Whatever they wrote before consenting (other than a plain no) reaches the clinic.
            raise_alert(session, clinic, patient, kind="patient_message", level="info", now=now,
                        episode=open_episode(session, patient.id), summary=text[:1600])
        return InboundResult([text_for("consent.waiting", clinic, lang)])
    if checkin is not None:
        if starting:
            return InboundResult(_repeat_question(checkin))
        if checkin.channel != "sms":
            # Begun on a call: the patient has not seen this question in writing, so this text
            # is not taken as its answer; the check-in goes on by text from this question.
            switch_channel(checkin, "sms")
            return InboundResult(_repeat_question(checkin))
        replies = _step(session, clinic, patient, checkin, engine.Reply(text), now, reply=True)
        return InboundResult(replies)
    if starting:
        return InboundResult(_start(session, clinic, patient, "intake", now, reply=True))
    # An enrolled patient writing out of the blue: the clinic hears it, and we check in early.
    episode = open_episode(session, patient.id)
    raise_alert(session, clinic, patient, kind="patient_message", level="info", now=now,
                episode=episode, summary=text[:1600])
    kind = "followup" if episode is not None else "intake"
    return InboundResult(_start(session, clinic, patient, kind, now, reply=True))


def _unknown_number(session, clinic, sms: _Text, word):
    phone, text, now, opt_out_type = sms.phone, sms.text, sms.now, sms.opt_out_type
    lang = "es" if parsing.normalize(text) in ("dolor", "espalda", "ayuda") else "en"
    if keywords.is_start_keyword(text, clinic.start_keywords):
        patient = Patient(clinic_id=clinic.id, phone_e164=phone, language=lang, consent="given",
                          consented_at=now, created_at=now)
        session.add(patient)
        session.flush()
        log.info("new patient %s by start keyword (clinic %s)", mask_phone(phone), clinic.id)
        return patient
    if word == "stop":
        # Remember the refusal so nothing is ever sent to this number.
        patient = Patient(clinic_id=clinic.id, phone_e164=phone, language=lang, consent="pending",
                          opted_out=True, opted_out_at=now, created_at=now)
        session.add(patient)
        session.flush()
        _record_in(patient, sms, None, sid="")
        if _twilio_answered(clinic, text, opt_out_type, "STOP"):
            return InboundResult(reason="twilio_confirms_stop")
        return InboundResult([text_for("optout.confirm", clinic, lang)])
    if word == "help":
        return InboundResult([text_for("help", clinic, lang)])
    return InboundResult([text_for("unknown_number", clinic, lang)], reason="unknown_number")


def _record_in(patient, sms: _Text, checkin, *, sid: str | None = None) -> None:
    sid = sms.sid if sid is None else sid
    sms.messages.append(_message_row(patient, checkin, sms, direction="in", body=sms.text,
                                     from_number=sms.phone, to_number=sms.clinic_phone,
                                     twilio_sid=sid or None, status="received"))


def _message_row(patient, checkin, sms: _Text, **values) -> dict:
    return {"clinic_id": patient.clinic_id, "patient_id": patient.id,
            "checkin_id": checkin.id if checkin else None, "channel": "sms",
            "created_at": sms.now, "updated_at": sms.now, **values}


def _deliver_replies(session, clinic, sms: _Text, result: InboundResult, *,
                     via_outbox: bool) -> None:
    """Records the replies to one inbound text: as TwiML replies (sent by Twilio from the number
    the patient texted), or queued in the outbox. They belong to the sender's active check-in
    as the use case left it."""
    if not result.replies:
        return
    patient = result.patient
    if patient is None:  # a patient the use case created, or none
        patient = session.execute(
            sa.select(Patient).where(Patient.clinic_id == clinic.id,
                                     Patient.phone_e164 == sms.phone,
                                     Patient.erased_at.is_(None))).scalar_one_or_none()
    checkin = result.checkin
    if checkin is None or checkin.status != "active":  # ended, or another one started
        checkin = active_checkin(session, patient.id) if patient is not None else None
    for text in result.replies:
        if via_outbox:
            # An opted-out patient's only reply is the opt-out confirmation: it must still go.
            kind = "optout_confirm" if patient is not None and patient.opted_out else "reply"
            outbox.enqueue(session, clinic=clinic, body=text, kind=kind, now=sms.now,
                           patient=patient, to=None if patient else sms.phone, checkin=checkin,
                           quiet=False)
        elif patient is not None:
            sms.messages.append(_message_row(patient, checkin, sms, direction="out", body=text,
                                             from_number=sms.clinic_phone,
                                             to_number=patient.phone_e164, twilio_sid=None,
                                             status="replied"))


def _twilio_answered(clinic: Clinic, text: str, opt_out_type: str | None, kind: str) -> bool:
    """Did Twilio's own opt-out handling already confirm this STOP or START to the patient?

    OptOutType says so whenever Twilio sends it, whatever the clinic setting (ours would be a
    second confirmation, and Twilio blocks texts to an opted-out number anyway). Without it,
    the clinic setting and Twilio's default keywords decide.
    """
    if opt_out_type:
        return opt_out_type.upper() == kind
    if not clinic.twilio_optout_handling:
        return False
    return keywords.is_twilio_opt_out(text) if kind == "STOP" else keywords.is_twilio_opt_in(text)


# ---- opt-out ------------------------------------------------------------------------------


def opt_out(session: Session, clinic: Clinic, patient: Patient, text: str, now: datetime,
            opt_out_type: str | None = None) -> list[str]:
    """Records the opt-out, cancels what was pending; returns at most one confirmation."""
    already = patient.opted_out
    patient.opted_out, patient.opted_out_at = True, patient.opted_out_at or now
    cancel_followups(session, patient.id, reason="opted_out")
    outbox.cancel_pending(session, patient.id)
    checkin = active_checkin(session, patient.id)
    if checkin is not None:
        _abandon(session, clinic, patient, checkin, now, "opted out during the check-in")
    if already:
        return []
    if _twilio_answered(clinic, text, opt_out_type, "STOP"):
        return []
    return [text_for("optout.confirm", clinic, patient.language)]


def _abandon(session, clinic, patient, checkin, now, why: str) -> None:
    """Ends a conversation that will not go on; what was answered still reaches the clinic."""
    answers = dict(checkin.state.get("answers") or {})
    checkin.status, checkin.completed_at, checkin.next_event_at = "cancelled", now, None
    checkin.answers = answers
    if checkin.kind == "intake":
        assessment = triage.assess(answers)
    else:
        ctx = checkin.state.get("context") or {}
        assessment = triage.assess_followup(answers,
                                            baseline_pain_score=ctx.get("baseline_pain_score"),
                                            final_check=bool(ctx.get("final_check")))
    checkin.level, checkin.reasons = assessment.level.value, list(assessment.reasons)
    checkin.missing = list(assessment.missing)
    if assessment.level is not triage.Level.SELF_CARE:
        raise_alert(session, clinic, patient, kind="incomplete", now=now,
                    level=assessment.level.value, checkin=checkin, episode=checkin.episode,
                    reasons=assessment.reasons, missing=assessment.missing,
                    summary=f"{checkin.kind.capitalize()} {why}.")


def cancel_followups(session: Session, patient_id: int, *, episode_id: int | None = None,
                     reason: str = "") -> int:
    q = sa.update(FollowUp).where(FollowUp.patient_id == patient_id,
                                  FollowUp.status.in_(("scheduled", "claimed", "paused")))
    if episode_id is not None:
        q = q.where(FollowUp.episode_id == episode_id)
    return session.execute(q.values(status="cancelled")).rowcount


# ---- conversations ------------------------------------------------------------------------


def _context(session, clinic, patient, kind, now, followup: FollowUp | None) -> engine.Context:
    known: dict = {}
    baseline = None
    final_check = False
    next_check_at = None
    if kind == "intake":
        if patient.date_of_birth:
            known["age_years"] = age_on(patient.date_of_birth, now.date())
    else:
        episode = followup.episode if followup else open_episode(session, patient.id)
        if episode is not None:
            baseline = episode.baseline_pain_score
            intake = next((c for c in episode.checkins if c.kind == "intake"), None)
            known["cancer_history"] = bool(intake and (intake.answers or {}).get("cancer_history"))
            upcoming = sorted((f for f in episode.followups if f.status == "scheduled"
                               and (followup is None or f.id != followup.id)),
                              key=lambda f: f.due_at)
            if (followup is not None and followup.kind == "final") or not upcoming:
                # No check comes after this one, so it is the final check (CLINICAL.md §4):
                # "better" with pain left is then PERSISTENT, never a promise of a later check.
                final_check = True
            else:
                next_check_at = upcoming[0].due_at.isoformat()
        else:
            known["cancer_history"] = False
    return engine.Context(
        clinic=clinic.name, emergency=clinic.emergency_number, clinic_phone=clinic.phone,
        timezone=timezone_of(patient, clinic),
        followup_days=(clinic.followup_first_day, clinic.followup_final_day), known=known,
        baseline_pain_score=baseline, final_check=final_check, next_check_at=next_check_at)


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _start(session, clinic, patient, kind, now, *, reply: bool,
           followup: FollowUp | None = None, channel: str = "sms") -> list[str]:
    flow = get_flow(kind)
    ctx = _context(session, clinic, patient, kind, now, followup)
    state, actions = engine.start(flow, now, context=ctx, lang=patient.language, channel=channel)
    episode = followup.episode if followup else (
        open_episode(session, patient.id) if kind == "followup" else None)
    checkin = CheckIn(clinic_id=clinic.id, patient_id=patient.id, kind=kind, channel=channel,
                      flow_id=flow.id, flow_version=flow.version, language=state["lang"],
                      state=state, status="active", answers=dict(state["answers"]),
                      final_check=ctx.final_check, started_at=now,
                      episode_id=episode.id if episode else None,
                      followup_id=followup.id if followup else None,
                      next_event_at=engine.next_event_at(state))
    session.add(checkin)
    session.flush()
    if followup is not None:
        followup.checkin_id = checkin.id
    log.info("check-in %s started (%s, %s)", checkin.id, kind, channel)
    return _apply(session, clinic, patient, checkin, state, actions, now, reply=reply)


def _step(session, clinic, patient, checkin, event, now, *, reply: bool) -> list[str]:
    flow = get_flow(checkin.flow_id, checkin.flow_version)
    state, actions = engine.step(flow, checkin.state, event, now)
    return _apply(session, clinic, patient, checkin, state, actions, now, reply=reply)


def _apply(session, clinic, patient, checkin, state, actions, now, *, reply: bool) -> list[str]:
    checkin.state = state
    checkin.language = state["lang"]
    checkin.answers = dict(state["answers"])
    checkin.next_event_at = engine.next_event_at(state)
    if state["lang"] != patient.language:
        patient.language = state["lang"]
    texts: list[str] = []
    for action in actions:
        if isinstance(action, engine.Send):
            texts.append(action.text)
        elif isinstance(action, engine.Outcome):
            _complete(session, clinic, patient, checkin, action, now)
    if reply:
        return texts
    for text in texts:
        outbox.enqueue(session, clinic=clinic, patient=patient, body=text, kind="checkin",
                       now=now, tz=timezone_of(patient, clinic), checkin=checkin)
    return []


def switch_channel(checkin: CheckIn, channel: str, lang: str | None = None) -> None:
    """Moves a conversation to SMS or voice (a call finished by text, a text check-in continued
    on a call): the engine words its next questions and messages for that channel."""
    state = {**checkin.state, "channel": channel}
    if lang is not None:
        state["lang"] = lang
        checkin.language = lang
    checkin.state, checkin.channel = state, channel


def _repeat_question(checkin: CheckIn) -> list[str]:
    flow = get_flow(checkin.flow_id, checkin.flow_version)
    node = engine.current_question(flow, checkin.state)
    if node is None:
        return []
    return [engine.render(node.text_for(checkin.language, checkin.channel),
                          checkin.state["context"], checkin.language)]


def _complete(session, clinic, patient, checkin, outcome: engine.Outcome, now) -> None:
    a = outcome.assessment
    checkin.status = "timed_out" if outcome.status == "timed_out" else "completed"
    checkin.completed_at, checkin.next_event_at = now, None
    checkin.answers = dict(outcome.answers)
    checkin.level, checkin.reasons, checkin.missing = a.level.value, list(a.reasons), list(a.missing)
    if checkin.kind == "intake":
        episode = _open_new_episode(session, clinic, patient, checkin, outcome, now)
        kind = "incomplete" if a.primary == "INCOMPLETE" else "triage"
    else:
        episode = checkin.episode or open_episode(session, patient.id)
        kind = _followup_outcome(session, patient, checkin, episode, outcome, now)
    if a.level is not triage.Level.SELF_CARE:
        raise_alert(session, clinic, patient, kind=kind, level=a.level.value, now=now,
                    checkin=checkin, episode=episode, reasons=a.reasons, missing=a.missing,
                    summary=_summary(checkin, outcome))
    log.info("check-in %s ended %s: level=%s reasons=%s", checkin.id, outcome.status,
             a.level.value, ",".join(a.reasons))


def _open_new_episode(session, clinic, patient, checkin, outcome, now) -> Episode:
    previous = open_episode(session, patient.id)
    if previous is not None and outcome.status == "timed_out":
        # Only a completed intake replaces an episode (CLINICAL.md §6): an abandoned one is
        # filed under the open episode, whose follow-ups stay due; its alert still goes out.
        checkin.episode_id = previous.id
        return previous
    if previous is not None:
        previous.status, previous.closed_at, previous.closed_reason = "closed", now, "new intake"
        cancel_followups(session, patient.id, episode_id=previous.id, reason="new intake")
        session.flush()
    a = outcome.assessment
    pain = outcome.answers.get("pain_score")
    episode = Episode(clinic_id=clinic.id, patient_id=patient.id, status="open", opened_at=now,
                      baseline_pain_score=pain if isinstance(pain, int) else None,
                      intake_level=a.level.value, last_level=a.level.value)
    session.add(episode)
    session.flush()
    checkin.episode_id = episode.id
    for due in outcome.followups:
        session.add(FollowUp(clinic_id=clinic.id, patient_id=patient.id, episode_id=episode.id,
                             kind=due.kind, due_at=due.due_at,
                             status="scheduled", created_at=now))
    return episode


def _followup_outcome(session, patient, checkin, episode, outcome, now) -> str:
    a = outcome.assessment
    if checkin.followup is not None:
        checkin.followup.status = "done"
    if episode is not None:
        episode.last_level = a.level.value
        if a.closes_episode:
            episode.status, episode.closed_at, episode.closed_reason = "closed", now, "resolved"
            cancel_followups(session, patient.id, episode_id=episode.id, reason="resolved")
        elif a.level is triage.Level.EMERGENCY:
            # Emergency episodes get no automatic follow-up; staff own them from here.
            cancel_followups(session, patient.id, episode_id=episode.id, reason="emergency")
    answered = [k for k, v in outcome.answers.items() if v is not None and k != "cancer_history"]
    if outcome.status == "timed_out" and not answered:
        return "unreachable"
    return "incomplete" if a.primary == "INCOMPLETE" else "followup"


def _summary(checkin: CheckIn, outcome: engine.Outcome) -> str:
    a = outcome.assessment
    what = "Intake" if checkin.kind == "intake" else (
        "Final follow-up" if checkin.final_check else "Follow-up")
    parts = [f"{what} {outcome.status.replace('_', ' ')}: {a.level.value}",
             f"reasons {', '.join(a.reasons)}"]
    if a.missing:
        parts.append(f"not answered: {', '.join(a.missing)}")
    return "; ".join(parts) + "."


def raise_alert(session: Session, clinic: Clinic, patient: Patient, *, kind: str, level: str,
                now: datetime, checkin: CheckIn | None = None, episode: Episode | None = None,
                reasons=(), missing=(), summary: str = "") -> Alert:
    alert = Alert(clinic_id=clinic.id, patient_id=patient.id,
                  episode_id=episode.id if episode else None,
                  checkin_id=checkin.id if checkin else None, kind=kind, level=level,
                  reasons=list(reasons), missing=list(missing), summary=summary, status="open",
                  created_at=now)
    session.add(alert)
    session.flush()
    outbox.mark_send_soon(session)  # its on-call texts
    log.info("alert %s raised: kind=%s level=%s", alert.id, kind, level)
    return alert


# ---- service-initiated conversations ------------------------------------------------------


def enroll_patient(session: Session, clinic: Clinic, *, phone: str, now: datetime,
                   name: str | None = None, date_of_birth: date | None = None,
                   language: str = "en", timezone: str | None = None,
                   calls_allowed: bool = False) -> Patient:
    """Enrolls a patient and queues the consent message (no health question before YES)."""
    phone = normalize_phone(phone)
    if language not in ("en", "es"):
        raise ValueError("language must be 'en' or 'es'")
    exists = session.execute(sa.select(Patient.id).where(
        Patient.clinic_id == clinic.id, Patient.phone_e164 == phone,
        Patient.erased_at.is_(None))).first()
    if exists:
        raise CheckInError("a patient with this phone number is already enrolled")
    patient = Patient(clinic_id=clinic.id, phone_e164=phone, name=name,
                      date_of_birth=date_of_birth, language=language, timezone=timezone,
                      calls_allowed=calls_allowed, consent="pending", created_at=now)
    session.add(patient)
    session.flush()
    outbox.enqueue(session, clinic=clinic, patient=patient, kind="consent", now=now,
                   body=text_for("consent", clinic, language), tz=timezone_of(patient, clinic))
    log.info("patient %s enrolled (clinic %s)", patient.id, clinic.id)
    return patient


def start_checkin_now(session: Session, clinic: Clinic, patient: Patient, now: datetime) -> str:
    """Staff or API asks for a check-in now. Returns what happened."""
    if patient.opted_out:
        raise CheckInError("the patient has opted out of messages")
    tz = timezone_of(patient, clinic)
    if patient.consent != "given":
        outbox.enqueue(session, clinic=clinic, patient=patient, kind="consent", now=now,
                       body=text_for("consent", clinic, patient.language), tz=tz)
        return "consent_requested"
    checkin = active_checkin(session, patient.id)
    if checkin is not None:
        for text in _repeat_question(checkin):
            outbox.enqueue(session, clinic=clinic, patient=patient, body=text, kind="checkin",
                           now=now, tz=tz, checkin=checkin)
        return "continued"
    kind = "followup" if open_episode(session, patient.id) else "intake"
    _start(session, clinic, patient, kind, now, reply=False)
    return f"{kind}_started"


def start_followup(session: Session, followup: FollowUp, now: datetime) -> str:
    """Starts a due follow-up check by SMS. Returns started / deferred / cancelled / quiet."""
    patient, episode = followup.patient, followup.episode
    clinic = session.get(Clinic, followup.clinic_id)
    if patient.opted_out or patient.erased_at or episode.status != "open":
        followup.status = "cancelled"
        return "cancelled"
    tz = timezone_of(patient, clinic)
    allowed = quiet_hours.next_allowed(now, tz)
    if allowed != now:
        followup.status, followup.due_at, followup.claimed_until = "scheduled", allowed, None
        return "quiet"
    if active_checkin(session, patient.id) is not None:
        # One conversation at a time: this one waits until the current one ends, looked at
        # again every DEFER_RECHECK rather than at every beat (a conversation can last days).
        followup.status, followup.claimed_until = "scheduled", None
        followup.due_at = now + DEFER_RECHECK
        return "deferred"
    followup.status, followup.attempts = "started", followup.attempts + 1
    _start(session, clinic, patient, "followup", now, reply=False, followup=followup)
    return "started"


def tick_checkin(session: Session, checkin_id: int, now: datetime) -> bool:
    """Fires a due reminder or timeout of one conversation; True if something happened."""
    checkin = session.execute(sa.select(CheckIn).where(CheckIn.id == checkin_id)
                              .with_for_update()).scalar_one_or_none()
    if checkin is None or checkin.status != "active" or checkin.next_event_at is None \
            or checkin.next_event_at > now:
        return False
    patient = session.execute(sa.select(Patient).where(Patient.id == checkin.patient_id)
                              .with_for_update()).scalar_one()
    clinic = session.get(Clinic, checkin.clinic_id)
    if checkin.channel != "sms":
        switch_channel(checkin, "sms")  # a call left unfinished: reminder and advice go by text
    _step(session, clinic, patient, checkin, engine.Tick(), now, reply=False)
    return True


def due_checkin_ids(session: Session, now: datetime, limit: int = 500) -> list[int]:
    return list(session.execute(
        sa.select(CheckIn.id).where(CheckIn.status == "active", CheckIn.next_event_at <= now)
        .order_by(CheckIn.next_event_at).limit(limit)).scalars())




def text_for_holding(lang: str = "en") -> str:
    """The holding reply while the database is away (no clinic details are at hand)."""
    return messages().get("holding", lang)


def replay_spooled(db, record: dict, now: datetime) -> None:
    """Processes one spooled inbound message; its replies go out through the outbox at once
    (its webhook answered with the holding text long ago). A record seen before does nothing."""
    db.run(handle_inbound_sms, to=record["to"], from_=record["from"], body=record.get("body"),
           sid=record["sid"], now=now, opt_out_type=record.get("opt_out_type"),
           replies_via_outbox=True)
