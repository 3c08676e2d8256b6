"""Sending at each lane's rate without sleeping on it: a text whose slot is further away is held
(its row stays claimed) and sent when it comes back; the gate keeps a late comeback from
crowding the lane; texts of a clinic with several numbers go through the Messaging Service at
the service's rate; due texts are queued once, not at every beat.

The sender is the real `twilio` client over the fake's in-process transport; the limiter is the
real one on its file backend (the Redis backend runs in tests/tasks/test_processes.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from service.conversations import consent
from service.messaging import outbox
from service.messaging.ratelimit import RateLimiter
from service.messaging.senders import TwilioSender
from service.store.models import Clinic, Message, Outbox, Patient
from tests.support.db import rows
from tests.support.sending import send_one
from tests.support.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

NOW = datetime(2025, 3, 3, 15, 0, tzinfo=UTC)
NUMBER = "+16175550170"
SERVICE = "MG" + "7" * 32


@pytest.fixture
def fake() -> FakeTwilio:
    return FakeTwilio()


@pytest.fixture
def sender(fake) -> TwilioSender:
    return TwilioSender(ACCOUNT_SID, AUTH_TOKEN, messaging_service_sid=SERVICE,
                        http_client=fake.http_client())


def enroll(db, make_clinic, *phones: str, numbers=(NUMBER,)) -> list[int]:
    """Patients of one clinic, each with a consent text due now; the texts' row ids."""
    clinic = make_clinic(numbers=list(numbers))
    with db.transaction() as session:
        for phone in phones:
            consent.enroll_patient(session, session.get(Clinic, clinic.id), phone=phone, now=NOW)
    return [row.id for row in rows(db, Outbox)]


def creates(fake) -> list[dict]:
    return [r for r in fake.requests() if r["method"] == "POST"]


def test_a_text_whose_slot_is_further_away_is_held_then_sent_at_its_slot(db, make_clinic,
                                                                         fake, sender, tmp_path):
    # 1 text per 4 s: the second text is held however slow the box is between the two sends.
    pacer = RateLimiter(0.25, lock_dir=str(tmp_path))
    first, second = enroll(db, make_clinic, "+16175550171", "+16175550172")

    before_first = time.time()  # the first text's slot is taken at or after this
    assert send_one(db, first, sender, NOW, pacer=pacer).status == "sent"
    held = send_one(db, second, sender, NOW, pacer=pacer)

    # The number sent a moment ago: the second text is not waited for but held, still claimed.
    assert held.status == "held" and 0.5 < held.retry_in <= 4.0
    row = rows(db, Outbox, Outbox.id == second)[0]
    assert row.status == "sending" and row.attempts == 1
    assert len(creates(fake)) == 1

    time.sleep(held.retry_in)
    assert send_one(db, second, sender, NOW, pacer=pacer, held=held.detail).status == "sent"
    posts = creates(fake)
    assert [p["form"]["To"] for p in posts] == ["+16175550171", "+16175550172"]
    # The gate spaced the two slots by the full 4 s. Measured from when the first slot could
    # be taken, not from the first post's arrival: on a busy box that hop alone can take a
    # second, which shortens the gap between arrivals without the lane ever going over rate.
    assert posts[1]["received_at"] >= before_first + 4.0
    row = rows(db, Outbox, Outbox.id == second)[0]
    assert (row.status, row.attempts) == ("sent", 1)  # one attempt, held in between


def test_a_timed_out_text_held_for_its_slot_is_still_looked_up_before_it_goes_again(
        db, make_clinic, fake, sender, tmp_path):
    first, second = enroll(db, make_clinic, "+16175550177", "+16175550178")
    fake.timeout(before_send=False)  # Twilio created it, the answer never came
    assert send_one(db, second, sender, NOW).status == "unknown"

    later = NOW + outbox.LEASE + timedelta(seconds=1)
    pacer = RateLimiter(0.25, lock_dir=str(tmp_path))  # 1 text per 4 s: the second is held
    assert send_one(db, first, sender, later, pacer=pacer).status == "sent"
    held = send_one(db, second, sender, later, pacer=pacer)
    assert held.status == "held"
    time.sleep(held.retry_in)
    assert send_one(db, second, sender, later, pacer=pacer, held=held.detail).status == "sent"
    # Looked up in Twilio's list after the hold, found: the patient got it once.
    assert [r["method"] for r in fake.requests()] == ["POST", "POST", "GET"]
    assert fake.sent_bodies(to="+16175550178") == [rows(db, Outbox, Outbox.id == second)[0].body]


def test_a_held_text_taken_over_after_its_lease_is_not_sent_twice(db, make_clinic, fake, sender,
                                                                  tmp_path):
    pacer = RateLimiter(0.1, lock_dir=str(tmp_path))  # a slot 10 s on: held, however slow
    first, second = enroll(db, make_clinic, "+16175550173", "+16175550174")
    send_one(db, first, sender, NOW, pacer=pacer)
    held = send_one(db, second, sender, NOW, pacer=pacer)
    assert held.status == "held"

    # Its worker died: once the hold's lease has run out, the beat's next sender takes it.
    later = NOW + timedelta(seconds=held.retry_in) + outbox.LEASE + timedelta(seconds=1)
    assert send_one(db, second, sender, later).status == "sent"
    # The held task that comes back after all finds the row is no longer its own.
    assert send_one(db, second, sender, later, pacer=pacer, held=held.detail).status == "skipped"
    assert [p["form"]["To"] for p in creates(fake)] == ["+16175550173", "+16175550174"]


