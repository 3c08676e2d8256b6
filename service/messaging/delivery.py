"""Delivery status callbacks: idempotent by SID and status, never moving a message backwards.

Carrier delivery failures (Twilio errors 30003-30008: unreachable, blocked, unknown number,
landline, filtered, unknown) are counted per patient since the last delivered text; the third
in a row raises a `delivery_failure` alert (one open alert per patient at a time). Other
failures (an opt-out at Twilio, 21610; a number that cannot get texts, 21211/21614) go to the
caller's `on_failed`, as a send that fails with them does.

TwiML replies (the answers to a patient's text, sent by Twilio from its <Message> verbs) have no
Twilio SID when they are recorded: each carries a `reply_key` in its twilio_sid, and its
<Message action> URL carries the same key, so its first status callback finds it and gives it
its SID; the rest is as for outbox texts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.messaging import outbox
from service.records.alerts import raise_alert
from service.store.models import Alert, Clinic, Message, Outbox, Patient

# Later states win; a callback for an earlier state that arrives late changes nothing.
RANK = {"accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3, "receiving": 3,
        "received": 4, "delivered": 5, "undelivered": 5, "failed": 5, "read": 6, "canceled": 5}

DELIVERY_ERRORS = range(30003, 30009)  # 30003-30008
FAILURES_BEFORE_ALERT = 3


def reply_key(inbound_sid: str, index: int) -> str:
    """The key of the `index`-th TwiML reply to the inbound text `inbound_sid` (the same for a
    duplicate delivery of that text), until its status callback names its Twilio SID."""
    return f"reply-{hashlib.sha256(inbound_sid.encode()).hexdigest()[:24]}-{index}"


def record_status(session: Session, *, sid: str, status: str, error_code: int | None,
                  now: datetime, to: str | None = None, reply: str | None = None,
                  on_failed: Callable[[Session, Message, int, datetime], None] | None = None
                  ) -> bool:
    """Applies one status callback; returns True if it changed anything.

    `reply` is the reply_key of a TwiML reply (from its action URL): the message it names gets
    `sid`. Otherwise a callback can beat the sender's own record of the SID (Twilio answers the
    send, then calls back before our worker commits). Such a callback is matched by `to` to the
    outbox row still in flight to that number (a number's texts are sent one at a time), not
    dropped.
    """
    status = (status or "").lower()
    if status not in RANK:
        return False
    match = Message.twilio_sid == sid
    if reply:
        # Two callbacks of one reply racing: the second waits for the first's lock and then
        # finds the row by the SID the first gave it.
        match = sa.or_(match, Message.twilio_sid == reply)
    message = session.execute(sa.select(Message).where(match)
                              .with_for_update()).scalars().first()
    if message is not None and reply and message.twilio_sid == reply:
        message.twilio_sid = sid
    if message is None and reply:
        return False  # a reply that was not recorded (to a number no clinic knows)
    if message is None:
        row = session.execute(sa.select(Outbox).where(Outbox.twilio_sid == sid)).scalars().first()
        if row is None and to:
            row = session.execute(
                sa.select(Outbox).where(Outbox.to_number == to, Outbox.twilio_sid.is_(None),
                                        Outbox.status.in_(("sending", "unknown")),
                                        # Not on its way now (a reply may have passed it).
                                        sa.not_(outbox.waiting_for_morning(now)))
                .order_by(Outbox.id).limit(1).with_for_update()).scalars().first()
            if row is not None:
                row.twilio_sid = sid
        if row is None:
            return False
        message = Message(clinic_id=row.clinic_id, patient_id=row.patient_id,
                          checkin_id=row.checkin_id, direction="out", channel="sms",
                          from_number=row.from_number or "", to_number=row.to_number,
                          body=row.body, twilio_sid=sid, status=None, created_at=now)
        session.add(message)
    old = message.status
    if old is not None and RANK.get(old, -1) >= RANK[status]:
        return False
    message.status, message.updated_at = status, now
    if error_code:
        message.error_code = error_code
    if status in ("undelivered", "failed") and error_code and message.patient_id is not None:
        session.flush()
        if error_code in DELIVERY_ERRORS:
            _count_delivery_failure(session, message, now)
        elif on_failed is not None:
            on_failed(session, message, error_code, now)
    return True


def delivery_failures(session: Session, patient_id: int) -> int:
    """Carrier delivery failures of a patient's texts since the last one delivered."""
    last_ok = session.execute(
        sa.select(sa.func.max(Message.id)).where(
            Message.patient_id == patient_id, Message.direction == "out",
            Message.status.in_(("delivered", "read")))).scalar()
    query = sa.select(sa.func.count()).select_from(Message).where(
        Message.patient_id == patient_id, Message.direction == "out",
        Message.status.in_(("undelivered", "failed")),
        Message.error_code.between(DELIVERY_ERRORS.start, DELIVERY_ERRORS.stop - 1))
    if last_ok is not None:
        query = query.where(Message.id > last_ok)
    return session.execute(query).scalar_one()


def _count_delivery_failure(session: Session, message: Message, now: datetime) -> None:
    # Callbacks for one patient's texts arrive side by side: the patient's row lock makes the
    # count and the "one open alert" check one at a time (the webhook's lock order: patient).
    patient = session.execute(sa.select(Patient).where(Patient.id == message.patient_id)
                              .with_for_update()).scalar_one()
    failures = delivery_failures(session, message.patient_id)
    if failures < FAILURES_BEFORE_ALERT:
        return
    already = session.execute(sa.select(Alert.id).where(
        Alert.patient_id == message.patient_id, Alert.kind == "delivery_failure",
        Alert.status == "open")).first()
    if already is not None:
        return
    raise_alert(session, session.get(Clinic, message.clinic_id), patient,
                kind="delivery_failure", level="soon", now=now,
                summary=f"{failures} texts in a row did not reach the patient's phone "
                        f"(last carrier error {message.error_code}). Please call the patient.")
