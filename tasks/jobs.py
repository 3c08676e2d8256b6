"""The tasks: thin shells that take ids, call one service function each, and log what happened.

The beat's jobs (dispatch_due_followups, send_due_outbox, tick_due_checkins, oncall_due,
replay_spool) find due rows and queue one short task per row or per recipient; nothing waits
in Celery for longer than a retry's few minutes. Logs carry ids and outcomes, never phone
numbers or answers.
"""

from __future__ import annotations

import collections
import logging

from celery import shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from service.conversations import checkins, consent, inbound
from service.followups import oncall
from service.followups import schedule as followups
from service.messaging import outbox
from service.messaging.senders import OPTED_OUT
from service.messaging.spool import Spool
from service.store.models import CheckIn, Outbox, Patient

log = logging.getLogger("tasks")

DB_DOWN = (OperationalError, InterfaceError)
# Per-row tasks retry while the database is away; Celery's countdown stays within minutes.
RETRY = {"autoretry_for": DB_DOWN, "retry_backoff": 5, "retry_backoff_max": 300,
         "retry_jitter": True, "max_retries": 8}


def _rt(task):
    return task.app.triage


def _queue(task, name: str, *args) -> None:
    task.app.send_task(name, args=args)


def _send_batches(task, batches: list[list[int]]) -> int:
    for ids in batches:
        _queue(task, "tasks.send_outbox", ids)
    return len(batches)


# ---- outbox -------------------------------------------------------------------------------


MAX_SEND_BATCHES = 20  # at most 20 x 500 texts queued per beat run


@shared_task(bind=True, name="tasks.send_due_outbox")
def send_due_outbox(self) -> int:
    """Beat: queues one sending task per recipient with due texts (each text once: queued
    texts are marked, see outbox.due_batches), 500 texts at a time while there are more."""
    rt = _rt(self)
    queued = 0
    for _ in range(MAX_SEND_BATCHES):
        now = rt.now()
        with rt.db.transaction() as session:
            batches = outbox.due_batches(session, now, caps=rt.lane_caps)
        queued += _send_batches(self, batches)
        texts = sum(map(len, batches))
        if texts:
            log.info("send_due_outbox recipients=%d texts=%d", len(batches), texts)
        if texts < 500:
            break
    return queued


@shared_task(bind=True, name="tasks.send_outbox", **RETRY)
def send_outbox(self, outbox_ids: list[int], held: str | None = None) -> list[str]:
    """Sends one recipient's due texts in queue order (each at most once, rate-limited).

    A text whose number's next free slot is further than a moment away is held: the task ends
    and the rest of the list comes back by countdown at that slot (`held`: the first text's
    hold), so the process sends other numbers' texts meanwhile instead of sleeping."""
    rt = _rt(self)
    results = []
    for at, outbox_id in enumerate(outbox_ids):
        result = outbox.send_one(rt.db, outbox_id, rt.sender, rt.now(),
                                 on_failed=consent.after_failed_send,
                                 status_callback=rt.status_callback, pacer=rt.limiter,
                                 held=held if at == 0 else None,
                                 max_attempts=int(rt.config.get("SEND_MAX_ATTEMPTS") or 6))
        results.append(result.status)
        log.log(logging.WARNING if result.status == "failed" else logging.INFO,
                "send_outbox outbox_id=%s outcome=%s code=%s", outbox_id, result.status,
                result.code)
        if result.status == "failed" and result.code == OPTED_OUT:
            _remember_refusal(rt, outbox_id)
        if result.status == "held":
            queue = (self.request.delivery_info or {}).get("routing_key")
            self.apply_async(args=(outbox_ids[at:], result.detail),
                             countdown=result.retry_in, queue=queue)
            break
    return results


def _remember_refusal(rt, outbox_id: int) -> None:
    """Twilio refused a text because the patient opted out there (21610): during an outage
    their texts get no holding reply either."""
    with rt.db.transaction() as session:
        patient_id = session.get(Outbox, outbox_id).patient_id
        consent.remember_opted_out(Spool.from_config(rt.config), session, patient_id)


