"""The outbox: messages the service starts are rows first (same transaction as the change that
caused them), then sent one row at a time; a row is sent at most once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service import quiet_hours
from service.senders import INVALID_NUMBERS, OPTED_OUT, Sender, SendError
from service.store.models import Clinic, Message, Outbox, Patient

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)  # a row claimed by a worker that died is claimed again after this


def enqueue(session: Session, *, clinic: Clinic, body: str, kind: str, now: datetime,
            patient: Patient | None = None, to: str | None = None, tz: str | None = None,
            checkin=None, alert=None, quiet: bool = True) -> Outbox:
    """Queues a message; with a timezone and `quiet`, it waits for 08:00-21:00 local time."""
    not_before = quiet_hours.next_allowed(now, tz) if (quiet and tz) else now
    row = Outbox(clinic_id=clinic.id, patient_id=patient.id if patient else None,
                 checkin_id=checkin.id if checkin else None, alert_id=alert.id if alert else None,
                 kind=kind, to_number=to or patient.phone_e164,
                 from_number=clinic.numbers[0].phone_e164 if clinic.numbers else None,
                 body=body, status="pending", not_before=not_before, created_at=now)
    session.add(row)
    session.flush()
    return row


def cancel_pending(session: Session, patient_id: int) -> int:
    return session.execute(
        sa.update(Outbox).where(Outbox.patient_id == patient_id, Outbox.status == "pending")
        .values(status="cancelled")).rowcount


def due_ids(session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Rows ready to send: pending and due, or claimed by a sender whose lease ran out."""
    return list(session.execute(
        sa.select(Outbox.id).where(
            sa.or_(
                sa.and_(Outbox.status == "pending", Outbox.not_before <= now),
                sa.and_(Outbox.status.in_(("sending", "unknown")), Outbox.claimed_until <= now),
            )).order_by(Outbox.id).limit(limit)).scalars())


@dataclass(frozen=True)
class SendOutcome:
    status: str  # sent | skipped | retry | failed | unknown
    detail: str = ""
    code: int | None = None


def claim(session: Session, outbox_id: int, now: datetime) -> Outbox | None:
    """Takes a row for sending (locked, lease set); None if it is not ours to send."""
    row = session.execute(sa.select(Outbox).where(Outbox.id == outbox_id)
                          .with_for_update(skip_locked=True)).scalar_one_or_none()
    if row is None:
        return None
    ready = (row.status == "pending" and row.not_before <= now) or (
        row.status in ("sending", "unknown") and row.claimed_until is not None
        and row.claimed_until <= now)
    if not ready:
        return None
    if row.patient_id is not None:
        patient = session.get(Patient, row.patient_id)
        if patient.opted_out or patient.erased_at or patient.number_invalid:
            row.status, row.last_error = "cancelled", "patient opted out or unreachable"
            return None
    row.status, row.claimed_until, row.attempts = "sending", now + LEASE, row.attempts + 1
    return row


def send_one(db, outbox_id: int, sender: Sender, now: datetime, *,
             status_callback: str | None = None) -> SendOutcome:
    """Claim (one transaction), send (no transaction open), record (another transaction)."""
    with db.transaction() as session:
        row = claim(session, outbox_id, now)
        if row is None:
            return SendOutcome("skipped")
        to, from_, body = row.to_number, row.from_number, row.body
        resend = row.attempts > 1
        since = row.created_at - timedelta(minutes=1)
    try:
        sid = sender.find_sent(to=to, from_=from_, body=body, since=since) if resend else None
        result_sid, status = (sid, "sent") if sid else _send(sender, to, from_, body,
                                                             status_callback)
    except SendError as exc:
        return _record_failure(db, outbox_id, exc, now)
    with db.transaction() as session:
        row = session.get(Outbox, outbox_id)
        row.status, row.twilio_sid, row.sent_at, row.claimed_until = "sent", result_sid, now, None
        row.last_error = None
        if session.execute(sa.select(Message.id).where(Message.twilio_sid == result_sid)).first() \
                is None:
            session.add(Message(clinic_id=row.clinic_id, patient_id=row.patient_id,
                                checkin_id=row.checkin_id, direction="out", channel="sms",
                                from_number=from_ or "", to_number=to, body=body,
                                twilio_sid=result_sid, status=status, created_at=now))
    log.info("outbox %s sent via %s as %s", outbox_id, sender.name, result_sid)
    return SendOutcome("sent", result_sid)


def _send(sender: Sender, to, from_, body, status_callback) -> tuple[str, str]:
    result = sender.send(to=to, from_=from_, body=body, status_callback=status_callback)
    return result.sid, result.status


def _record_failure(db, outbox_id: int, exc: SendError, now: datetime) -> SendOutcome:
    with db.transaction() as session:
        row = session.get(Outbox, outbox_id)
        row.last_error = str(exc)[:500]
        if exc.unknown:
            # It may have gone out: keep the lease, and look for it before any resend.
            row.status, row.claimed_until = "unknown", now + LEASE
            return SendOutcome("unknown", str(exc), exc.code)
        if exc.transient:
            row.status, row.claimed_until = "pending", None
            return SendOutcome("retry", str(exc), exc.code)
        row.status, row.claimed_until = "failed", None
        patient = session.get(Patient, row.patient_id) if row.patient_id else None
        if patient is not None and exc.code == OPTED_OUT:
            patient.opted_out, patient.opted_out_at = True, patient.opted_out_at or now
        elif patient is not None and exc.code in INVALID_NUMBERS:
            patient.number_invalid = True
    log.warning("outbox %s failed for good: %s", outbox_id, exc)
    return SendOutcome("failed", str(exc), exc.code)
