"""The outbox sender through the real worker and the real `twilio` client on a fake HTTP client:
retries with backoff on 429/5xx/timeouts (capped, then an alert), no retry on permanent errors,
the message-list check before any resend, queue order per recipient, delivery failures."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.conversations import consent
from service.messaging import outbox
from service.messaging.spool import Spool
from service.store.models import Alert, Clinic, Message, Outbox, Patient
from tests.support.db import one, rows
from tests.support.phones import Phone
from tests.tasks.helpers import run_beat, run_task

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PATIENT = "+16175550142"


@pytest.fixture
def clinic(make_clinic):
    return make_clinic(name="Send Clinic", numbers=["+16175550102"])


@pytest.fixture
def enrolled(db, clinic, clock):
    """A patient just enrolled at 10:00 local: one consent text queued."""
    now = clock.local(2026, 6, 1, 10, 0)
    with db.transaction() as session:
        patient = consent.enroll_patient(session, session.get(Clinic, clinic.id),
                                          phone=PATIENT, now=now)
        return patient.id


def queue_text(db, clinic_id: int, patient_id: int, body: str, now) -> int:
    with db.transaction() as session:
        clinic = session.get(Clinic, clinic_id)
        patient = session.get(Patient, patient_id)
        return outbox.enqueue(session, clinic=clinic, patient=patient, body=body,
                              kind="notice", now=now, quiet=False).id


def send_due(worker):
    return run_task(worker.app, "tasks.send_due_outbox")


def test_429_then_500_are_retried_with_backoff_then_sent_once(worker, clock, db, enrolled):
    worker.api.fail(429)
    worker.api.fail(500)
    start = clock.now
    send_due(worker)
    row = one(db, Outbox)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "twilio 429 code=20429")
    # 30 s with jitter (half to all of it) before the next try
    assert start + timedelta(seconds=15) <= row.not_before <= start + timedelta(seconds=30)
    send_due(worker)
    assert len(worker.api.posts()) == 1  # not due yet: no request

    clock.set(row.not_before)
    send_due(worker)
    row = one(db, Outbox)
    assert (row.status, row.attempts) == ("pending", 2)
    assert clock.now + timedelta(seconds=30) <= row.not_before <= clock.now + timedelta(seconds=60)

    clock.set(row.not_before)
    send_due(worker)
    row = one(db, Outbox)
    assert (row.status, row.attempts, row.last_error) == ("sent", 3, None)
    assert len(worker.api.posts()) == 3
    assert worker.api.lists() == []  # a 429 or 500 is a known failure: nothing to look up
    assert worker.api.sent_bodies() == [row.body]
    assert one(db, Message, Message.direction == "out").twilio_sid == row.twilio_sid


def test_transient_failures_stop_at_the_cap_with_an_alert(worker, clock, db, enrolled):
    cap = worker.config["SEND_MAX_ATTEMPTS"]
    assert cap == 6
    worker.api.fail(500, count=10)
    for _ in range(cap + 2):
        send_due(worker)
        clock.advance(minutes=16)  # longer than the longest backoff
    row = one(db, Outbox)
    assert (row.status, row.attempts) == ("failed", cap)
    assert len(worker.api.posts()) == cap
    alert = one(db, Alert)
    assert (alert.kind, alert.level, alert.patient_id) == ("send_failed", "soon", enrolled)
    assert "after 6 attempt(s)" in alert.summary and PATIENT not in alert.summary


def test_21610_means_opted_out_no_retry_and_nothing_more_is_sent(worker, clock, db, clinic,
                                                                 enrolled):
    second = queue_text(db, clinic.id, enrolled, "Another text", clock.now)
    worker.api.fail(400, code=21610)
    send_due(worker)
    first, later = rows(db, Outbox)
    assert (first.status, first.attempts, later.id) == ("failed", 1, second)
    assert later.status == "cancelled"
    patient = one(db, Patient)
    assert patient.opted_out and patient.opted_out_at == clock.now
    clock.advance(hours=1)
    run_beat(worker.app)
    assert len(worker.api.posts()) == 1
    assert rows(db, Alert) == []  # an opt-out is the patient's choice, not a failure
    # While the database is away, the webhook gives them no holding reply either.
    assert Spool.from_config(worker.config).opted_out(clinic.numbers[0].phone_e164, PATIENT)


def test_21211_flags_the_number_and_alerts_the_clinic(worker, clock, db, clinic, enrolled):
    queue_text(db, clinic.id, enrolled, "Another text", clock.now)
    worker.api.fail(400, code=21211)
    send_due(worker)
    first, later = rows(db, Outbox)
    assert first.status == "failed" and later.status == "cancelled"  # cancelled at its claim
    assert one(db, Patient).number_invalid is True
    alert = one(db, Alert)
    assert (alert.kind, alert.level) == ("invalid_number", "soon")
    clock.advance(hours=1)
    run_beat(worker.app)
    assert len(worker.api.posts()) == 1


@pytest.mark.parametrize("before_send, posts", [(False, 1), (True, 2)],
                         ids=["created-then-timed-out", "never-arrived"])
def test_a_timed_out_send_is_looked_up_before_it_is_sent_again(worker, clock, db, enrolled,
                                                               before_send, posts):
    worker.api.timeout(before_send=before_send)
    send_due(worker)
    row = one(db, Outbox)
    assert (row.status, row.claimed_until) == ("unknown", clock.now + outbox.LEASE)
    clock.advance(minutes=1)
    send_due(worker)
    assert len(worker.api.requests()) == 1  # within the lease: hands off
    clock.advance(minutes=2)
    send_due(worker)
    row = one(db, Outbox)
    assert row.status == "sent"
    assert len(worker.api.lists()) == 1
    assert worker.api.lists()[0]["query"]["To"] == PATIENT
    assert len(worker.api.posts()) == posts
    assert len(worker.api.sent_bodies()) == 1  # the patient got it exactly once
    assert row.twilio_sid == worker.api.messages()[0]["sid"]
    assert len(rows(db, Message, Message.direction == "out")) == 1


def test_a_send_left_by_a_dead_worker_is_looked_up_first(worker, clock, db, enrolled):
    with db.transaction() as session:  # claimed, then the worker died (request unknown)
        assert outbox.claim(session, one(db, Outbox).id, clock.now) is not None
    clock.advance(minutes=3)
    send_due(worker)
    assert [r["method"] for r in worker.api.requests()] == ["GET", "POST"]
    assert one(db, Outbox).status == "sent"


def test_a_patients_texts_keep_their_order_when_one_is_retried(worker, clock, db, clinic,
                                                               enrolled):
    queue_text(db, clinic.id, enrolled, "Second text", clock.now)
    worker.api.fail(429)
    send_due(worker)
    first, second = rows(db, Outbox)
    assert (first.status, second.status) == ("pending", "pending")  # the second waits
    assert len(worker.api.posts()) == 1
    clock.advance(minutes=1)
    send_due(worker)
    assert worker.api.sent_bodies() == [first.body, "Second text"]


def report(phone, sid: str, status: str, error_code: int | None = None) -> None:
    """Twilio's status callback for `sid`; the webhook takes it."""
    response = phone.status(sid, status, error_code)
    assert response.status_code == 204, response.get_data(as_text=True)


