"""Fault injection on the real processes: crashes, restarts and Twilio storms lose nothing and
send nothing twice.

Each scenario runs gunicorn (`service:create_app()`), Celery workers and beat
(`celery -A tasks.celery_app`), a fresh PostgreSQL database, a private redis-server as broker
and the fake Twilio server, all configured through the environment; seeds rows through the
service layer; injects one fault; and ends by counting what the fake Twilio received, printed as
`sent=<n> expected=<n> duplicates=<n>`.

Leases: a follow-up claim lasts 5 minutes and an outbox send 2 minutes. Where a scenario needs
a lease to run out (a dead worker's rows), the replacement worker starts with its clock moved
6 minutes ahead (TRIAGE_CLOCK_OFFSET_DAYS) instead of the test waiting 6 minutes.
"""

from __future__ import annotations

import collections
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
import requests
from twilio.request_validator import RequestValidator

from tests.e2e.harness import (
    TcpProxy,
    clinic_phone,
    count_sends,
    offset_days,
    patient_phone,
    rows,
    scalar,
    seed_clinic,
    seed_due_followups,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]

LEASES_RUN_OUT = offset_days(6 * 60)  # longer than both leases (5 min and 2 min)


def report(capsys, line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}", flush=True)


def snapshot(engine, fake) -> tuple:
    return (len(fake.requests()),
            tuple(rows(engine, "SELECT status, count(*) FROM followups GROUP BY 1 ORDER BY 1")),
            tuple(rows(engine, "SELECT status, count(*) FROM outbox GROUP BY 1 ORDER BY 1")))


def wait_quiet(engine, fake, *, quiet: float = 4.0, timeout: float = 90.0) -> tuple:
    """Waits until nothing moves (requests to Twilio, follow-up and outbox states)."""
    deadline = time.monotonic() + timeout
    last, since = snapshot(engine, fake), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = snapshot(engine, fake)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise TimeoutError(f"still moving after {timeout:.0f}s: {last}")


def all_done(engine, fake, followups: int) -> bool:
    open_followups = scalar(engine, "SELECT count(*) FROM followups "
                                    "WHERE status IN ('scheduled', 'claimed')")
    started = scalar(engine, "SELECT count(*) FROM followups WHERE status = 'started'")
    unsent = scalar(engine, "SELECT count(*) FROM outbox WHERE status <> 'sent'")
    total = scalar(engine, "SELECT count(*) FROM outbox")
    return (open_followups == 0 and started == followups and unsent == 0 and total > 0
            and len(fake.messages()) >= total)


def expected_texts(engine) -> list[tuple[str, str]]:
    return [(r.to_number, r.body) for r in rows(engine, "SELECT to_number, body FROM outbox")]


def assert_each_followup_started_once(engine, phones: list[str]) -> int:
    """One conversation per follow-up, and every patient got the same number of texts."""
    checkins = rows(engine, "SELECT followup_id, count(*) AS n FROM checkins "
                            "WHERE followup_id IS NOT NULL GROUP BY 1")
    assert len(checkins) == len(phones)
    assert {r.n for r in checkins} == {1}
    per_patient = collections.Counter(r.to_number for r in rows(
        engine, "SELECT to_number FROM outbox"))
    assert set(per_patient) == set(phones)
    (texts,) = set(per_patient.values())
    return texts


def assert_exactly_once(engine, fake, phones, capsys, scenario: str):
    texts = assert_each_followup_started_once(engine, phones)
    counts = count_sends(fake.messages(), expected_texts(engine))
    report(capsys, counts.line(scenario))
    assert counts.expected == texts * len(phones)
    assert counts.duplicates == 0
    assert counts.sent == counts.expected
    assert len(fake.messages()) == counts.expected
    return counts


# ---- follow-ups: a worker killed, Redis restarted, two beats -------------------------------


