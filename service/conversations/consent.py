"""Consent: enrolment with its consent text, opting out (ours or Twilio's), and what a text
that can never be delivered means for the patient (CLINICAL.md §7)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flows import engine, keywords
from service.conversations import checkins
from service.conversations.checkins import CheckInError, text_for, timezone_of
from service.messaging import outbox, quiet_hours
from service.messaging.senders import INVALID_NUMBERS, OPTED_OUT, SendError
from service.phones import normalize_phone
from service.records.alerts import raise_alert
from service.store.models import (
    Alert,
    Clinic,
    ClinicNumber,
    Episode,
    FollowUp,
    Message,
    Outbox,
    Patient,
)
from service.store.queries import active_checkin, cancel_followups, cancel_pending_outbox

log = logging.getLogger(__name__)


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


# Why an opt-out cancelled a follow-up that was paused: START brings it back paused.
OPTED_OUT_WHILE_PAUSED = "opted_out_paused"


def opt_out(session: Session, clinic: Clinic, patient: Patient, text: str, now: datetime,
            opt_out_type: str | None = None) -> list[str]:
    """Records the opt-out, cancels what was pending; returns at most one confirmation."""
    already = patient.opted_out
    patient.opted_out, patient.opted_out_at = True, patient.opted_out_at or now
    # Paused ones (by staff, or for a number Twilio refused) stay paused when START restores.
    session.execute(sa.update(FollowUp).where(FollowUp.patient_id == patient.id,
                                              FollowUp.status == "paused")
                    .values(status="cancelled", cancelled_reason=OPTED_OUT_WHILE_PAUSED))
    cancel_followups(session, patient.id, reason="opted_out")
    cancel_pending_outbox(session, patient.id)
    checkin = active_checkin(session, patient.id)
    if checkin is not None:
        checkins.abandon(session, clinic, patient, checkin, now, "opted out during the check-in")
        followup = session.get(FollowUp, checkin.followup_id) if checkin.followup_id else None
        if followup is not None and followup.status == "started":
            # The check this opt-out cut short is one it cancelled: START brings it back.
            followup.status, followup.cancelled_reason = "cancelled", "opted_out"
    if already:
        return []
    if twilio_answered(clinic, text, opt_out_type, "STOP"):
        return []
    return [text_for("optout.confirm", clinic, patient.language)]


def opt_in(session: Session, clinic: Clinic, patient: Patient, text: str, now: datetime,
           opt_out_type: str | None = None) -> list[str]:
    """START/UNSTOP after an opt-out: texts again, and the follow-ups the opt-out cancelled come
    back (CLINICAL.md §7): one still in the future keeps its time, one whose time has passed
    goes at the next allowed hour. Returns the one confirmation, naming the next check's date
    (none when Twilio's own opt-out handling confirmed it already)."""
    patient.opted_out, patient.opted_out_at = False, None
    tz = timezone_of(patient, clinic)
    restored = session.execute(
        sa.select(FollowUp).join(Episode, Episode.id == FollowUp.episode_id).where(
            FollowUp.patient_id == patient.id, FollowUp.status == "cancelled",
            FollowUp.cancelled_reason.in_(("opted_out", OPTED_OUT_WHILE_PAUSED)),
            Episode.status == "open")
        .order_by(FollowUp.due_at)).scalars().all()
    for followup in restored:
        paused = followup.cancelled_reason == OPTED_OUT_WHILE_PAUSED
        followup.status = "paused" if paused else "scheduled"
        followup.cancelled_reason, followup.claimed_until = None, None
        if followup.due_at < now and not paused:
            followup.due_at = quiet_hours.next_allowed(now, tz)
    if restored:
        log.info("patient %s opted back in: %d follow-up(s) restored", patient.id, len(restored))
    if twilio_answered(clinic, text, opt_out_type, "START"):
        return []  # Twilio answers START itself
    upcoming = session.execute(
        sa.select(sa.func.min(FollowUp.due_at)).where(FollowUp.patient_id == patient.id,
                                                      FollowUp.status == "scheduled")).scalar()
    if upcoming is None:
        return [text_for("optin.confirm", clinic, patient.language)]
    when = upcoming if upcoming.tzinfo else upcoming.replace(tzinfo=UTC)
    return [text_for("optin.confirm.next", clinic, patient.language,
                     date=engine.format_date(when, tz, patient.language))]


def twilio_answered(clinic: Clinic, text: str, opt_out_type: str | None, kind: str) -> bool:
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


def after_failed_delivery(session: Session, message: Message, code: int,
                          now: datetime) -> None:
    """A text Twilio took but reported failed in its status callback (a TwiML reply, say): an
    opt-out at Twilio or a number that cannot get texts means what it means for a send
    (`delivery.record_status`'s `on_failed`)."""
    if message.patient_id is not None:
        _number_refused(session, session.get(Clinic, message.clinic_id),
                        session.get(Patient, message.patient_id), code, now)


def remember_opted_out(spool, session: Session, patient_id: int | None) -> None:
    """Tells the inbound spool (service.messaging.spool) that this patient has opted out, on
    every number of their clinic: while the database is away their texts get no holding
    reply either. For the opt-outs no inbound text carries (staff, Twilio's 21610 on a send);
    an opt-out by text is remembered by the webhook (inbound.remember_opt_out)."""
    patient = session.get(Patient, patient_id) if patient_id is not None else None
    if patient is None or not patient.opted_out or patient.erased_at is not None:
        return
    numbers = session.scalars(sa.select(ClinicNumber.phone_e164)
                              .where(ClinicNumber.clinic_id == patient.clinic_id)).all()
    spool.remember_patient_opt_out(numbers, patient.phone_e164, True)


def remember_all_opted_out(spool, session: Session) -> int:
    """remember_opted_out for every patient who has opted out (`triage spool
    remember-opt-outs`, once after an upgrade from a version whose spool did not hear of every
    opt-out); how many patients."""
    rows = session.execute(
        sa.select(Patient.phone_e164, ClinicNumber.phone_e164)
        .join(ClinicNumber, ClinicNumber.clinic_id == Patient.clinic_id)
        .where(Patient.opted_out.is_(True), Patient.erased_at.is_(None))).all()
    for phone, number in rows:
        spool.remember_opt_out(number, phone, True)
    return len({phone for phone, _ in rows})


def _number_refused(session: Session, clinic: Clinic, patient: Patient, code: int | None,
                    now: datetime) -> bool:
    if code == OPTED_OUT:
        # The patient told Twilio STOP (Twilio blocks us): the same as telling us. Twilio has
        # confirmed it to them already, so nothing more is sent.
        opt_out(session, clinic, patient, "", now, opt_out_type="STOP")
        return True
    if code in INVALID_NUMBERS:
        if not patient.number_invalid:
            patient.number_invalid = True
            raise_alert(session, clinic, patient, kind="invalid_number", level="soon",
                        now=now, summary="The patient's phone number cannot get texts "
                        f"(Twilio error {code}). Please check the number.")
        return True
    return False


def after_failed_send(session: Session, row: Outbox, exc: SendError, now: datetime) -> None:
    """What a text that will never go out means: opted out, a bad number, or an alert
    (`outbox.send_one`'s `on_failed`)."""
    patient = session.get(Patient, row.patient_id) if row.patient_id else None
    clinic = session.get(Clinic, row.clinic_id)
    if patient is not None and _number_refused(session, clinic, patient, exc.code, now):
        return
    if patient is None and row.alert_id is not None:
        patient = session.get(Patient, session.get(Alert, row.alert_id).patient_id)
    if patient is not None:
        what = "An on-call text" if row.kind == "oncall" else "A text to the patient"
        raise_alert(session, clinic, patient, kind="send_failed", level="soon", now=now,
                             summary=f"{what} could not be sent after {row.attempts} "
                             f"attempt(s) ({exc}).")
