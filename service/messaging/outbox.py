"""The outbox: messages the service starts are rows first (same transaction as the change that
caused them), then sent one row at a time; a row is sent at most once."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.messaging import quiet_hours
from service.messaging.senders import Sender, SendError
from service.store.models import Clinic, ClinicNumber, Message, Outbox, Patient
from service.store.queries import IN_FLIGHT, mark_send_soon, outbox_due

FailedForGood = Callable[[Session, Outbox, SendError, datetime], None]
"""What a text that will never go out means for its patient (opted out at Twilio, a bad
number, an alert): a policy of the conversations room, handed to `send_one` by its caller."""


class Pacer(Protocol):
    """The send-rate limit of each sending lane (service.messaging.ratelimit.RateLimiter)."""

    def reserve(self, lane: str | None) -> float | None: ...

    def gate(self, lane: str | None, *, timeout: float | None = None) -> bool: ...

    def interval(self, lane: str | None) -> float: ...


log = logging.getLogger(__name__)

# A send slot further away than this is not waited for, the text is held: half the lane's
# interval (a process that sleeps a whole interval per text sends one lane's texts only), but
# at least HOLD_AT_LEAST (a hold costs more than so short a sleep) and at most HOLD_AFTER.
HOLD_AFTER = 0.5
HOLD_AT_LEAST = 0.05
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
    """Queues a message; with a timezone and `quiet`, it goes out only 08:00-21:00 local time:
    it waits for that when queued, and again when it is sent (see claim).

    `flush=False` leaves the row to the unit of work's next flush or its commit (its id is
    not known until then), so that texts queued together are written together."""
    quiet_tz = tz if (quiet and tz) else None
    not_before = quiet_hours.next_allowed(now, quiet_tz) if quiet_tz else now
    row = Outbox(clinic_id=clinic.id, patient_id=patient.id if patient else None,
                 checkin_id=checkin.id if checkin else None, alert_id=alert.id if alert else None,
                 kind=kind, to_number=to or patient.phone_e164,
                 from_number=clinic.numbers[0].phone_e164 if clinic.numbers else None,
                 body=body, status="pending", not_before=not_before, quiet_tz=quiet_tz,
                 created_at=now)
    if checkin is not None and checkin.id is None:
        row.checkin = checkin  # not written yet either: its id comes with the same flush
    session.add(row)
    if flush:
        session.flush()
    mark_send_soon(session)
    return row



QUEUED_LEASE = timedelta(minutes=2)  # a text queued for sending is not queued again before this


@dataclass(frozen=True)
class LaneCaps:
    """At most how many texts of one sending lane one call queues: what the lane can send
    before a slot is too far away to book (rate x the limiter's longest wait). More would come
    straight back untouched, each costing a claim. `service`: the cap of a clinic with several
    numbers when the texts go through a Messaging Service (None: no service)."""

    number: int
    service: int | None = None


def due_batches(session: Session, now: datetime, *, to_number: str | None = None,
                to_numbers: Iterable[str] | None = None, limit: int = 500,
                caps: LaneCaps | None = None) -> list[list[int]]:
    """Due rows grouped by recipient, each group in queue order: one task sends one group, so
    one patient's texts go out in order while different patients' go out side by side.
    `to_number` / `to_numbers`: only the rows to this recipient / these recipients; `caps`: at
    most so many of each sending number's oldest rows (the rest wait for a later call).

    The pending rows returned are marked as queued (`claimed_until`, for QUEUED_LEASE): until
    their task has come, later calls (the next beat, another beat) leave them out, so a
    backlog is queued once, not once a minute. Queue the tasks after the commit: a task that
    came before it would find the row still being marked and skip it."""
    def not_queued(rows):
        return sa.or_(rows.status != "pending", rows.claimed_until.is_(None),
                      rows.claimed_until <= now)

    rows = Outbox
    recipients = [to_number] if to_number is not None else to_numbers
    if recipients is not None:
        # These recipients' rows first (ix_outbox_to_number_id), materialized: on
        # a table that grew faster than its statistics (a morning's follow-ups), PostgreSQL
        # otherwise reads every due row through the status index and filters them (24 ms
        # instead of 0.4 at 100,000 pending).
        rows = (sa.select(Outbox.__table__).where(Outbox.to_number.in_(list(recipients)))
                .cte("recipients").prefix_with("MATERIALIZED", dialect="postgresql")).c
    columns = [rows.id, rows.to_number, rows.status]
    if caps is not None:
        columns.append(sa.func.row_number().over(partition_by=rows.from_number,
                                                 order_by=rows.id).label("nth"))
        if caps.service is not None:
            columns.append(_clinic_numbers(rows.clinic_id).label("numbers"))
    query = sa.select(*columns).where(outbox_due(now, rows), not_queued(rows))
    if caps is not None:
        ranked = query.subquery()
        cap = caps.number if caps.service is None else sa.case(
            (ranked.c.numbers > 1, caps.service), else_=caps.number)
        query = (sa.select(ranked.c.id, ranked.c.to_number, ranked.c.status)
                 .where(ranked.c.nth <= cap).order_by(ranked.c.id))
    else:
        query = query.order_by(rows.id)
    found = session.execute(query.limit(limit)).all()
    # Marked only if still pending and not queued: of two beats side by side, the second
    # waits for the first's row locks, then finds the rows marked and leaves them out.
    pending = [row_id for row_id, _, status in found if status == "pending"]
    marked: set[int] = set()
    for at in range(0, len(pending), 1000):
        marked.update(session.scalars(
            sa.update(Outbox).where(Outbox.id.in_(pending[at:at + 1000]),
                                    Outbox.status == "pending", not_queued(Outbox))
            .values(claimed_until=now + QUEUED_LEASE).returning(Outbox.id)
            .execution_options(synchronize_session=False)))
    groups: dict[str, list[int]] = {}
    for row_id, to, status in found:
        if status != "pending" or row_id in marked:
            groups.setdefault(to, []).append(row_id)
    return list(groups.values())


@dataclass(frozen=True)
class SendOutcome:
    status: str  # sent | skipped | retry | failed | unknown | throttled | held
    detail: str = ""  # held: the hold's token, to be handed back to send_one as `held`
    code: int | None = None
    retry_in: float | None = None  # held: seconds until the text's send slot


def _clinic_numbers(clinic_id):
    """How many numbers the clinic of `clinic_id` (a column) has: read with the rows that
    need it (see _lane)."""
    return (sa.select(sa.func.count()).select_from(ClinicNumber)
            .where(ClinicNumber.clinic_id == clinic_id).scalar_subquery())


def claim(session: Session, outbox_id: int, now: datetime, *,
          held: str | None = None) -> Outbox | None:
    """Takes a row for sending (locked, lease set); None if it is not ours to send.

    `held`: the token of a hold (`SendOutcome.detail`): the row is still ours if it is still
    claimed under that hold (no one took it over after the hold's lease ran out)."""
    found = session.execute(sa.select(Outbox, _clinic_numbers(Outbox.clinic_id))
                            .where(Outbox.id == outbox_id)
                            .with_for_update(skip_locked=True, of=Outbox)).one_or_none()
    if found is None:
        return None
    row, row.clinic_numbers = found
    back_from_hold = held is not None and _is_hold(row, held)
    ready = back_from_hold or (row.status == "pending" and row.not_before <= now) or (
        row.status in IN_FLIGHT and row.claimed_until is not None
        and row.claimed_until <= now)
    if not ready:
        return None
    if row.quiet_tz is not None:
        allowed = quiet_hours.next_allowed(now, quiet_hours.patient_timezone(
            row.quiet_tz, None, row.to_number))
        if allowed != now:
            _wait_for_allowed_hours(row, allowed, back_from_hold=back_from_hold, held=held)
            return None
    if _earlier_unsent(session, row, now):
        if row.status == "pending":
            row.claimed_until = None  # not queued any more: the beat queues it again
        return None  # texts to one number go out in the order they were queued
    if row.patient_id is not None:
        patient = session.get(Patient, row.patient_id)
        # The one confirmation of an opt-out still goes to the patient who just opted out.
        opted_out = patient.opted_out and row.kind != "optout_confirm"
        if opted_out or patient.erased_at or patient.number_invalid:
            row.status, row.last_error = "cancelled", "patient opted out or unreachable"
            return None
    if back_from_hold:  # the same attempt, which has not been sent yet
        # A text that was to be looked up before it went again still is: its hold came
        # between the claim and the look-up.
        row.check_first = _hold_looks_up(held)
        row.claimed_until = now + LEASE
        return row
    # A row left "sending" (its worker died) or "unknown" (the request may have reached Twilio)
    # is looked for in Twilio's message list before it is sent again.
    row.check_first = row.status in IN_FLIGHT
    row.status, row.claimed_until, row.attempts = "sending", now + LEASE, row.attempts + 1
    return row


def _wait_for_allowed_hours(row: Outbox, allowed: datetime, *, back_from_hold: bool,
                            held: str | None) -> None:
    """A scheduled text found due outside its quiet hours (it was queued before 21:00 and
    waited: a backlog at the number's rate, a retry, a worker that was down) waits for
    `allowed`, the next 08:00 there, as one queued then would have. A text whose send may have
    reached Twilio (sending, unknown) keeps its state and is looked up first then, as now."""
    if back_from_hold:  # claimed for this attempt, not sent: the attempt is given back
        row.attempts -= 1
        if _hold_looks_up(held):
            row.status, row.claimed_until = "unknown", allowed
            return
        row.status = "pending"
    if row.status == "pending":
        row.not_before, row.claimed_until = allowed, None
    else:
        row.claimed_until = allowed
    log.info("outbox %s held for quiet hours until %s", row.id, allowed.isoformat())


def _hold_token(until: datetime, look_up: bool) -> str:
    """What a held task hands back to `send_one`: the hold's end (which says the row is still
    its own) and whether the text is to be looked up in Twilio's list before it goes again."""
    return until.isoformat() + ("|look-up" if look_up else "")


def _hold_looks_up(token: str | None) -> bool:
    return token is not None and token.endswith("|look-up")


def _is_hold(row: Outbox, token: str) -> bool:
    if row.status != "sending" or row.claimed_until is None:
        return False
    until = datetime.fromisoformat(token.split("|", 1)[0])
    stored = row.claimed_until
    if (stored.tzinfo is None) != (until.tzinfo is None):  # SQLite keeps no time zone
        stored, until = stored.replace(tzinfo=None), until.replace(tzinfo=None)
    return abs(stored - until) < timedelta(milliseconds=1)


def _hold(db, outbox_id: int, now: datetime, wait: float, *, look_up: bool) -> str:
    """Keeps a claimed row claimed until its send slot and a lease after it: later texts to the
    same patient keep waiting behind it, and if the hold is never come back to (its worker
    died), the row is claimed again once the lease has run out."""
    with db.transaction() as session:
        row = session.get(Outbox, outbox_id)
        row.claimed_until = now + timedelta(seconds=wait) + LEASE
        return _hold_token(row.claimed_until, look_up)


def _lane(row: Outbox, sender: Sender) -> tuple[str | None, str | None]:
    """(the From number to send with, the rate lane): the row's number and its own rate; or,
    when the sender has a Messaging Service and the clinic has several numbers, no From (the
    service picks the clinic's number for the patient) and the service's rate."""
    service = sender.messaging_service_sid
    if service and row.clinic_numbers > 1:
        return None, service
    return row.from_number, row.from_number


def _pace(pacer: Pacer, lane: str | None, *, held: bool) -> float | None:
    """0 when the text may go now; seconds to hold it for its slot; None: no slot free soon.

    A text back from a hold goes straight to the gate; if the lane sent meanwhile (the text
    came back late), it books a new slot."""
    hold_after = min(HOLD_AFTER, max(HOLD_AT_LEAST, pacer.interval(lane) / 2))
    for _ in range(2):
        if not held:
            wait = pacer.reserve(lane)
            if wait is None or wait > hold_after:
                return wait
            if wait > 0:
                time.sleep(wait)
        if pacer.gate(lane, timeout=hold_after):
            return 0.0
        held = False
    return None


def _earlier_unsent(session: Session, row: Outbox, now: datetime) -> bool:
    """Is an older text to the same number still on its way (due, sending, or retrying)?

    A text that goes at any hour (a reply) is not held back by a scheduled one that waits for
    the end of quiet hours (waiting_for_morning): the patient's answer goes at once
    (CLINICAL.md §7)."""
    on_its_way = sa.or_(Outbox.status.in_(IN_FLIGHT),
                        sa.and_(Outbox.status == "pending",
                                sa.or_(Outbox.not_before <= now, Outbox.attempts > 0)))
    if row.quiet_tz is None:
        on_its_way = sa.and_(on_its_way, sa.not_(waiting_for_morning(now)))
    return session.execute(sa.select(Outbox.id).where(
        Outbox.to_number == row.to_number, Outbox.id < row.id, on_its_way,
    ).limit(1)).first() is not None


def waiting_for_morning(now: datetime, rows=Outbox):
    """A scheduled text that waits for the end of quiet hours (_wait_for_allowed_hours):
    pending until then, or, when its send may have reached Twilio, claimed until then. A
    retry's or a lease's own wait is at most RETRY_CAP; a longer one is quiet hours'."""
    return sa.and_(rows.quiet_tz.is_not(None), sa.or_(
        sa.and_(rows.status == "pending", rows.not_before > now + RETRY_CAP),
        # (never NULL: a NOT of this must not drop an in-flight row without a lease)
        sa.and_(rows.status.in_(IN_FLIGHT), rows.claimed_until.is_not(None),
                rows.claimed_until > now + RETRY_CAP)))


def send_one(db, outbox_id: int, sender: Sender, now: datetime, *, on_failed: FailedForGood,
             status_callback: str | None = None, pacer: Pacer | None = None,
             held: str | None = None,
             max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> SendOutcome:
    """Claim (one transaction), send (no transaction open), record (another transaction).

    `pacer` keeps each sending lane (number or Messaging Service) within its rate: a text whose
    slot is a moment away waits for it; one whose slot is further away is held (outcome
    `held`, with the seconds until its slot and a token): the caller comes back then with
    `held=token`, and the row stays claimed meanwhile. With no slot free soon the row is given
    back untouched (`throttled`). After `max_attempts` transient failures, or a permanent
    error, the row fails and `on_failed(session, row, error, now)` says what that means, in
    the same transaction.
    """
    with db.transaction() as session:
        row = claim(session, outbox_id, now, held=held)
        if row is None:
            return SendOutcome("skipped")
        to, body = row.to_number, row.body
        from_, lane = _lane(row, sender)
        resend = row.check_first
        since = row.created_at - timedelta(minutes=1)
        # Before a resend: a status callback may have given the row its SID already (it was
        # created); else Twilio's list is looked in, the texts recorded already left out.
        known = row.twilio_sid if resend else None
        taken = _sids_recorded(session, to, since) if resend and not known else set()
    wait = _pace(pacer, lane, held=held is not None) if pacer is not None else 0.0
    if wait:
        return SendOutcome("held", _hold(db, outbox_id, now, wait, look_up=resend),
                           retry_in=wait)
    if wait is None:
        with db.transaction() as session:
            row = session.get(Outbox, outbox_id)
            row.status = "unknown" if resend else "pending"
            row.claimed_until = now if resend else None
            row.attempts -= 1
        return SendOutcome("throttled")
    try:
        sid = known or (sender.find_sent(to=to, from_=from_, body=body, since=since, taken=taken)
                        if resend else None)
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
            # Sent through a Messaging Service, the number is the service's pick (Twilio's
            # answer does not say which yet): the message keeps no From then.
            session.add(Message(clinic_id=row.clinic_id, patient_id=row.patient_id,
                                checkin_id=row.checkin_id, direction="out", channel="sms",
                                from_number=from_ or "", to_number=to, body=body,
                                twilio_sid=result_sid, status=status, created_at=now))
    log.info("outbox %s sent via %s as %s", outbox_id, sender.name, result_sid)
    return SendOutcome("sent", result_sid)


def _sids_recorded(session: Session, to: str, since: datetime) -> set[str]:
    """The SIDs of the texts to `to` recorded since `since`: the same words sent before (a
    question asked again) are not the text a look-up before a resend is for."""
    return set(session.scalars(sa.select(Message.twilio_sid).where(
        Message.to_number == to, Message.direction == "out", Message.created_at >= since,
        Message.twilio_sid.is_not(None))))


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