def test_kill9_worker_mid_send_then_a_new_worker(make_stack, pg_url, pg_engine, fake, capsys):
    phones = seed_due_followups(pg_url, 200, clinics=2)
    stack = make_stack()
    worker_a = stack.worker("a")
    stack.beat("main")
    wait_for(lambda: len(fake.messages()) >= 150, timeout=120, what="150 texts sent")
    worker_a.kill9()
    at_kill = len(fake.messages())
    stranded = scalar(pg_engine, "SELECT count(*) FROM outbox WHERE status = 'sending'")
    # The dead worker's claims hold for their lease: the new worker lives after it ran out.
    stack.worker("b", TRIAGE_CLOCK_OFFSET_DAYS=LEASES_RUN_OUT)
    wait_for(lambda: all_done(pg_engine, fake, 200), timeout=150, interval=0.5,
             what="every follow-up sent")
    wait_quiet(pg_engine, fake, quiet=3)
    lookups = sum(r["method"] == "GET" for r in fake.requests())
    report(capsys, f"[kill -9 worker] texts at kill={at_kill} left 'sending' by the dead "
                   f"worker={stranded} looked up in Twilio's list={lookups}")
    assert lookups >= stranded
    assert_exactly_once(pg_engine, fake, phones, capsys, "kill -9 worker")


def test_redis_restart_mid_run(make_stack, pg_url, pg_engine, fake, private_redis, capsys):
    phones = seed_due_followups(pg_url, 200, clinics=2)
    stack = make_stack()
    worker_a = stack.worker("a")
    stack.beat("main")
    wait_for(lambda: scalar(pg_engine, "SELECT count(*) FROM followups "
                                       "WHERE status = 'started'") >= 60,
             timeout=120, what="60 follow-ups started")
    private_redis.restart(down_for=2.0)  # everything queued in Redis is gone
    wait_for(lambda: worker_a.log_path.read_text(errors="replace").count("Connected to redis")
             >= 2, timeout=60, what="the worker back on Redis")
    state = wait_quiet(pg_engine, fake, quiet=5, timeout=120)
    sent_before_lease = len(fake.messages())
    left = scalar(pg_engine, "SELECT count(*) FROM followups WHERE status = 'claimed'")
    report(capsys, f"[redis restart] after the restart, before the leases ran out: "
                   f"texts={sent_before_lease} follow-ups still claimed={left} state={state}")
    assert worker_a.alive(), "the worker must survive a Redis restart"
    # Claims whose start task was lost with Redis wait for their lease (5 min); a worker that
    # lives 6 minutes later takes them again.
    worker_a.stop()
    stack.worker("b", TRIAGE_CLOCK_OFFSET_DAYS=LEASES_RUN_OUT)
    wait_for(lambda: all_done(pg_engine, fake, 200), timeout=150, interval=0.5,
             what="every follow-up sent")
    wait_quiet(pg_engine, fake, quiet=3)
    assert_exactly_once(pg_engine, fake, phones, capsys, "redis restart")


def test_two_beats_claim_nothing_twice(make_stack, pg_url, pg_engine, fake, capsys):
    phones = seed_due_followups(pg_url, 200, clinics=2)
    stack = make_stack()
    worker = stack.worker("a", concurrency=3)
    stack.beat("one")
    stack.beat("two")  # by mistake
    wait_for(lambda: all_done(pg_engine, fake, 200), timeout=150, interval=0.5,
             what="every follow-up sent")
    wait_quiet(pg_engine, fake, quiet=3)
    log = worker.log_path.read_text(errors="replace")
    claims = [int(line.split("claimed ")[1].split()[0]) for line in log.splitlines()
              if "claimed " in line and "due follow-up(s)" in line]
    dispatches = log.count("tasks.dispatch_due_followups[")
    report(capsys, f"[two beats] dispatch tasks received={dispatches // 2} "
                   f"claims={claims} claimed in total={sum(claims)}")
    assert sum(claims) == 200  # each follow-up claimed once, whichever beat's task ran
    assert_exactly_once(pg_engine, fake, phones, capsys, "two beats")


# ---- Twilio misbehaving --------------------------------------------------------------------


