"""On-call texts: an emergency or urgent alert also goes to the clinic's on-call number.

The text names the clinic and links to the alert, never a health detail. While the alert stays
open (not acknowledged), it is sent again every 30 minutes, `max_repeats` times at most; the
count and time of the last one are kept on the alert (`oncall_sent_count`, `oncall_last_at`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.conversations.checkins import text_for
from service.messaging import outbox
from service.store.models import Alert, Clinic

log = logging.getLogger(__name__)

LEVELS = ("emergency", "urgent")
REPEAT_EVERY = timedelta(minutes=30)
DEFAULT_BASE_URL = "http://127.0.0.1:5000"


def alert_link(base_url: str | None, alert_id: int) -> str:
    return f"{(base_url or DEFAULT_BASE_URL).rstrip('/')}/dashboard/alerts/{alert_id}"


def _due(now: datetime, max_repeats: int):
    return sa.and_(
        Alert.status == "open", Alert.level.in_(LEVELS),
        Alert.oncall_sent_count <= max_repeats,  # the first text plus max_repeats repeats
        sa.or_(Alert.oncall_last_at.is_(None), Alert.oncall_last_at <= now - REPEAT_EVERY),
        Alert.clinic_id.in_(sa.select(Clinic.id).where(Clinic.oncall_number.is_not(None))),
    )


def due_alert_ids(session: Session, now: datetime, *, max_repeats: int,
                  limit: int = 200) -> list[int]:
    """Open urgent/emergency alerts whose on-call text (first or repeat) is due."""
    return list(session.execute(sa.select(Alert.id).where(_due(now, max_repeats))
                                .order_by(Alert.created_at, Alert.id).limit(limit)).scalars())


def notify(session: Session, alert_id: int, now: datetime, *, max_repeats: int,
           base_url: str | None) -> int | None:
    """Queues the on-call text of one alert if it is (still) due; returns the outbox id."""
    alert = session.execute(sa.select(Alert).where(Alert.id == alert_id, _due(now, max_repeats))
                            .with_for_update()).scalar_one_or_none()
    if alert is None:
        return None
    clinic = session.get(Clinic, alert.clinic_id)
    body = text_for("oncall", clinic, "en", link=alert_link(base_url, alert.id))
    row = outbox.enqueue(session, clinic=clinic, body=body, kind="oncall", now=now,
                         to=clinic.oncall_number, alert=alert, quiet=False)
    alert.oncall_sent_count += 1
    alert.oncall_last_at = now
    log.info("on-call text %s of alert %s queued (level=%s)", alert.oncall_sent_count,
             alert.id, alert.level)
    return row.id
