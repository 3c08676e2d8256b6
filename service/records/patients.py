"""Patient records for clinic systems and staff: find, read the history, hold or cancel the
follow-ups, and erase (the API and the dashboard call these)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.phones import normalize_phone
from service.records import audit
from service.store.models import (
    Alert,
    Call,
    CheckIn,
    Episode,
    FollowUp,
    Message,
    Outbox,
    Patient,
    WebhookReceipt,
)
from service.store.queries import (
    PENDING_FOLLOWUP,
    active_checkin,
    cancel_followups,
    cancel_pending_outbox,
)

log = logging.getLogger(__name__)



class PatientStateError(Exception):
    """The patient's state does not allow this (maps to 409 in the API)."""


def get_patient(session: Session, clinic_id: int, patient_id: int, *,
                for_update: bool = False) -> Patient | None:
    """The clinic's patient, or None: another clinic's or an erased patient does not exist."""
    query = sa.select(Patient).where(Patient.id == patient_id, Patient.clinic_id == clinic_id,
                                     Patient.erased_at.is_(None))
    if for_update:
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


def list_patients(session: Session, clinic_id: int, *, phone: str | None = None,
                  name: str | None = None, after_id: int | None = None,
                  limit: int = 50) -> list[Patient]:
    """Patients by id; `phone` is matched after normalizing (ValueError if it is no number),
    `name` as a case-insensitive part of the name."""
    query = sa.select(Patient).where(Patient.clinic_id == clinic_id, Patient.erased_at.is_(None))
    if phone is not None:
        query = query.where(Patient.phone_e164 == normalize_phone(phone))
    if name:
        query = query.where(Patient.name.icontains(name, autoescape=True))
    if after_id is not None:
        query = query.where(Patient.id > after_id)
    return list(session.execute(query.order_by(Patient.id).limit(limit)).scalars())


@dataclass
class History:
    """Everything the service holds about one patient's back pain, oldest first."""

    episodes: list[Episode]
    checkins: list[CheckIn]
    messages: list[Message]
    followups: list[FollowUp]


def patient_history(session: Session, patient: Patient) -> History:
    def rows(model, *order):
        return list(session.execute(
            sa.select(model).where(model.patient_id == patient.id).order_by(*order)).scalars())

    return History(
        episodes=rows(Episode, Episode.opened_at, Episode.id),
        checkins=rows(CheckIn, CheckIn.started_at, CheckIn.id),
        messages=rows(Message, Message.created_at, Message.id),
        followups=rows(FollowUp, FollowUp.due_at, FollowUp.id),
    )


def pending_followups(session: Session, patient_id: int) -> list[FollowUp]:
    return list(session.execute(
        sa.select(FollowUp).where(FollowUp.patient_id == patient_id,
                                  FollowUp.status.in_(PENDING_FOLLOWUP))
        .order_by(FollowUp.due_at, FollowUp.id)).scalars())


def pause_followups(session: Session, patient: Patient, *, actor_type: str,
                    actor_id: str | int, now: datetime) -> int:
    """Holds the scheduled follow-ups (a claimed one is already starting); returns how many."""
    count = session.execute(
        sa.update(FollowUp).where(FollowUp.patient_id == patient.id,
                                  FollowUp.status == "scheduled")
        .values(status="paused")).rowcount
    audit.record(session, clinic_id=patient.clinic_id, patient_id=patient.id,
                 action="followups_paused", actor_type=actor_type, actor_id=actor_id,
                 detail={"count": count}, now=now)
    return count


def resume_followups(session: Session, patient: Patient, *, actor_type: str,
                     actor_id: str | int, now: datetime) -> int:
    """Puts paused follow-ups back on the schedule; one whose day has passed goes out at the
    next allowed hour. Refused for a patient who opted out.

    Follow-ups paused because Twilio refused the number (`number_invalid`, with its alert
    asking staff to check it) are resumed by the same act: whoever resumes them has checked
    the number, and texts to it are tried again (another refusal pauses them again)."""
    if patient.opted_out:
        raise PatientStateError("the patient has opted out of messages")
    number_checked = patient.number_invalid
    patient.number_invalid = False
    count = session.execute(
        sa.update(FollowUp).where(FollowUp.patient_id == patient.id, FollowUp.status == "paused")
        .values(status="scheduled", claimed_until=None)).rowcount
    detail = {"count": count, **({"number_checked": True} if number_checked else {})}
    audit.record(session, clinic_id=patient.clinic_id, patient_id=patient.id,
                 action="followups_resumed", actor_type=actor_type, actor_id=actor_id,
                 detail=detail, now=now)
    return count


