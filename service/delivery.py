"""Delivery status callbacks: idempotent by SID and status, never moving a message backwards."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.store.models import Message, Outbox

# Later states win; a callback for an earlier state that arrives late changes nothing.
RANK = {"accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3, "receiving": 3,
        "received": 4, "delivered": 5, "undelivered": 5, "failed": 5, "read": 6, "canceled": 5}


def record_status(session: Session, *, sid: str, status: str, error_code: int | None,
                  now: datetime) -> bool:
    """Applies one status callback; returns True if it changed anything."""
    status = (status or "").lower()
    if status not in RANK:
        return False
    message = session.execute(sa.select(Message).where(Message.twilio_sid == sid)
                              .with_for_update()).scalar_one_or_none()
    if message is None:
        row = session.execute(sa.select(Outbox).where(Outbox.twilio_sid == sid)).scalars().first()
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
    return True
