"""Real worker and beat processes: the send-rate limit holds across two workers (Redis), and a
fresh embedded-broker run (no Redis, SQLite, dry-run sender) sends a follow-up once the clock
is moved, as the README's "See a follow-up locally" describes."""

from __future__ import annotations

import multiprocessing
import re
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from service import taskqueue
from service.config import load_config
from service.conversations import consent, inbound
from service.messaging.ratelimit import RateLimiter
from service.store import Database, migrate
from service.store.models import FollowUp, Message, Outbox
from tests.support.answers import intake_answers
from tests.support.db import rows
from tests.support.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.tasks.conftest import REDIS_URL
from tests.tasks.helpers import SELF_CARE, wait_for
from tests.tasks.procs import ROOT, celery_process, clean_env, wait_for_log

pytestmark = pytest.mark.slow

NY = ZoneInfo("America/New_York")


def _take_slots(lock_dir: str, n: int, rate: float, out) -> None:
    limiter = RateLimiter(rate, lock_dir=lock_dir)
    for _ in range(n):
        assert limiter.acquire("+16175550105")
        out.put(time.time())


def test_file_rate_limit_holds_across_processes(tmp_path):
    rate, per_process = 10.0, 5
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_take_slots, args=(str(tmp_path), per_process, rate, out))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    times = sorted(out.get(timeout=30) for _ in range(2 * per_process))
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.9 / rate, gaps
    assert times[-1] - times[0] >= (len(times) - 1) / rate * 0.95


def test_redis_rate_limit_gives_one_slot_per_interval(redis_prefix):
    limiters = [RateLimiter(20.0, redis_url=REDIS_URL, key_prefix=redis_prefix + "rl1:")
                for _ in range(2)]
    start = time.time()
    for i in range(6):
        assert limiters[i % 2].acquire("+16175550105")
    assert time.time() - start >= 5 / 20.0 * 0.95
    # A slot further away than max_wait is refused: the row goes back to the outbox.
    impatient = RateLimiter(0.1, redis_url=REDIS_URL, key_prefix=redis_prefix + "rl2:",
                            max_wait=1)
    assert impatient.acquire("+16175550105") is True
    assert impatient.acquire("+16175550105") is False


def _worker_env(database_url, prefix, api, rate, now, tmp_path) -> dict:
    """A worker on PostgreSQL and the shared Redis (its own key prefix), sending through the
    fake Twilio at `rate` texts per second per number, its clock at `now`."""
    return clean_env({
        "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix, "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_API_BASE": api.url,
        "SEND_RATE_PER_SECOND": rate, "SECRET_KEY": "x", "BROKER_DIR": tmp_path,
        "SPOOL_DIR": tmp_path / "spool", "TRIAGE_FAKE_NOW": now.isoformat()})