def cancel_patient_followups(session: Session, patient: Patient, *, actor_type: str,
                             actor_id: str | int, now: datetime) -> int:
    count = cancel_followups(session, patient.id, reason=f"cancelled by {actor_type}")
    audit.record(session, clinic_id=patient.clinic_id, patient_id=patient.id,
                 action="followups_cancelled", actor_type=actor_type, actor_id=actor_id,
                 detail={"count": count}, now=now)
    return count


def erase_patient(session: Session, patient: Patient, *, actor_type: str, actor_id: str | int,
                  now: datetime) -> None:
    """Removes what the patient said and what was said to them, and who they are.

    Kept: the rows themselves (ids, times, statuses, advice levels) so counts and the audit
    trail stay whole, and an audit row saying who erased the record. Gone: name, date of birth,
    timezone, phone number (in the patient, messages and outbox), message bodies, answers,
    conversation state, reasons, alert summaries and notes. Nothing is sent to them again.
    """
    patient_id, phone = patient.id, patient.phone_e164
    checkin = active_checkin(session, patient_id)
    if checkin is not None:
        checkin.status, checkin.completed_at = "cancelled", now
    cancel_followups(session, patient_id, reason="erased")
    cancel_pending_outbox(session, patient_id)

    session.execute(sa.update(CheckIn).where(CheckIn.patient_id == patient_id).values(
        answers={}, state={}, reasons=[], missing=[], next_event_at=None))
    inbound_sids = [sid for sid in session.execute(
        sa.select(Message.twilio_sid).where(Message.patient_id == patient_id,
                                            Message.direction == "in",
                                            Message.twilio_sid.is_not(None))).scalars()]
    session.execute(sa.update(Message).where(Message.patient_id == patient_id).values(
        body="",
        from_number=sa.case((Message.from_number == phone, ""), else_=Message.from_number),
        to_number=sa.case((Message.to_number == phone, ""), else_=Message.to_number)))
    # Replies held for duplicate deliveries: kept (a late duplicate still gets no second
    # effect) but emptied.
    for chunk in range(0, len(inbound_sids), 500):
        session.execute(sa.update(WebhookReceipt)
                        .where(WebhookReceipt.sid.in_(inbound_sids[chunk:chunk + 500]))
                        .values(response_body="[]"))
    session.execute(sa.update(Outbox).where(
        sa.or_(Outbox.patient_id == patient_id,
               sa.and_(Outbox.clinic_id == patient.clinic_id, Outbox.to_number == phone)))
        .values(body="", to_number=""))
    # Calls: the number, the words read back and the last prompt; attempts not yet placed end.
    session.execute(sa.update(Call).where(Call.patient_id == patient_id).values(
        pending={}, last_reply={},
        from_number=sa.case((Call.from_number == phone, ""), else_=Call.from_number),
        to_number=sa.case((Call.to_number == phone, ""), else_=Call.to_number),
        status=sa.case((Call.status == "pending", "cancelled"), else_=Call.status)))
    session.execute(sa.update(Alert).where(Alert.patient_id == patient_id).values(
        summary="", reasons=[], missing=[], resolution_note=None))
    session.execute(sa.update(Alert).where(Alert.patient_id == patient_id,
                                           Alert.status != "resolved").values(
        status="resolved", resolved_at=now, resolved_by=f"{actor_type}:{actor_id}",
        resolution_note="patient record erased"))
    session.execute(sa.update(Episode).where(Episode.patient_id == patient_id).values(
        baseline_pain_score=None))
    session.execute(sa.update(Episode).where(Episode.patient_id == patient_id,
                                             Episode.status == "open").values(
        status="closed", closed_at=now, closed_reason="erased"))

    patient.name, patient.date_of_birth, patient.timezone = None, None, None
    patient.phone_e164 = f"erased-{patient_id}"
    patient.opted_out, patient.opted_out_at = True, patient.opted_out_at or now
    patient.erased_at = now
    audit.record(session, clinic_id=patient.clinic_id, patient_id=patient_id,
                 action="patient_erased", actor_type=actor_type, actor_id=actor_id, now=now)
    log.info("patient %s erased by %s:%s", patient_id, actor_type, actor_id)
