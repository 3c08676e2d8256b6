"""The follow-up schedule: claiming due follow-ups with a lease, starting them, and reporting.

A follow-up is a row (DESIGN.md): the beat claims a batch of due rows in one statement (`FOR
UPDATE SKIP LOCKED` on PostgreSQL; the UPDATE repeats the due test, so on both backends only
one claimer wins a row), each claim lasting `LEASE`, so a row claimed by a worker that died is
claimed again once its lease ran out. Starting claimed rows is `checkins.start_followup` for
each (quiet hours, a conversation in progress, cancellation), under the patients' locks, a
batch in one unit of work with shared lookups and one write.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from service.conversations import checkins
from service.store.models import CheckIn, Clinic, Episode, FollowUp, Outbox, Patient
from service.store.queries import followup_due, outbox_due

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
CLAIM_BATCH = 500



def claim_statement(now: datetime, *, limit: int = CLAIM_BATCH, lease: timedelta = LEASE,
                    skip_locked: bool = True):
    """The one statement that claims a batch: UPDATE ... WHERE id IN (SELECT ... FOR UPDATE
    SKIP LOCKED LIMIT n) RETURNING id, due_at."""
    due = (sa.select(FollowUp.id).where(followup_due(now))
           .order_by(FollowUp.due_at, FollowUp.id).limit(limit))
    if skip_locked:
        # Rows another claimer holds are passed over, not waited for.
        due = due.with_for_update(skip_locked=True)
    # The guard repeats the due test on the row being updated: a claim is safe even where a
    # row lock is not taken, and a row claimed meanwhile is never claimed twice.
    return (sa.update(FollowUp).where(FollowUp.id.in_(due.scalar_subquery()), followup_due(now))
            .values(status="claimed", claimed_until=now + lease)
            .returning(FollowUp.id, FollowUp.due_at)
            .execution_options(synchronize_session=False))


def claim_due(session: Session, now: datetime, *, limit: int = CLAIM_BATCH,
              lease: timedelta = LEASE) -> list[int]:
    """Claims due follow-ups (and those whose claim expired) in one statement; returns their
    ids, oldest first."""
    # SQLite has no row locks (and runs one writer at a time): there the statement alone is
    # atomic.
    claim = claim_statement(now, limit=limit, lease=lease,
                            skip_locked=session.get_bind().dialect.name == "postgresql")
    claimed = [row.id for row in sorted(session.execute(claim), key=lambda r: (r.due_at, r.id))]
    if claimed:
        log.info("claimed %d due follow-up(s)", len(claimed))
    return claimed


def start_claimed(session: Session, followup_id: int, now: datetime) -> str:
    """Starts one claimed follow-up: `start_claimed_batch` of one."""
    return start_claimed_batch(session, [followup_id], now)[followup_id]


def start_claimed_batch(session: Session, followup_ids: list[int], now: datetime
                        ) -> dict[int, str]:
    """Starts claimed follow-ups in one unit of work, in the order given; returns each one's
    outcome: started / quiet / deferred / cancelled / paused / skipped (not ours any more:
    started by another worker, cancelled, or gone).

    The lookups are shared (one query each for the follow-ups, their patients, episodes,
    clinics and the patients' conversations in progress), and the caller commits the batch
    once. An error rolls the whole batch back, every follow-up still claimed: the caller then
    starts them one by one (`tasks.start_followups`), so one that cannot start holds up only
    itself until its lease runs out.
    """
    ids = list(dict.fromkeys(followup_ids))
    outcomes = dict.fromkeys(ids, "skipped")
    patient_ids = sorted(set(session.execute(
        sa.select(FollowUp.patient_id).where(FollowUp.id.in_(ids))).scalars()))
    if not patient_ids:
        return outcomes
    # The patients first (the webhook's lock order), then the follow-ups; patients in id order
    # so that two batches sharing a patient never wait for each other in a cycle.
    patients = session.execute(sa.select(Patient).where(Patient.id.in_(patient_ids))
                               .order_by(Patient.id).with_for_update()
                               .execution_options(populate_existing=True)).scalars().all()
    rows = {f.id: f for f in session.execute(
        sa.select(FollowUp).where(FollowUp.id.in_(ids)).order_by(FollowUp.id).with_for_update()
        .execution_options(populate_existing=True)).scalars()}
    claimed = [rows[i] for i in ids if i in rows and rows[i].status == "claimed"]
    if not claimed:
        return outcomes
    # Held here: the session keeps loaded rows only while something refers to them.
    loaded = (patients, _prefetch(session, claimed))
    in_conversation = set(session.execute(sa.select(CheckIn.patient_id).where(
        CheckIn.patient_id.in_({f.patient_id for f in claimed}),
        CheckIn.status == "active")).scalars())
    for followup in claimed:
        outcomes[followup.id] = result = _start_one(
            session, followup, now, followup.patient_id in in_conversation)
        if result == "started":
            in_conversation.add(followup.patient_id)
        log.info("follow-up %s (%s) of episode %s: %s", followup.id, followup.kind,
                 followup.episode_id, result)
    del loaded
    return outcomes


def patient_numbers(session: Session, followup_ids: list[int]) -> set[str]:
    """The phone numbers of these follow-ups' patients (whose texts a start just queued)."""
    if not followup_ids:
        return set()
    return set(session.execute(
        sa.select(Patient.phone_e164).join(FollowUp, FollowUp.patient_id == Patient.id)
        .where(FollowUp.id.in_(followup_ids))).scalars())


def _start_one(session: Session, followup: FollowUp, now: datetime, in_conversation: bool
               ) -> str:
    if followup.patient.number_invalid and not followup.patient.opted_out:
        # Texts cannot reach this number: wait for staff to correct it (alerted when found).
        followup.status, followup.claimed_until = "paused", None
        return "paused"
    # Written with the batch's one flush (the caller's next query, or its commit).
    return checkins.start_followup(session, followup, now, in_conversation=in_conversation,
                                   flush=False)


def _prefetch(session: Session, followups: list[FollowUp]) -> list:
    """Loads what starting these follow-ups reads (episode with its check-ins and follow-ups,
    the clinic with its numbers) in one query per table instead of one per follow-up."""
    episode_ids = {f.episode_id for f in followups}
    episodes = session.execute(
        sa.select(Episode).where(Episode.id.in_(episode_ids))
        .options(selectinload(Episode.checkins), selectinload(Episode.followups))
    ).scalars().all()
    clinics = session.execute(
        sa.select(Clinic).where(Clinic.id.in_({f.clinic_id for f in followups}))
        .options(selectinload(Clinic.numbers))).scalars().all()
    return [*episodes, *clinics]


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