@pytest.mark.postgres
@pytest.mark.redis
def test_two_worker_processes_share_the_rate_limit_of_one_number(database_url, redis_prefix,
                                                                 tmp_path):
    rate, patients = 4.0, 8
    now = datetime(2026, 6, 1, 10, 0, tzinfo=NY)
    db = Database(database_url)
    try:
        with db.transaction() as session:
            from service.accounts.clinics import create_clinic

            clinic = create_clinic(session, name="Rate Clinic", numbers=["+16175550106"])
            for n in range(patients):
                consent.enroll_patient(session, clinic, phone=f"+1617555{n + 200:04d}",
                                        now=now)
        prefix = redis_prefix + "procs:"
        with FakeTwilio() as api:
            env = _worker_env(database_url, prefix, api, rate, now, tmp_path)
            logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
            args = ["worker", "--loglevel=INFO", "--concurrency=2", "--without-gossip",
                    "--without-mingle", "--without-heartbeat"]
            # Each worker its own queue, and half the texts on each: both send from the number
            # at once (a held text comes back on the queue it came from).
            with celery_process([*args, "-n", "w1@%h", "-Q", "w1"], env, logs[0],
                                cwd=tmp_path) as w1, \
                    celery_process([*args, "-n", "w2@%h", "-Q", "w2"], env, logs[1],
                                   cwd=tmp_path) as w2:
                wait_for_log(logs[0], " ready.", w1)
                wait_for_log(logs[1], " ready.", w2)
                config = load_config({"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix},
                                     environ={"ENV": "development"})
                client = taskqueue._client(config)
                for n, row in enumerate(rows(db, Outbox)):
                    client.send_task("tasks.send_outbox", args=([row.id],),
                                     queue=f"w{n % 2 + 1}")
                wait_for(lambda: all(r.status == "sent" for r in rows(db, Outbox)),
                         timeout=90, what="every text sent")
        posts = api.posts()
        assert len(posts) == patients  # one request per text, no duplicates
        assert {p["form"]["From"] for p in posts} == {"+16175550106"}
        assert [p["answer"] for p in posts] == [201] * patients
        times = sorted(p["received_at"] for p in posts)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        # Slots are exactly 1/rate apart in Redis; the HTTP hop adds a little jitter.
        assert min(gaps) >= 0.6 / rate, gaps
        assert times[-1] - times[0] >= (patients - 1) / rate * 0.9
        per_worker = [len(re.findall(r"send_outbox outbox_id=\d+ outcome=sent", log.read_text()))
                      for log in logs]
        assert per_worker == [patients // 2, patients // 2], per_worker
    finally:
        db.dispose()


@pytest.mark.postgres
@pytest.mark.redis
def test_a_worker_sends_a_second_numbers_texts_while_the_first_numbers_wait_their_slots(
        database_url, redis_prefix, tmp_path):
    """Texts queued number after number (as one clinic's follow-up batch queues them): a worker
    process with one slot does not sleep through the first number's slots with the second
    number's texts behind it; it holds the first number's texts and sends the second's."""
    rate, per_number = 2.0, 6
    now = datetime(2026, 6, 1, 10, 0, tzinfo=NY)
    numbers = ["+16175550108", "+16175550109"]
    db = Database(database_url)
    try:
        with db.transaction() as session:
            from service.accounts.clinics import create_clinic

            for c, number in enumerate(numbers):
                clinic = create_clinic(session, name=f"Lane Clinic {c}", numbers=[number])
                for n in range(per_number):
                    consent.enroll_patient(session, clinic, phone=f"+1617555{300 + 10 * c + n:04d}",
                                           now=now)
        prefix = redis_prefix + "lanes:"
        with FakeTwilio() as api:
            env = _worker_env(database_url, prefix, api, rate, now, tmp_path)
            log = tmp_path / "w.log"
            with celery_process(["worker", "--loglevel=INFO", "--concurrency=1",
                                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                                env, log, cwd=tmp_path) as worker:
                wait_for_log(log, " ready.", worker)
                config = load_config({"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix},
                                     environ={"ENV": "development"})
                assert taskqueue.send_task("tasks.send_due_outbox", config=config)
                wait_for(lambda: all(r.status == "sent" for r in rows(db, Outbox)),
                         timeout=90, what="every text sent")
        posts = api.posts()
        assert len(posts) == 2 * per_number  # one request per text
        times = {number: sorted(p["received_at"] for p in posts if p["form"]["From"] == number)
                 for number in numbers}
        assert [len(t) for t in times.values()] == [per_number, per_number]
        # Asleep on its slots, the first number's six texts would take 2.5 s before the second
        # number's first; held, the second number starts while the first has most to go.
        first, second = times.values()
        assert second[0] < first[per_number // 2], (first, second)
        for t in times.values():
            assert min(b - a for a, b in zip(t, t[1:], strict=False)) >= 0.6 / rate, t
    finally:
        db.dispose()


def sent_texts(db) -> list[str]:
    """Texts the dry-run sender sent (its SIDs start with DR; replies by TwiML have none)."""
    return [m.body for m in rows(db, Message, Message.direction == "out")
            if (m.twilio_sid or "").startswith("DR")]


def test_embedded_broker_worker_and_beat_send_a_followup_when_the_clock_is_moved(tmp_path):
    url = f"sqlite:///{tmp_path / 'triage.db'}"
    migrate.upgrade(url)
    db = Database(url)
    intake_at = datetime(2026, 5, 4, 10, 0, tzinfo=NY)
    try:
        with db.transaction() as session:
            from service.accounts.clinics import create_clinic

            create_clinic(session, name="Laptop Clinic", numbers=["+16175550107"])
        for n, body in enumerate(["PAIN", *intake_answers(SELF_CARE)]):
            with db.transaction() as session:
                inbound.handle_inbound_sms(session, to="+16175550107", from_="+16175550144",
                                            body=body, sid=f"SM{n:032x}", now=intake_at)
        first = rows(db, FollowUp, FollowUp.kind == "first")[0]
        assert first.due_at == intake_at + timedelta(days=28)

        env = clean_env({"DATABASE_URL": url, "BROKER_DIR": tmp_path / "broker",
                         "SPOOL_DIR": tmp_path / "spool", "BEAT_INTERVAL_SECONDS": "2",
                         "SEND_RATE_PER_SECOND": "20",
                         "TRIAGE_FAKE_NOW": (first.due_at + timedelta(minutes=5)).isoformat()})
        logs = {"worker": tmp_path / "worker.log", "beat": tmp_path / "beat.log"}
        with celery_process(["worker", "--loglevel=INFO", "--concurrency=2"], env,
                            logs["worker"], cwd=tmp_path) as worker, \
                celery_process(["beat", "--loglevel=INFO", "--schedule",
                                str(tmp_path / "celerybeat-schedule")], env, logs["beat"],
                               cwd=tmp_path):
            wait_for_log(logs["worker"], " ready.", worker)
            ready = time.monotonic()
            wait_for(lambda: len(sent_texts(db)) >= 2, timeout=90, what="the follow-up texts")
            took = time.monotonic() - ready
        sent = sent_texts(db)
        assert sent[0].startswith("Laptop Clinic: Hi! A few weeks ago")
        assert sent[1].startswith("How is your back pain now?")
        assert took < 30  # the beat runs every BEAT_INTERVAL_SECONDS (2 s here, 60 s by default)
        assert rows(db, FollowUp, FollowUp.kind == "first")[0].status == "started"
        text = logs["worker"].read_text() + logs["beat"].read_text()
        assert "Scheduler: Sending due task dispatch-due-followups" in text
        assert "+16175550144" not in text  # no phone number in the logs
        assert not (ROOT / "var" / "celerybeat-schedule.lock").exists()
    finally:
        db.dispose()
