"""Alerts: raised by the use cases; listed, acknowledged and resolved by staff and systems.

Resolving the alert of a final follow-up check whose level is `soon` or higher closes the
episode as "referred" (CLINICAL.md section 4).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.records import audit
from service.store.models import Alert, ApiToken, CheckIn, Clinic, Episode, Patient, Staff
from service.store.queries import cancel_followups, mark_send_soon

log = logging.getLogger(__name__)

# Most pressing first: the order of the clinic's worklist.
LEVEL_ORDER = ("emergency", "urgent", "soon", "info")
REFERRAL_LEVELS = ("emergency", "urgent", "soon")
# What was done about a soon-or-higher alert is part of the record; an info alert ("ok
# thanks") may be resolved in one click, its note optional.
NOTE_REQUIRED_LEVELS = ("emergency", "urgent", "soon")
MAX_NOTE_LENGTH = 2000


class AlertStateError(Exception):
    """The alert is not in a state that allows this (maps to 409 in the API)."""


def level_rank():
    """An SQL expression ordering alerts by level: 0 for emergency, 3 for info."""
    return sa.case({level: rank for rank, level in enumerate(LEVEL_ORDER)}, value=Alert.level,
                   else_=len(LEVEL_ORDER))


def get_alert(session: Session, clinic_id: int, alert_id: int, *,
              for_update: bool = False) -> Alert | None:
    """The clinic's alert, or None (another clinic's alert does not exist for this one)."""
    query = sa.select(Alert).where(Alert.id == alert_id, Alert.clinic_id == clinic_id)
    if for_update:
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


def list_alerts(session: Session, clinic_id: int, *, status: str | None = None,
                level: str | None = None, kind: str | None = None,
                patient_id: int | None = None, after: tuple[int, datetime, int] | None = None,
                limit: int = 50) -> list[Alert]:
    """Alerts by level (emergency first), then oldest first; `after` is the key of the last
    alert of the previous page, (level rank, created_at, id)."""
    rank = level_rank()
    query = sa.select(Alert).where(Alert.clinic_id == clinic_id)
    if status is not None:
        query = query.where(Alert.status == status)
    if level is not None:
        query = query.where(Alert.level == level)
    if kind is not None:
        query = query.where(Alert.kind == kind)
    if patient_id is not None:
        query = query.where(Alert.patient_id == patient_id)
    if after is not None:
        after_rank, after_created, after_id = after
        query = query.where(sa.or_(
            rank > after_rank,
            sa.and_(rank == after_rank, Alert.created_at > after_created),
            sa.and_(rank == after_rank, Alert.created_at == after_created, Alert.id > after_id),
        ))
    query = query.order_by(rank, Alert.created_at, Alert.id).limit(limit)
    return list(session.execute(query).scalars())


def sort_key(alert: Alert) -> tuple[int, datetime, int]:
    """The (level rank, created_at, id) key `list_alerts(after=...)` continues from."""
    rank = LEVEL_ORDER.index(alert.level) if alert.level in LEVEL_ORDER else len(LEVEL_ORDER)
    return rank, alert.created_at, alert.id


def note_required(alert: Alert) -> bool:
    return alert.level in NOTE_REQUIRED_LEVELS


def resolved_alerts(session: Session, clinic_id: int, *, level: str | None = None,
                    since: datetime | None = None, until: datetime | None = None,
                    patient_ids: Sequence[int] | None = None,
                    before: tuple[datetime, int] | None = None, limit: int = 50) -> list[Alert]:
    """The clinic's alert history: resolved alerts, most recently resolved first, resolved in
    [since, until); `before` is the (resolved_at, id) of the last alert of the previous page."""
    query = sa.select(Alert).where(Alert.clinic_id == clinic_id, Alert.status == "resolved")
    if level is not None:
        query = query.where(Alert.level == level)
    if since is not None:
        query = query.where(Alert.resolved_at >= since)
    if until is not None:
        query = query.where(Alert.resolved_at < until)
    if patient_ids is not None:
        query = query.where(Alert.patient_id.in_(list(patient_ids)))
    if before is not None:
        before_at, before_id = before
        query = query.where(sa.or_(
            Alert.resolved_at < before_at,
            sa.and_(Alert.resolved_at == before_at, Alert.id < before_id)))
    query = query.order_by(Alert.resolved_at.desc(), Alert.id.desc()).limit(limit)
    return list(session.execute(query).scalars())


def actors(session: Session, clinic_id: int, keys) -> dict[str, dict[str, Any]]:
    """'staff:<id>' / 'api:<id>' (as stored in acknowledged_by and resolved_by) -> who that is:
    {"type", "id", "email", "name"}; a staff member by email, an API token by its name."""
    wanted: dict[str, set[int]] = {"staff": set(), "api": set()}
    for key in set(keys) - {None}:
        kind, _, raw = str(key).partition(":")
        if kind in wanted and raw.isdigit():
            wanted[kind].add(int(raw))
    found: dict[str, dict[str, Any]] = {}
    if wanted["staff"]:
        for staff_id, email in session.execute(
                sa.select(Staff.id, Staff.email).where(Staff.clinic_id == clinic_id,
                                                       Staff.id.in_(wanted["staff"]))):
            found[f"staff:{staff_id}"] = {"type": "staff", "id": staff_id, "email": email,
                                          "name": None}
    if wanted["api"]:
        for token_id, name in session.execute(
                sa.select(ApiToken.id, ApiToken.name).where(ApiToken.clinic_id == clinic_id,
                                                            ApiToken.id.in_(wanted["api"]))):
            found[f"api:{token_id}"] = {"type": "api", "id": token_id, "email": None,
                                        "name": name}
    return found


def acknowledge_alert(session: Session, alert: Alert, *, actor_type: str, actor_id: str | int,
                      now: datetime) -> Alert:
    """Marks an open alert as seen; acknowledging it again changes nothing; a resolved one
    raises AlertStateError."""
    if alert.status == "resolved":
        raise AlertStateError("the alert is already resolved")
    if alert.status == "acknowledged":
        # Nothing changes, but whoever asked is shown the alert (the patient's words): a read.
        audit.record(session, clinic_id=alert.clinic_id, patient_id=alert.patient_id,
                     action="alert_acknowledged", actor_type=actor_type, actor_id=actor_id,
                     detail={"alert_id": alert.id, "already": True}, now=now)
        return alert
    alert.status, alert.acknowledged_at = "acknowledged", now
    alert.acknowledged_by = f"{actor_type}:{actor_id}"
    audit.record(session, clinic_id=alert.clinic_id, patient_id=alert.patient_id,
                 action="alert_acknowledged", actor_type=actor_type, actor_id=actor_id,
                 detail={"alert_id": alert.id}, now=now)
    return alert


def resolve_alert(session: Session, alert: Alert, *, actor_type: str, actor_id: str | int,
                  note: str, now: datetime) -> Alert:
    """Resolves an open or acknowledged alert with staff's note (required at `soon` and
    above, optional for info alerts).

    When it is the alert of a final follow-up check at `soon` or higher, the still-open episode
    becomes "referred" and its pending follow-ups are cancelled.
    """
    note = (note or "").strip()
    if not note and note_required(alert):
        raise ValueError(f"a note is required to resolve a {alert.level} alert")
    if len(note) > MAX_NOTE_LENGTH:
        raise ValueError(f"the note is longer than {MAX_NOTE_LENGTH} characters")
    if alert.status == "resolved":
        raise AlertStateError("the alert is already resolved")
    by = f"{actor_type}:{actor_id}"
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = now, by
    alert.status, alert.resolved_at, alert.resolved_by = "resolved", now, by
    alert.resolution_note = note or None
    referred = _refer_episode(session, alert, now)
    audit.record(session, clinic_id=alert.clinic_id, patient_id=alert.patient_id,
                 action="alert_resolved", actor_type=actor_type, actor_id=actor_id,
                 detail={"alert_id": alert.id, "episode_referred": referred}, now=now)
    return alert


def _refer_episode(session: Session, alert: Alert, now: datetime) -> bool:
    if alert.checkin_id is None or alert.episode_id is None or \
            alert.level not in REFERRAL_LEVELS:
        return False
    checkin = session.get(CheckIn, alert.checkin_id)
    if checkin is None or checkin.kind != "followup" or not checkin.final_check:
        return False
    if checkin.level not in REFERRAL_LEVELS:
        return False
    episode = session.execute(sa.select(Episode).where(Episode.id == alert.episode_id)
                              .with_for_update()).scalar_one_or_none()
    if episode is None or episode.status != "open":
        return False
    episode.status, episode.closed_at, episode.closed_reason = "referred", now, "referred"
    cancel_followups(session, episode.patient_id, episode_id=episode.id, reason="referred")
    log.info("episode %s referred (alert %s resolved)", episode.id, alert.id)
    return True


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
    mark_send_soon(session)  # its on-call texts
    log.info("alert %s raised: kind=%s level=%s", alert.id, kind, level)
    return alert