def test_twilio_429_then_500_then_recovers_with_growing_backoff(make_stack, pg_url, pg_engine,
                                                                 fake, capsys):
    phones = seed_due_followups(pg_url, 10, clinics=1)
    # Every first attempt is refused with 429, every second with 500; the third goes through.
    fake.fail(429, count=10)
    fake.fail(500, count=10)
    stack = make_stack()
    stack.web(workers=1, threads=4)  # receives the status callbacks
    stack.worker("a")
    stack.beat("main")
    wait_for(lambda: all_done(pg_engine, fake, 10), timeout=200, interval=1.0,
             what="every follow-up sent after the storm")
    wait_quiet(pg_engine, fake, quiet=3)
    creates = [r for r in fake.requests() if r["method"] == "POST"]
    by_text = collections.defaultdict(list)
    for r in creates:
        by_text[(r["form"]["To"], r["form"]["Body"])].append((r["received_at"], r["answer"]))
    first_texts = [v for v in by_text.values() if len(v) > 1]
    assert len(first_texts) == 10
    assert all([a for _, a in v] == [429, 500, 201] for v in first_texts)
    gap1 = [v[1][0] - v[0][0] for v in first_texts]
    gap2 = [v[2][0] - v[1][0] for v in first_texts]
    report(capsys, f"[429/500 storm] retry gaps (s): after 429 min={min(gap1):.1f} "
                   f"mean={statistics.mean(gap1):.1f}; after 500 min={min(gap2):.1f} "
                   f"mean={statistics.mean(gap2):.1f}")
    assert min(gap1) >= 14  # no retry storm: the first retry waits 15-30 s
    assert statistics.mean(gap2) > 1.4 * statistics.mean(gap1)  # and the next about twice that
    assert [r["answer"] for r in creates].count(201) == 20
    assert_exactly_once(pg_engine, fake, phones, capsys, "429/500 storm")
    # The status callbacks reached the web and were recorded.
    wait_for(lambda: scalar(pg_engine, "SELECT count(*) FROM messages WHERE direction = 'out' "
                                       "AND status = 'delivered'") == 20,
             timeout=20, what="delivered status callbacks")
    assert {c["answer"] for c in fake.callbacks()} == {204}


def test_twilio_hangs_past_the_client_timeout_no_duplicate(make_stack, pg_url, pg_engine, fake,
                                                           capsys):
    phones = seed_due_followups(pg_url, 20, clinics=1)
    # Twilio accepts the first 2 messages but answers only after the client's 10 s timeout.
    fake.hang(13, count=2)
    stack = make_stack()
    worker_a = stack.worker("a")
    stack.beat("main")
    wait_for(lambda: scalar(pg_engine, "SELECT count(*) FROM outbox WHERE status = 'unknown'")
             == 2, timeout=60, what="2 sends with an unknown result")
    state = wait_quiet(pg_engine, fake, quiet=4, timeout=60)
    report(capsys, f"[twilio hangs] before the leases ran out: {state}")
    # An unknown send keeps its lease (2 min) before it is looked for and maybe sent again.
    worker_a.stop()
    stack.worker("b", TRIAGE_CLOCK_OFFSET_DAYS=LEASES_RUN_OUT)
    wait_for(lambda: all_done(pg_engine, fake, 20), timeout=90, interval=0.5,
             what="every follow-up sent")
    wait_quiet(pg_engine, fake, quiet=3)
    creates = [r for r in fake.requests() if r["method"] == "POST"]
    lists = [r for r in fake.requests() if r["method"] == "GET"]
    report(capsys, f"[twilio hangs] message creates={len(creates)} list lookups={len(lists)}")
    assert len(lists) >= 2
    assert len(creates) == 40  # the 2 late answers were found in the list, not sent again
    assert_exactly_once(pg_engine, fake, phones, capsys, "twilio hangs")


# ---- inbound --------------------------------------------------------------------------------


def _post_sms(stack, fake, params: dict) -> requests.Response:
    url = stack.web_url + "/twilio/sms"
    signature = RequestValidator(fake.auth_token).compute_signature(url, params)
    return requests.post(url, data=urlencode(params), timeout=30,
                         headers={"X-Twilio-Signature": signature,
                                  "Content-Type": "application/x-www-form-urlencoded"})