def test_repeated_delivery_failures_raise_one_alert(worker, clock, db, clinic, enrolled, client):
    for n in range(4):
        queue_text(db, clinic.id, enrolled, f"Text {n}", clock.now)
    send_due(worker)
    sids = [m.twilio_sid for m in rows(db, Message, Message.direction == "out")]
    assert len(sids) == 5
    phone = Phone(client, PATIENT, clinic.numbers[0].phone_e164)

    report(phone, sids[0], "delivered")
    report(phone, sids[1], "undelivered", 30003)
    report(phone, sids[2], "failed", 30005)
    assert rows(db, Alert) == []
    report(phone, sids[3], "undelivered", 30007)
    alert = one(db, Alert)
    assert (alert.kind, alert.level) == ("delivery_failure", "soon")
    assert "3 texts in a row" in alert.summary
    report(phone, sids[4], "undelivered", 30003)
    assert len(rows(db, Alert)) == 1  # one open alert per patient
    report(phone, sids[4], "undelivered", 30003)  # a duplicate callback changes nothing
    assert len(rows(db, Alert)) == 1


def test_other_delivery_errors_and_a_delivery_in_between_do_not_count(worker, clock, db, clinic,
                                                                      enrolled, client):
    for n in range(4):
        queue_text(db, clinic.id, enrolled, f"Text {n}", clock.now)
    send_due(worker)
    sids = [m.twilio_sid for m in rows(db, Message, Message.direction == "out")]
    phone = Phone(client, PATIENT, clinic.numbers[0].phone_e164)
    report(phone, sids[0], "undelivered", 30003)
    report(phone, sids[1], "undelivered", 30003)
    report(phone, sids[2], "delivered")
    report(phone, sids[3], "undelivered", 30003)
    report(phone, sids[4], "failed", 30410)  # not a carrier delivery failure
    assert rows(db, Alert) == []


def test_a_text_the_worker_did_not_send_before_21_00_goes_at_08_00(worker, clock, db, clinic):
    """The worker was down from 20:55 to 21:05 (or busy with a backlog): the consent request
    queued at 20:55 does not go out at night when it comes back (CLINICAL.md §7)."""
    with db.transaction() as session:
        consent.enroll_patient(session, session.get(Clinic, clinic.id), phone=PATIENT,
                               now=clock.local(2026, 6, 1, 20, 55))
    clock.local(2026, 6, 1, 21, 5)
    run_beat(worker.app)
    assert worker.api.posts() == []
    row = one(db, Outbox)
    assert (row.status, row.attempts) == ("pending", 0)
    assert row.not_before == clock.local(2026, 6, 2, 8, 0)

    clock.local(2026, 6, 2, 3, 0)
    run_beat(worker.app)
    assert worker.api.posts() == []

    clock.local(2026, 6, 2, 8, 0)
    run_beat(worker.app)
    assert worker.api.sent_bodies(to=PATIENT) == [row.body]
    assert one(db, Outbox).status == "sent"