# ---- follow-ups ---------------------------------------------------------------------------


MAX_DISPATCH_BATCHES = 20  # at most 10,000 follow-ups claimed per beat run
START_BATCH = 100  # follow-ups one start task takes (one transaction)


@shared_task(bind=True, name="tasks.dispatch_due_followups")
def dispatch_due_followups(self) -> int:
    """Beat: claims due follow-ups (with a lease, one statement per batch) and queues one start
    task per START_BATCH of them.

    A full batch is followed by another, so a morning's worth of follow-ups released from quiet
    hours starts within minutes, not one batch a minute; MAX_DISPATCH_BATCHES bounds one run,
    which then queues the next run behind its start tasks.
    """
    rt = _rt(self)
    total = 0
    for _ in range(MAX_DISPATCH_BATCHES):
        with rt.db.transaction() as session:
            claimed = followups.claim_due(session, rt.now())
        for at in range(0, len(claimed), START_BATCH):  # after the commit: see the claim
            _queue(self, "tasks.start_followups", claimed[at:at + START_BATCH])
        total += len(claimed)
        if len(claimed) < followups.CLAIM_BATCH:
            return total
    # More are due: the next run goes to the back of the queue, behind the start tasks just
    # queued, so claims keep pace with starting (within their lease) instead of waiting a
    # minute for the beat: 100,000 due start in one go.
    _queue(self, "tasks.dispatch_due_followups")
    log.info("dispatch_due_followups claimed=%d, more due: queued another run", total)
    return total


def _start_in_one_transaction(rt, followup_ids: list[int], now) -> tuple[dict, set[str]]:
    with rt.db.transaction() as session:
        outcomes = followups.start_claimed_batch(session, followup_ids, now)
        return outcomes, followups.patient_numbers(
            session, [i for i, result in outcomes.items() if result == "started"])


