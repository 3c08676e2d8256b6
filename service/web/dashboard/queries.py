"""The dashboard's reads, always scoped to the signed-in staff member's clinic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.records.alerts import level_rank, resolved_alerts
from service.store.models import (
    Alert,
    ApiToken,
    AuditLog,
    Episode,
    FollowUp,
    Outbox,
    Patient,
    Staff,
)

QUEUE_STATUSES = ("open", "acknowledged")


def alert_queue(session: Session, clinic_id: int, *, limit: int = 200) -> list[tuple[Alert, Patient]]:
    """Open and acknowledged alerts: emergency, urgent, soon, info; oldest first in a level."""
    rows = session.execute(
        sa.select(Alert, Patient).join(Patient, Patient.id == Alert.patient_id)
        .where(Alert.clinic_id == clinic_id, Alert.status.in_(QUEUE_STATUSES),
               Patient.erased_at.is_(None))
        .order_by(level_rank(), Alert.created_at, Alert.id).limit(limit))
    return [(alert, patient) for alert, patient in rows]


@dataclass(frozen=True)
class PatientRow:
    patient: Patient
    last_level: str | None
    next_followup_at: datetime | None
    open_alerts: int


def patient_rows(session: Session, clinic_id: int, query: str = "", *,
                 limit: int = 200) -> list[PatientRow]:
    """The clinic's patients, newest first; `query` matches a part of the name or of the phone
    number's digits."""
    last_level = (
        sa.select(Episode.last_level).where(Episode.patient_id == Patient.id)
        .order_by(Episode.opened_at.desc(), Episode.id.desc()).limit(1).scalar_subquery())
    next_due = (
        sa.select(sa.func.min(FollowUp.due_at))
        .where(FollowUp.patient_id == Patient.id, FollowUp.status == "scheduled")
        .scalar_subquery())
    open_alerts = (
        sa.select(sa.func.count(Alert.id))
        .where(Alert.patient_id == Patient.id, Alert.status.in_(QUEUE_STATUSES))
        .scalar_subquery())
    stmt = (sa.select(Patient, last_level, next_due, open_alerts)
            .where(Patient.clinic_id == clinic_id, Patient.erased_at.is_(None))
            .order_by(Patient.created_at.desc(), Patient.id.desc()).limit(limit))
    text = " ".join((query or "").split())
    if text:
        conditions = [Patient.name.icontains(text, autoescape=True)]
        digits = re.sub(r"\D", "", text)
        if len(digits) >= 3:
            conditions.append(Patient.phone_e164.contains(digits, autoescape=True))
        stmt = stmt.where(sa.or_(*conditions))
    return [PatientRow(p, level, due, count or 0) for p, level, due, count in session.execute(stmt)]


def patient_alerts(session: Session, patient: Patient) -> list[Alert]:
    return list(session.scalars(
        sa.select(Alert).where(Alert.patient_id == patient.id, Alert.clinic_id == patient.clinic_id)
        .order_by(Alert.created_at, Alert.id)))


def queued_messages(session: Session, patient: Patient) -> list[Outbox]:
    """Messages waiting to go out (quiet hours, or the sender has not run yet)."""
    return list(session.scalars(
        sa.select(Outbox).where(Outbox.patient_id == patient.id,
                                Outbox.status.in_(("pending", "sending", "unknown")))
        .order_by(Outbox.not_before, Outbox.id)))


def audit_rows(session: Session, clinic_id: int, *, before_id: int | None = None,
               patient_id: int | None = None, limit: int = 100) -> list[AuditLog]:
    stmt = sa.select(AuditLog).where(AuditLog.clinic_id == clinic_id)
    if before_id is not None:
        stmt = stmt.where(AuditLog.id < before_id)
    if patient_id is not None:
        stmt = stmt.where(AuditLog.patient_id == patient_id)
    return list(session.scalars(stmt.order_by(AuditLog.id.desc()).limit(limit)))


def staff_emails(session: Session, clinic_id: int) -> dict[str, str]:
    """'staff:<id>' and '<id>' -> email, and 'api:<id>' -> the API token's name, to show who
    acted."""
    names: dict[str, str] = {}
    for staff_id, email in session.execute(
            sa.select(Staff.id, Staff.email).where(Staff.clinic_id == clinic_id)):
        names[str(staff_id)] = email
        names[f"staff:{staff_id}"] = email
    for token_id, name in session.execute(
            sa.select(ApiToken.id, ApiToken.name).where(ApiToken.clinic_id == clinic_id)):
        names[f"api:{token_id}"] = f"API token “{name}”"
    return names


@dataclass(frozen=True)
class HistoryRow:
    alert: Alert
    patient: Patient


def alert_history(session: Session, clinic_id: int, *, level: str | None, since: datetime | None,
                  until: datetime | None, patient_id: int | None, query: str = "",
                  before: tuple[datetime, int] | None = None,
                  limit: int = 100) -> tuple[list[HistoryRow], tuple[datetime, int] | None]:
    """Resolved alerts, most recently resolved first, and the `before` of the next page (None
    on the last); `query` finds the patient as the patient list does (a part of the name or of
    the number's digits). Erased patients' alerts are left out."""
    ids: list[int] | None = None
    if patient_id is not None:
        ids = [patient_id]
    if " ".join((query or "").split()):
        found = [row.patient.id for row in patient_rows(session, clinic_id, query, limit=500)]
        ids = [i for i in ids if i in found] if ids is not None else found
    rows = resolved_alerts(session, clinic_id, level=level, since=since, until=until,
                           patient_ids=ids, before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    patients = {p.id: p for p in session.scalars(
        sa.select(Patient).where(Patient.id.in_({a.patient_id for a in rows}),
                                 Patient.erased_at.is_(None)))} if rows else {}
    next_before = (rows[-1].resolved_at, rows[-1].id) if more else None
    return ([HistoryRow(a, patients[a.patient_id]) for a in rows if a.patient_id in patients],
            next_before)
