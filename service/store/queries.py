"""Row lookups and bulk updates that several rooms share: each written once, here.

They run inside the caller's unit of work and never commit.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from service.store.models import (
    CheckIn,
    CheckInStatus,
    Episode,
    EpisodeStatus,
    FollowUp,
    FollowUpStatus,
    Outbox,
    OutboxStatus,
)

DB_UNAVAILABLE = (OperationalError, InterfaceError)
"""The errors that mean "the database is away" (refused, dropped, timed out), not a bug."""

# Follow-ups that may still go out.
PENDING_FOLLOWUP = (FollowUpStatus.SCHEDULED, FollowUpStatus.CLAIMED, FollowUpStatus.PAUSED)
# Outbox rows a sender holds (or held, if its lease ran out).
IN_FLIGHT = (OutboxStatus.SENDING, OutboxStatus.UNKNOWN)

_ACTIVE_CHECKIN = sa.select(CheckIn).where(CheckIn.patient_id == sa.bindparam("patient_id"),
                                           CheckIn.status == CheckInStatus.ACTIVE)
_SEND_SOON = "outbox.send_soon"


def active_checkin(session: Session, patient_id: int) -> CheckIn | None:
    """The patient's one active conversation, if any (CLINICAL.md §6: at most one)."""
    return session.execute(_ACTIVE_CHECKIN, {"patient_id": patient_id}).scalar_one_or_none()


def open_episode(session: Session, patient_id: int) -> Episode | None:
    return session.execute(
        sa.select(Episode).where(Episode.patient_id == patient_id, Episode.status == EpisodeStatus.OPEN)
    ).scalar_one_or_none()


def cancel_followups(session: Session, patient_id: int, *, episode_id: int | None = None,
                     reason: str = "") -> int:
    """Cancels the patient's follow-ups that may still go out (of one episode, if given)."""
    q = sa.update(FollowUp).where(FollowUp.patient_id == patient_id,
                                  FollowUp.status.in_(PENDING_FOLLOWUP))
    if episode_id is not None:
        q = q.where(FollowUp.episode_id == episode_id)
    return session.execute(q.values(status=FollowUpStatus.CANCELLED,
                                    cancelled_reason=reason[:40] or None)).rowcount


def cancel_pending_outbox(session: Session, patient_id: int, *,
                          checkin_id: int | None = None) -> int:
    """Cancels the patient's queued texts that no sender has taken yet (of one check-in only,
    if given)."""
    q = sa.update(Outbox).where(Outbox.patient_id == patient_id, Outbox.status == OutboxStatus.PENDING)
    if checkin_id is not None:
        q = q.where(Outbox.checkin_id == checkin_id)
    return session.execute(q.values(status=OutboxStatus.CANCELLED)).rowcount


def outbox_due(now: datetime, rows=Outbox):
    """An outbox row is due: pending and its time has come, or held by a sender whose lease ran
    out (the sender died, or the result of its send is unknown). `rows`: the outbox's columns
    as a subquery or CTE has them (`cte.c`), if not the table's."""
    return sa.or_(
        sa.and_(rows.status == OutboxStatus.PENDING, rows.not_before <= now),
        sa.and_(rows.status.in_(IN_FLIGHT), rows.claimed_until <= now),
    )


def followup_due(now: datetime):
    """A follow-up is due: scheduled and its time has come, or claimed with an expired lease."""
    return sa.or_(
        sa.and_(FollowUp.status == FollowUpStatus.SCHEDULED, FollowUp.due_at <= now),
        sa.and_(FollowUp.status == FollowUpStatus.CLAIMED, FollowUp.claimed_until <= now),
    )


def mark_send_soon(session: Session) -> None:
    """This unit of work left something for the sender: queued texts, or an alert whose
    on-call texts are due (the web then wakes the worker instead of waiting for the beat)."""
    session.info[_SEND_SOON] = True


def send_soon(session: Session) -> bool:
    return bool(session.info.get(_SEND_SOON))