def _start_batch(task, followup_ids: list[int]) -> dict[int, str]:
    rt = _rt(task)
    now = rt.now()
    try:
        outcomes, numbers = _start_in_one_transaction(rt, followup_ids, now)
    except DB_DOWN:
        raise  # the whole batch is retried; what started meanwhile is skipped then
    except Exception:
        if len(followup_ids) == 1:
            raise
        # One follow-up that cannot start must not hold up the others: each on its own. One
        # that fails again stays claimed and is claimed again once its lease ran out.
        log.exception("start_followups: the batch failed; starting its follow-ups one by one")
        outcomes, numbers = {}, set()
        for followup_id in followup_ids:
            try:
                one, to = _start_in_one_transaction(rt, [followup_id], now)
            except DB_DOWN:
                raise
            except Exception:
                log.exception("start_followups: follow-up %s could not be started",
                              followup_id)
                one, to = {followup_id: "failed"}, set()
            outcomes.update(one)
            numbers |= to
    counts = collections.Counter(outcomes.values())
    log.info("start_followups followups=%d %s", len(outcomes),
             " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if numbers:  # their first texts go out now, not at the next beat
        with rt.db.transaction() as session:
            batches = outbox.due_batches(session, now, to_numbers=numbers,
                                         limit=max(500, 4 * len(numbers)), caps=rt.lane_caps)
        _send_batches(task, batches)
    return outcomes


@shared_task(bind=True, name="tasks.start_followups", **RETRY)
def start_followups(self, followup_ids: list[int]) -> dict[str, int]:
    """Starts claimed follow-ups in one transaction, then queues the texts of those started;
    returns how many had each outcome (`failed`: could not be started, left claimed)."""
    return dict(collections.Counter(_start_batch(self, followup_ids).values()))


@shared_task(bind=True, name="tasks.start_followup", **RETRY)
def start_followup(self, followup_id: int) -> str:
    """One follow-up (a message queued before start tasks took batches): a batch of one."""
    return _start_batch(self, [followup_id])[followup_id]


# ---- conversations: reminders and timeouts -------------------------------------------------


@shared_task(bind=True, name="tasks.tick_due_checkins")
def tick_due_checkins(self) -> int:
    """Beat: queues a tick for each conversation whose reminder or timeout is due."""
    rt = _rt(self)
    with rt.db.transaction() as session:
        ids = checkins.due_checkin_ids(session, rt.now())
    for checkin_id in ids:
        _queue(self, "tasks.tick_checkin", checkin_id)
    return len(ids)


@shared_task(bind=True, name="tasks.tick_checkin", **RETRY)
def tick_checkin(self, checkin_id: int) -> bool:
    rt = _rt(self)
    now = rt.now()
    with rt.db.transaction() as session:
        happened = checkins.tick_checkin(session, checkin_id, now)
        checkin = session.get(CheckIn, checkin_id) if happened else None
        to = session.get(Patient, checkin.patient_id).phone_e164 if checkin else None
        status = checkin.status if checkin else None
    log.info("tick_checkin checkin_id=%s fired=%s status=%s", checkin_id, happened, status)
    if to is not None:
        with rt.db.transaction() as session:
            batches = outbox.due_batches(session, now, to_number=to, caps=rt.lane_caps)
        _send_batches(self, batches)
        if status != "active":  # it ended: its alert may need the on-call now
            _notify_oncall(self, now)
    return happened


# ---- on-call ------------------------------------------------------------------------------


def _notify_oncall(task, now) -> int:
    rt = _rt(task)
    limit = int(rt.config.get("ONCALL_MAX_REPEATS", 4))
    with rt.db.transaction() as session:
        ids = oncall.due_alert_ids(session, now, max_repeats=limit)
    sent = 0
    for alert_id in ids:
        with rt.db.transaction() as session:
            row_id = oncall.notify(session, alert_id, now, max_repeats=limit,
                                   base_url=rt.config.get("PUBLIC_BASE_URL"))
        if row_id is not None:
            sent += 1
            _queue(task, "tasks.send_outbox", [row_id])
            log.info("oncall alert_id=%s outbox_id=%s", alert_id, row_id)
    return sent


@shared_task(bind=True, name="tasks.oncall_due")
def oncall_due(self) -> int:
    """Beat: the first on-call text of new urgent/emergency alerts, and the 30-minute repeats."""
    return _notify_oncall(self, _rt(self).now())


@shared_task(bind=True, name="tasks.send_now")
def send_now(self) -> int:
    """Queued by the web after an inbound text: on-call texts and due texts without waiting for
    the beat (which would do the same within a minute)."""
    rt = _rt(self)
    now = rt.now()
    sent = _notify_oncall(self, now)
    with rt.db.transaction() as session:
        batches = outbox.due_batches(session, now, caps=rt.lane_caps)
    return sent + _send_batches(self, batches)


# ---- inbound spool ------------------------------------------------------------------------


@shared_task(bind=True, name="tasks.replay_spool")
def replay_spool(self) -> int:
    """Beat: replays inbound texts spooled while the database was away, in arrival order."""
    rt = _rt(self)
    spool = Spool.from_config(rt.config)
    # A short lease: a replay whose lock could not be released (Redis froze under it) must not
    # hold every later replay off for the default 5 minutes.
    with rt.only_one("spool", ttl=60) as mine:
        if not mine:
            return 0
        try:
            done = spool.replay(lambda record: inbound.replay_spooled(rt.db, record, rt.now(),
                                                                      spool=spool))
        except DB_DOWN as exc:
            log.warning("replay_spool: database still unavailable (%s)", type(exc).__name__)
            return 0
    if done:
        log.info("replay_spool replayed=%d", done)
        with rt.db.transaction() as session:
            batches = outbox.due_batches(session, rt.now(), caps=rt.lane_caps)
        _send_batches(self, batches)
    return done
