"""The outbox: messages the service starts are rows first (same transaction as the change that
caused them), then sent one row at a time; a row is sent at most once."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.messaging import quiet_hours
from service.messaging.senders import Sender, SendError
from service.store.models import Clinic, Message, Outbox, Patient
from service.store.queries import IN_FLIGHT, mark_send_soon, outbox_due

FailedForGood = Callable[[Session, Outbox, SendError, datetime], None]
"""What a text that will never go out means for its patient (opted out at Twilio, a bad
number, an alert): a policy of the conversations room, handed to `send_one` by its caller."""

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)  # a row claimed by a worker that died is claimed again after this
RETRY_BASE = timedelta(seconds=30)  # first retry after a transient failure (then doubling)
RETRY_CAP = timedelta(minutes=15)
DEFAULT_MAX_ATTEMPTS = 6


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff with jitter: about 30 s, 1, 2, 4, 8 min ..., at most 15 min."""
    delay = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempts - 1))
    return delay * random.uniform(0.5, 1.0)




def enqueue(session: Session, *, clinic: Clinic, body: str, kind: str, now: datetime,
            patient: Patient | None = None, to: str | None = None, tz: str | None = None,
            checkin=None, alert=None, quiet: bool = True, flush: bool = True) -> Outbox:
    """Queues a message; with a timezone and `quiet`, it waits for 08:00-21:00 local time.

    `flush=False` leaves the row to the unit of work's next flush or its commit (its id is
    not known until then), so that texts queued together are written together."""
    not_before = quiet_hours.next_allowed(now, tz) if (quiet and tz) else now
    row = Outbox(clinic_id=clinic.id, patient_id=patient.id if patient else None,
                 checkin_id=checkin.id if checkin else None, alert_id=alert.id if alert else None,
                 kind=kind, to_number=to or patient.phone_e164,
                 from_number=clinic.numbers[0].phone_e164 if clinic.numbers else None,
                 body=body, status="pending", not_before=not_before, created_at=now)
    if checkin is not None and checkin.id is None:
        row.checkin = checkin  # not written yet either: its id comes with the same flush
    session.add(row)
    if flush:
        session.flush()
    mark_send_soon(session)
    return row




def due_batches(session: Session, now: datetime, *, to_number: str | None = None,
                to_numbers: Iterable[str] | None = None, limit: int = 500) -> list[list[int]]:
    """Due rows grouped by recipient, each group in queue order: one task sends one group, so
    one patient's texts go out in order while different patients' go out side by side.
    `to_number` / `to_numbers`: only the rows to this recipient / these recipients."""
    query = sa.select(Outbox.id, Outbox.to_number).where(outbox_due(now))
    if to_number is not None:
        query = query.where(Outbox.to_number == to_number)
    if to_numbers is not None:
        query = query.where(Outbox.to_number.in_(list(to_numbers)))
    groups: dict[str, list[int]] = {}
    for row_id, to in session.execute(query.order_by(Outbox.id).limit(limit)):
        groups.setdefault(to, []).append(row_id)
    return list(groups.values())


@dataclass(frozen=True)
class SendOutcome:
    status: str  # sent | skipped | retry | failed | unknown | throttled
    detail: str = ""
    code: int | None = None


def claim(session: Session, outbox_id: int, now: datetime) -> Outbox | None:
    """Takes a row for sending (locked, lease set); None if it is not ours to send."""
    row = session.execute(sa.select(Outbox).where(Outbox.id == outbox_id)
                          .with_for_update(skip_locked=True)).scalar_one_or_none()
    if row is None:
        return None
    ready = (row.status == "pending" and row.not_before <= now) or (
        row.status in IN_FLIGHT and row.claimed_until is not None
        and row.claimed_until <= now)
    if not ready:
        return None
    if _earlier_unsent(session, row, now):
        return None  # texts to one number go out in the order they were queued
    if row.patient_id is not None:
        patient = session.get(Patient, row.patient_id)
        # The one confirmation of an opt-out still goes to the patient who just opted out.
        opted_out = patient.opted_out and row.kind != "optout_confirm"
        if opted_out or patient.erased_at or patient.number_invalid:
            row.status, row.last_error = "cancelled", "patient opted out or unreachable"
            return None
    # A row left "sending" (its worker died) or "unknown" (the request may have reached Twilio)
    # is looked for in Twilio's message list before it is sent again.
    row.check_first = row.status in IN_FLIGHT
    row.status, row.claimed_until, row.attempts = "sending", now + LEASE, row.attempts + 1
    return row


def _earlier_unsent(session: Session, row: Outbox, now: datetime) -> bool:
    """Is an older text to the same number still on its way (due, sending, or retrying)?"""
    return session.execute(sa.select(Outbox.id).where(
        Outbox.to_number == row.to_number, Outbox.id < row.id,
        sa.or_(Outbox.status.in_(IN_FLIGHT),
               sa.and_(Outbox.status == "pending",
                       sa.or_(Outbox.not_before <= now, Outbox.attempts > 0))),
    ).limit(1)).first() is not None


def send_one(db, outbox_id: int, sender: Sender, now: datetime, *, on_failed: FailedForGood,
             status_callback: str | None = None,
             throttle: Callable[[str | None], bool] | None = None,
             max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> SendOutcome:
    """Claim (one transaction), send (no transaction open), record (another transaction).

    `throttle(from_number)` waits for the sending number's rate limit; False gives the row
    back untouched. After `max_attempts` transient failures, or a permanent error, the row
    fails and `on_failed(session, row, error, now)` says what that means, in the same
    transaction.
    """
    with db.transaction() as session:
        row = claim(session, outbox_id, now)
        if row is None:
            return SendOutcome("skipped")
        to, from_, body = row.to_number, row.from_number, row.body
        resend = row.check_first
        since = row.created_at - timedelta(minutes=1)
    if throttle is not None and not throttle(from_):
        with db.transaction() as session:
            row = session.get(Outbox, outbox_id)
            row.status = "unknown" if resend else "pending"
            row.claimed_until = now if resend else None
            row.attempts -= 1
        return SendOutcome("throttled")
    try:
        sid = sender.find_sent(to=to, from_=from_, body=body, since=since) if resend else None
        result_sid, status = (sid, "sent") if sid else _send(sender, to, from_, body,
                                                             status_callback)
    except SendError as exc:
        return _record_failure(db, outbox_id, exc, now, max_attempts, on_failed)
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


def _record_failure(db, outbox_id: int, exc: SendError, now: datetime, max_attempts: int,
                    on_failed: FailedForGood) -> SendOutcome:
    with db.transaction() as session:
        row = session.get(Outbox, outbox_id)
        row.last_error = str(exc)[:500]
        if exc.transient and row.attempts < max_attempts:
            if exc.unknown:
                # It may have gone out: keep the lease, and look for it before any resend.
                row.status, row.claimed_until = "unknown", now + LEASE
                outcome = SendOutcome("unknown", str(exc), exc.code)
            else:
                row.status, row.claimed_until = "pending", None
                row.not_before = now + retry_delay(row.attempts)
                outcome = SendOutcome("retry", str(exc), exc.code)
            log.info("outbox %s attempt %s failed (%s), tried again later", outbox_id,
                     row.attempts, exc)
            return outcome
        row.status, row.claimed_until = "failed", None
        on_failed(session, row, exc, now)
    log.warning("outbox %s failed for good after %s attempt(s): %s", outbox_id, row.attempts, exc)
    return SendOutcome("failed", str(exc), exc.code)

