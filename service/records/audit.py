"""The audit log: who read or changed which patient's data, and when (one row per event)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from service.store.models import ACTOR_TYPES, AuditLog


def record(session: Session, *, clinic_id: int, action: str, actor_type: str,
           actor_id: str | int | None = None, patient_id: int | None = None,
           detail: Mapping[str, Any] | None = None, now: datetime | None = None) -> AuditLog:
    """Adds one audit row to the caller's transaction.

    `actor_type` is "staff", "api" or "system"; `actor_id` says which one (a staff id or email,
    an API token id). `detail` must hold no phone numbers, names or answers: the audit log
    outlives an erasure.
    """
    if actor_type not in ACTOR_TYPES:
        raise ValueError(f"actor_type must be one of {', '.join(ACTOR_TYPES)}")
    row = AuditLog(actor_type=actor_type, actor_id=None if actor_id is None else str(actor_id),
                   clinic_id=clinic_id, patient_id=patient_id, action=action,
                   detail=dict(detail or {}))
    if now is not None:
        row.at = now
    session.add(row)
    return row


def record_reads(session: Session, *, clinic_id: int, patient_ids: Iterable[int], action: str,
                 actor_type: str, actor_id: str | int | None = None,
                 detail: Mapping[str, Any] | None = None, now: datetime | None = None) -> None:
    """One row per patient whose record was read (a list read touches several)."""
    for patient_id in dict.fromkeys(patient_ids):
        record(session, clinic_id=clinic_id, action=action, actor_type=actor_type,
               actor_id=actor_id, patient_id=patient_id, detail=detail, now=now)