def test_same_inbound_message_sid_three_times_concurrently(make_stack, pg_url, pg_engine, fake,
                                                           capsys):
    number = clinic_phone(0)
    seed_clinic(pg_url, number=number)
    stack = make_stack()
    stack.web(workers=3, threads=4)
    patients = [patient_phone(i) for i in range(20)]
    sent = []
    with ThreadPoolExecutor(max_workers=12) as pool:
        for step, body in enumerate(["BACK", "yes"]):
            for i, phone in enumerate(patients):
                params = {"MessageSid": f"SM{step:02d}{i:030d}", "AccountSid": fake.account_sid,
                          "From": phone, "To": number, "Body": body, "NumMedia": "0"}
                barrier = threading.Barrier(3)

                def post(params=params, barrier=barrier):
                    barrier.wait(timeout=10)
                    return _post_sms(stack, fake, params)

                answers = [f.result() for f in [pool.submit(post) for _ in range(3)]]
                assert [a.status_code for a in answers] == [200, 200, 200]
                assert len({a.text for a in answers}) == 1  # the same reply to each copy
                sent.append(params["MessageSid"])
    inbound = rows(pg_engine, "SELECT twilio_sid, count(*) AS n FROM messages "
                              "WHERE direction = 'in' GROUP BY 1")
    receipts = scalar(pg_engine, "SELECT count(*) FROM webhook_receipts")
    duplicates = sum(r.n - 1 for r in inbound)
    report(capsys, f"[same MessageSid x3] sent={len(inbound)} expected={len(sent)} "
                   f"duplicates={duplicates}")
    assert {r.twilio_sid for r in inbound} == set(sent) and duplicates == 0
    assert receipts == len(sent)
    assert scalar(pg_engine, "SELECT count(*) FROM patients") == 20
    assert scalar(pg_engine, "SELECT count(*) FROM checkins") == 20
    # Each conversation moved one step per distinct message: as many stored replies as one
    # delivery of each message produced.
    per_patient = rows(pg_engine, "SELECT patient_id, count(*) AS n FROM messages "
                                  "WHERE direction = 'out' GROUP BY 1")
    assert len({r.n for r in per_patient}) == 1


def test_postgres_unavailable_during_inbound_traffic(make_stack, pg_url, pg_engine, fake,
                                                     capsys):
    number = clinic_phone(0)
    seed_clinic(pg_url, number=number)
    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    through_proxy = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    try:
        stack = make_stack(web_database_url=through_proxy, worker_database_url=through_proxy)
        stack.web(workers=2, threads=4)
        stack.worker("a")
        stack.beat("main")
        patients = [patient_phone(i) for i in range(5)]
        bodies = ["BACK", "yes", "5", "no", "no", "no", "no", "no", "no", "no", "no", "no"]
        order: dict[str, list[str]] = {p: [] for p in patients}
        holding = 0
        outage = (len(bodies) // 4, len(bodies) // 4 + 5)  # rounds during which PG is away
        for step, body in enumerate(bodies):
            if step == outage[0]:
                proxy.stop()
            if step == outage[1]:
                proxy.start()
            for i, phone in enumerate(patients):
                sid = f"SM{i:02d}{step:030d}"
                answer = _post_sms(stack, fake, {
                    "MessageSid": sid, "AccountSid": fake.account_sid, "From": phone,
                    "To": number, "Body": body, "NumMedia": "0"})
                assert answer.status_code == 200, answer.text
                holding += outage[0] <= step < outage[1]
                order[phone].append(sid)
            time.sleep(0.8)
        expected = sum(len(v) for v in order.values())
        wait_for(lambda: scalar(pg_engine, "SELECT count(*) FROM webhook_receipts") == expected,
                 timeout=60, what="every inbound message processed")
        got = rows(pg_engine, "SELECT m.twilio_sid, p.phone_e164 FROM messages m JOIN "
                              "patients p ON p.id = m.patient_id WHERE m.direction = 'in' "
                              "ORDER BY m.id")
        processed: dict[str, list[str]] = collections.defaultdict(list)
        for r in got:
            processed[r.phone_e164].append(r.twilio_sid)
        duplicates = len(got) - len({r.twilio_sid for r in got})
        report(capsys, f"[postgres away] inbound during the outage={holding} "
                       f"sent={len({r.twilio_sid for r in got})} expected={expected} "
                       f"duplicates={duplicates}")
        assert duplicates == 0
        assert dict(processed) == order  # every one, each patient's in the order sent
    finally:
        proxy.stop()
