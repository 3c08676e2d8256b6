"""The follow-up schedule: claiming due follow-ups with a lease, starting them, and reporting.

A follow-up is a row (DESIGN.md): the beat claims due rows atomically (`FOR UPDATE SKIP
LOCKED` on PostgreSQL; a guarded UPDATE that only one claimer can win, on both backends), each
claim lasting `LEASE`, so a row claimed by a worker that died is claimed again once its lease
ran out. Starting a claimed row is `checkins.start_followup` (quiet hours, a conversation in
progress, cancellation), under the patient's lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.conversations import checkins
from service.store.models import FollowUp, Outbox, Patient
from service.store.queries import followup_due, outbox_due

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
CLAIM_BATCH = 200



def claim_due(session: Session, now: datetime, *, limit: int = CLAIM_BATCH,
              lease: timedelta = LEASE) -> list[int]:
    """Claims due follow-ups (and those whose claim expired); returns their ids, oldest first."""
    query = sa.select(FollowUp.id).where(followup_due(now)).order_by(FollowUp.due_at, FollowUp.id)
    query = query.limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = []
    for followup_id in session.execute(query).scalars().all():
        # The guard makes the claim safe even without row locks: one claimer wins the UPDATE.
        won = session.execute(
            sa.update(FollowUp).where(FollowUp.id == followup_id, followup_due(now))
            .values(status="claimed", claimed_until=now + lease)
            .execution_options(synchronize_session=False)).rowcount
        if won:
            claimed.append(followup_id)
    if claimed:
        log.info("claimed %d due follow-up(s)", len(claimed))
    return claimed


def start_claimed(session: Session, followup_id: int, now: datetime) -> str:
    """Starts one claimed follow-up; returns started / quiet / deferred / cancelled / paused /
    skipped (not ours any more: started by another worker, cancelled, or gone)."""
    followup = session.get(FollowUp, followup_id)
    if followup is None:
        return "skipped"
    # The patient first (the webhook's lock order), then the follow-up.
    session.execute(sa.select(Patient.id).where(Patient.id == followup.patient_id)
                    .with_for_update())
    followup = session.execute(sa.select(FollowUp).where(FollowUp.id == followup_id)
                               .with_for_update().execution_options(populate_existing=True)
                               ).scalar_one()
    if followup.status != "claimed":
        return "skipped"
    if followup.patient.number_invalid and not followup.patient.opted_out:
        # Texts cannot reach this number: wait for staff to correct it (alerted when found).
        followup.status, followup.claimed_until = "paused", None
        return "paused"
    result = checkins.start_followup(session, followup, now)
    log.info("follow-up %s (%s) of episode %s: %s", followup.id, followup.kind,
             followup.episode_id, result)
    return result


# ---- operations ---------------------------------------------------------------------------


@dataclass
class Report:
    due: int = 0
    pending: int = 0
    failed: int = 0
    oldest_due_seconds: float = 0.0
    outbox_due: int = 0
    outbox_failed: int = 0
    rows: list[FollowUp] = field(default_factory=list)


def _failed_ids(session: Session):
    """Follow-ups that could not reach the patient: paused, or a text of theirs failed."""
    failed_send = sa.select(Outbox.checkin_id).where(Outbox.status == "failed",
                                                     Outbox.checkin_id.is_not(None))
    return sa.or_(FollowUp.status == "paused",
                  sa.and_(FollowUp.status.in_(("started", "done")),
                          FollowUp.checkin_id.in_(failed_send)))


def report(session: Session, now: datetime, *, show: str = "due", limit: int = 50) -> Report:
    """Counts for `triage followups` and /healthz; `show` picks the listed rows."""
    count = lambda *where: session.execute(  # noqa: E731
        sa.select(sa.func.count()).select_from(FollowUp).where(*where)).scalar_one()
    out = Report(
        due=count(followup_due(now)),
        pending=count(FollowUp.status.in_(("scheduled", "claimed")), sa.not_(followup_due(now))),
        failed=count(_failed_ids(session)),
        oldest_due_seconds=oldest_due_seconds(session, now),
        outbox_due=session.execute(sa.select(sa.func.count()).select_from(Outbox)
                                   .where(outbox_due(now))).scalar_one(),
        outbox_failed=session.execute(sa.select(sa.func.count()).select_from(Outbox)
                                      .where(Outbox.status == "failed")).scalar_one(),
    )
    where = {"due": followup_due(now),
             "pending": sa.and_(FollowUp.status.in_(("scheduled", "claimed")),
                                sa.not_(followup_due(now))),
             "failed": _failed_ids(session)}[show]
    out.rows = list(session.execute(sa.select(FollowUp).where(where)
                                    .order_by(FollowUp.due_at, FollowUp.id).limit(limit))
                    .scalars())
    return out



def oldest_due_seconds(session: Session, now: datetime) -> float:
    """How long the oldest due-but-unsent item (an outbox text or a follow-up) has waited."""
    oldest_text = session.execute(sa.select(sa.func.min(
        sa.case((Outbox.status == "pending", Outbox.not_before), else_=Outbox.claimed_until)))
        .where(outbox_due(now))).scalar()
    oldest_followup = session.execute(sa.select(sa.func.min(
        sa.case((FollowUp.status == "scheduled", FollowUp.due_at),
                else_=FollowUp.claimed_until))).where(followup_due(now))).scalar()
    times = [_aware(t) for t in (oldest_text, oldest_followup) if t is not None]
    return max(0.0, (now - min(times)).total_seconds()) if times else 0.0


def _aware(value):
    # min() over a CASE loses the column type: SQLite hands back text, PostgreSQL a datetime.
    from datetime import UTC

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