def test_a_patient_who_opts_out_while_their_text_is_held_does_not_get_it(db, make_clinic, fake,
                                                                         sender, tmp_path):
    pacer = RateLimiter(0.25, lock_dir=str(tmp_path))  # held however slow the box is
    first, second = enroll(db, make_clinic, "+16175550175", "+16175550176")
    send_one(db, first, sender, NOW, pacer=pacer)
    held = send_one(db, second, sender, NOW, pacer=pacer)
    assert held.status == "held"
    with db.transaction() as session:
        patient = session.query(Patient).filter_by(phone_e164="+16175550176").one()
        consent.opt_out(session, session.get(Clinic, patient.clinic_id), patient, "STOP", NOW)

    time.sleep(held.retry_in)
    assert send_one(db, second, sender, NOW, pacer=pacer, held=held.detail).status == "skipped"
    assert rows(db, Outbox, Outbox.id == second)[0].status == "cancelled"
    assert [p["form"]["To"] for p in creates(fake)] == ["+16175550175"]


def test_the_gate_keeps_a_late_comeback_an_interval_after_the_last_send(tmp_path):
    limiter = RateLimiter(0.5, lock_dir=str(tmp_path))  # 2 s: longer than any pause here
    assert limiter.reserve(NUMBER) == 0 and limiter.gate(NUMBER)
    passed = time.monotonic()
    # A text back late from a hold finds the number's last send too recent: not through yet.
    assert limiter.gate(NUMBER, timeout=0.05) is False
    assert limiter.gate(NUMBER)
    assert time.monotonic() - passed >= 1.9  # the whole 2 s interval since the last send


def test_a_clinic_with_several_numbers_sends_through_the_messaging_service_at_its_rate(
        db, make_clinic, fake, sender, tmp_path):
    pacer = RateLimiter(1.0, lock_dir=str(tmp_path), lane_rates={SERVICE: 1000.0})
    (single,) = enroll(db, make_clinic, "+16175550177")
    several = [i for i in enroll(db, make_clinic, "+16175550178", "+16175550179",
                                 numbers=("+16175550180", "+16175550181")) if i != single]

    outcomes = [send_one(db, i, sender, NOW, pacer=pacer).status for i in [single, *several]]

    # At 1/s per number the second service text would be held for a second; the service's
    # 1000/s sends both at once, and the single-number clinic keeps its own number.
    assert outcomes == ["sent", "sent", "sent"]
    forms = [p["form"] for p in creates(fake)]
    assert forms[0]["From"] == NUMBER and "MessagingServiceSid" not in forms[0]
    assert [f.get("MessagingServiceSid") for f in forms[1:]] == [SERVICE, SERVICE]
    assert all("From" not in f for f in forms[1:])
    by_to = {m.to_number: m.from_number for m in rows(db, Message, Message.direction == "out")}
    assert by_to == {"+16175550177": NUMBER, "+16175550178": "", "+16175550179": ""}


def test_due_texts_are_queued_once_until_their_task_has_come(db, make_clinic):
    ids = enroll(db, make_clinic, "+16175550182", "+16175550183")
    with db.transaction() as session:
        assert sorted(sum(outbox.due_batches(session, NOW), [])) == ids
    with db.transaction() as session:  # the next beat: their tasks are on their way
        assert outbox.due_batches(session, NOW + timedelta(minutes=1)) == []
    with db.transaction() as session:  # no task came for them (lost): queued again
        assert sorted(sum(outbox.due_batches(session, NOW + outbox.QUEUED_LEASE), [])) == ids


def test_a_text_waiting_behind_an_earlier_one_is_queued_again_at_the_next_beat(db, make_clinic,
                                                                                fake, sender):
    (consent_text,) = enroll(db, make_clinic, "+16175550184")
    fake.fail(503)
    assert send_one(db, consent_text, sender, NOW).status == "retry"
    with db.transaction() as session:
        patient = session.query(Patient).one()
        later = outbox.enqueue(session, clinic=session.get(Clinic, patient.clinic_id),
                               patient=patient, kind="checkin", body="Second text", now=NOW)
        later_id = later.id
    with db.transaction() as session:
        assert outbox.due_batches(session, NOW) == [[later_id]]
    # Its task comes while the first text still waits for its retry: skipped, and not queued.
    assert send_one(db, later_id, sender, NOW).status == "skipped"
    with db.transaction() as session:
        assert outbox.due_batches(session, NOW) == [[later_id]]


def test_no_more_of_one_numbers_texts_are_queued_than_it_can_send_soon(db, make_clinic):
    busy = enroll(db, make_clinic, *[f"+161755502{n:02d}" for n in range(5)])
    other = [i for i in enroll(db, make_clinic, "+16175550290", numbers=("+16175550291",))
             if i not in busy]
    service = [i for i in enroll(db, make_clinic, "+16175550292", "+16175550293",
                                 "+16175550294", numbers=("+16175550295", "+16175550296"))
               if i not in busy + other]
    caps = outbox.LaneCaps(number=2, service=3)

    with db.transaction() as session:
        first = sorted(sum(outbox.due_batches(session, NOW, caps=caps), []))
    # The busy number's two oldest, the other number's one, the service clinic's three.
    assert first == sorted(busy[:2] + other + service)
    with db.transaction() as session:  # the next call: the busy number's next two
        assert sorted(sum(outbox.due_batches(session, NOW, caps=caps), [])) == busy[2:4]
