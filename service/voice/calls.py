"""Reminder calls and call statuses.

Reminder calls (the follow-up's 48-hour no-reply step) are rows first: `request_reminder_call`
writes one, `place_call` claims it and places it through a `service.voice.callers.Caller`, and a
busy / no-answer / failed status writes the next attempt (at most `MAX_ATTEMPTS`), each inside
the patient's allowed hours.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import status_callback_url
from service.conversations import checkins
from service.messaging import quiet_hours
from service.messaging.senders import SendError
from service.store.models import Call, CheckIn, Clinic, FollowUp, Message, Patient
from service.voice import context, ivr
from service.voice.callers import Caller, PlacedCall
from service.voice.context import (
    CallContext,
    call_by_sid,
    call_context,
    can_call,
    in_check_in,
    lock_patient,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a reminder call and up to two more tries


RETRY_AFTER = timedelta(hours=1)


REMINDER_CALL_AFTER = timedelta(hours=48)  # a follow-up with no reply this long gets a call


TRANSIENT_RETRY = timedelta(minutes=5)  # Twilio said 429/5xx: place the same attempt again


LEASE = timedelta(minutes=2)



def record_call_status(session: Session, *, call_sid: str, status: str, now: datetime,
                       answered_by: str | None = None, duration: int | None = None,
                       error_code: int | None = None, call_id: int | None = None) -> bool:
    """Applies one call status callback (idempotent, never backwards); True if it changed
    anything. The end of a call moves an unfinished check-in to SMS, and a reminder call that
    was busy, not answered or failed gets its next attempt."""
    status = (status or "").lower()
    if status not in context.STATUS_RANK:
        return False
    call = call_by_sid(session, call_sid)
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
    if context.STATUS_RANK.get(call.status, 0) >= context.STATUS_RANK[status]:
        return False
    call.status, call.updated_at = status, now
    if status not in context.FINAL_STATUSES:
        return True
    call.ended_at, call.stage = now, "ended"
    ctx = call_context(session, call, now)
    log.info("call %s ended: %s", call.id, status)
    if status == "completed":
        ivr.continue_by_text(session, ctx, at_once=False)
    elif status in context.RETRY_STATUSES and call.purpose == "reminder":
        _next_attempt(session, ctx)
    return True


def _next_attempt(session: Session, ctx: CallContext) -> Call | None:
    call = ctx.call
    if call.attempt >= MAX_ATTEMPTS:
        log.info("reminder call %s: no answer after %d attempts", call.id, call.attempt)
        return None
    if not (can_call(ctx.patient) and in_check_in(ctx)):
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


def request_reminder_call(session: Session, target: CheckIn | FollowUp,
                          now: datetime) -> Call | None:
    """Writes the first reminder call of a check-in (or of a follow-up's check-in), due at once
    or at the next allowed hour; None when the patient does not take calls, the check-in is no
    longer waiting, or it already had its reminder calls."""
    checkin = target.checkin if isinstance(target, FollowUp) else target
    if checkin is None or checkin.status != "active":
        return None
    patient = lock_patient(session, checkin.patient_id)
    if not can_call(patient):
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
        ctx = call_context(session, call, now)
        if not (can_call(ctx.patient) and in_check_in(ctx)) or _replied(session, ctx.checkin):
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
            status_callback=status_callback_url(base, call=call_id))
    except SendError as exc:
        return _call_failed(db, call_id, exc, now)
    with db.transaction() as session:
        call = session.execute(sa.select(Call).where(Call.id == call_id)
                               .with_for_update()).scalar_one()
        call.call_sid = call.call_sid or placed.sid
        call.claimed_until, call.last_error = None, None
        if call.status in ("placing", "unknown"):
            call.status = placed.status if placed.status in context.STATUS_RANK else "queued"
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


def place_reminder_call(db, target: CheckIn | FollowUp, now: datetime,
                        caller: Caller) -> str | None:
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

