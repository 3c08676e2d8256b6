"""Quiet hours when a text is sent (CLINICAL.md §7: scheduled messages go out only 08:00-21:00
in the patient's local time): a scheduled text queued before 21:00 that is still waiting at
21:00 (a backlog at the number's rate, a retry, a stopped worker, a hold for its send slot)
waits for 08:00; replies go at any hour, and are not held back by one that waits.

The sender is the real `twilio` client over the fake's in-process transport; the limiter is
the real one on its file backend."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from service.conversations import consent
from service.messaging import delivery, outbox
from service.messaging.ratelimit import RateLimiter
from service.messaging.senders import TwilioSender
from service.store.models import Clinic, Outbox, Patient
from tests.support.db import rows
from tests.support.sending import send_one
from tests.support.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

NY = ZoneInfo("America/New_York")
EVENING = datetime(2026, 6, 1, 20, 55, tzinfo=NY)  # queued before quiet hours
NIGHT = datetime(2026, 6, 1, 21, 5, tzinfo=NY)
MORNING = datetime(2026, 6, 2, 8, 0, tzinfo=NY)
NUMBER = "+16175550180"


@pytest.fixture
def fake() -> FakeTwilio:
    return FakeTwilio()


@pytest.fixture
def sender(fake) -> TwilioSender:
    return TwilioSender(ACCOUNT_SID, AUTH_TOKEN, http_client=fake.http_client())


def enroll(db, make_clinic, *phones: str, now=EVENING) -> list[int]:
    """Patients of one clinic in New York, each with its consent request queued at `now`."""
    clinic = make_clinic(numbers=[NUMBER], timezone="America/New_York")
    with db.transaction() as session:
        for phone in phones:
            consent.enroll_patient(session, session.get(Clinic, clinic.id), phone=phone, now=now)
    return [row.id for row in rows(db, Outbox)]


def row(db, outbox_id: int) -> Outbox:
    return rows(db, Outbox, Outbox.id == outbox_id)[0]


def posted_to(fake) -> list[str]:
    return [r["form"]["To"] for r in fake.requests() if r["method"] == "POST"]


def queued_by_the_beat(db, now: datetime) -> list[list[int]]:
    with db.transaction() as session:
        return outbox.due_batches(session, now)


def local(when: datetime) -> datetime:
    return when.astimezone(NY)


def test_a_scheduled_text_still_waiting_at_21_00_goes_at_08_00(db, make_clinic, fake, sender):
    (consent_text,) = enroll(db, make_clinic, "+16175550181")
    assert row(db, consent_text).quiet_tz == "America/New_York"

    # The worker did not get to it before 21:00 (down, or a backlog ahead of it).
    assert send_one(db, consent_text, sender, NIGHT).status == "skipped"
    waiting = row(db, consent_text)
    assert (waiting.status, waiting.attempts, waiting.claimed_until) == ("pending", 0, None)
    assert local(waiting.not_before) == MORNING
    assert posted_to(fake) == []
    # Not due again during the night: the beat does not queue it.
    assert queued_by_the_beat(db, NIGHT + timedelta(hours=5)) == []

    assert send_one(db, consent_text, sender, MORNING).status == "sent"
    assert posted_to(fake) == ["+16175550181"]
    assert (row(db, consent_text).status, row(db, consent_text).attempts) == ("sent", 1)


def test_a_retry_that_falls_in_quiet_hours_waits_for_08_00(db, make_clinic, fake, sender):
    (consent_text,) = enroll(db, make_clinic, "+16175550182", now=EVENING)
    fake.fail(500)
    assert send_one(db, consent_text, sender, EVENING).status == "retry"
    retry_at = row(db, consent_text).not_before
    assert EVENING < retry_at < EVENING + outbox.RETRY_CAP

    late = NIGHT + timedelta(minutes=30)  # the retry's time, long since past
    assert send_one(db, consent_text, sender, late).status == "skipped"
    assert local(row(db, consent_text).not_before) == MORNING
    assert send_one(db, consent_text, sender, MORNING).status == "sent"
    assert posted_to(fake) == ["+16175550182", "+16175550182"]  # the 500, then the send
    assert row(db, consent_text).attempts == 2


def test_a_text_held_for_its_send_slot_past_21_00_waits_for_08_00(db, make_clinic, fake,
                                                                  sender, tmp_path):
    pacer = RateLimiter(0.25, lock_dir=str(tmp_path))  # 1 text per 4 s: the second is held
    first, second = enroll(db, make_clinic, "+16175550183", "+16175550184")
    just_before = datetime(2026, 6, 1, 20, 59, 59, tzinfo=NY)
    assert send_one(db, first, sender, just_before, pacer=pacer).status == "sent"
    held = send_one(db, second, sender, just_before, pacer=pacer)
    assert held.status == "held"

    time.sleep(held.retry_in)
    back = datetime(2026, 6, 1, 21, 0, 3, tzinfo=NY)  # its slot came after 21:00
    assert send_one(db, second, sender, back, pacer=pacer, held=held.detail).status == "skipped"
    waiting = row(db, second)
    assert (waiting.status, waiting.attempts, waiting.claimed_until) == ("pending", 0, None)
    assert local(waiting.not_before) == MORNING
    assert posted_to(fake) == ["+16175550183"]


def test_a_send_whose_result_is_unknown_is_looked_up_at_08_00_not_sent_at_night(
        db, make_clinic, fake, sender):
    (consent_text,) = enroll(db, make_clinic, "+16175550185")
    fake.timeout(before_send=True)  # Twilio never got it; the worker cannot know that
    assert send_one(db, consent_text, sender, EVENING).status == "unknown"

    # Its lease runs out at night: it keeps its state, its lease runs to the morning.
    assert send_one(db, consent_text, sender, NIGHT).status == "skipped"
    waiting = row(db, consent_text)
    assert waiting.status == "unknown" and local(waiting.claimed_until) == MORNING
    assert queued_by_the_beat(db, NIGHT + timedelta(hours=1)) == []

    assert send_one(db, consent_text, sender, MORNING).status == "sent"
    methods = [r["method"] for r in fake.requests()]
    assert methods == ["POST", "GET", "POST"]  # looked up first in the morning, then sent


def test_a_reply_is_not_held_back_by_a_scheduled_text_waiting_for_08_00(db, make_clinic, fake,
                                                                        sender):
    (consent_text,) = enroll(db, make_clinic, "+16175550186")
    fake.fail(500)
    assert send_one(db, consent_text, sender, EVENING).status == "retry"
    assert send_one(db, consent_text, sender, NIGHT).status == "skipped"  # waits for 08:00

    with db.transaction() as session:  # the answer to the patient's own text, at night
        patient = session.query(Patient).filter_by(phone_e164="+16175550186").one()
        reply = outbox.enqueue(session, clinic=session.get(Clinic, patient.clinic_id),
                               patient=patient, body="Thanks, we got your message.",
                               kind="reply", now=NIGHT, quiet=False).id
    assert row(db, reply).quiet_tz is None
    assert send_one(db, reply, sender, NIGHT).status == "sent"
    assert fake.sent_bodies()[-1] == "Thanks, we got your message."
    assert row(db, consent_text).status == "pending"


def test_a_texts_retry_still_keeps_a_later_reply_behind_it_by_day(db, make_clinic, fake,
                                                                  sender):
    """Only a wait for the morning lets a reply go first: a retry's few seconds do not."""
    day = datetime(2026, 6, 1, 10, 0, tzinfo=NY)
    (consent_text,) = enroll(db, make_clinic, "+16175550187", now=day)
    fake.fail(500)
    assert send_one(db, consent_text, sender, day).status == "retry"
    with db.transaction() as session:
        patient = session.query(Patient).filter_by(phone_e164="+16175550187").one()
        reply = outbox.enqueue(session, clinic=session.get(Clinic, patient.clinic_id),
                               patient=patient, body="A reply", kind="reply", now=day,
                               quiet=False).id
    assert send_one(db, reply, sender, day).status == "skipped"  # in queue order
    later = row(db, consent_text).not_before
    assert send_one(db, consent_text, sender, later).status == "sent"
    assert send_one(db, reply, sender, later).status == "sent"


def park_for_the_night(db, make_clinic, fake, sender, phone: str) -> int:
    """A scheduled text whose send timed out at 20:55, found again at 21:05: it keeps its
    `unknown` state until 08:00 (to be looked up then)."""
    (consent_text,) = enroll(db, make_clinic, phone)
    fake.timeout(before_send=True)
    assert send_one(db, consent_text, sender, EVENING).status == "unknown"
    assert send_one(db, consent_text, sender, NIGHT).status == "skipped"
    return consent_text


def test_an_opt_out_confirmation_at_night_passes_a_text_parked_until_08_00(db, make_clinic,
                                                                           fake, sender):
    parked = park_for_the_night(db, make_clinic, fake, sender, "+16175550188")
    with db.transaction() as session:  # the patient's STOP, replayed from the spool at night
        patient = session.query(Patient).filter_by(phone_e164="+16175550188").one()
        clinic = session.get(Clinic, patient.clinic_id)
        (confirm,) = consent.opt_out(session, clinic, patient, "STOP", NIGHT)
        reply = outbox.enqueue(session, clinic=clinic, patient=patient, body=confirm,
                               kind="optout_confirm", now=NIGHT, quiet=False).id
    assert send_one(db, reply, sender, NIGHT + timedelta(minutes=10)).status == "sent"
    assert fake.sent_bodies(to="+16175550188") == [confirm]
    assert row(db, parked).status == "unknown"


def test_an_early_status_callback_of_that_reply_is_not_taken_for_the_parked_text(
        db, make_clinic, fake, sender):
    parked = park_for_the_night(db, make_clinic, fake, sender, "+16175550189")
    with db.transaction() as session:
        patient = session.query(Patient).filter_by(phone_e164="+16175550189").one()
        reply = outbox.enqueue(session, clinic=session.get(Clinic, patient.clinic_id),
                               patient=patient, body="A reply", kind="reply", now=NIGHT,
                               quiet=False)
        reply.status, reply.claimed_until = "sending", NIGHT + outbox.LEASE  # on the wire
        reply_id = reply.id
    # Twilio calls back before the sender has recorded the reply's SID.
    with db.transaction() as session:
        assert delivery.record_status(session, sid="SM" + "e" * 32, status="sent",
                                      error_code=None, now=NIGHT, to="+16175550189")
    assert row(db, reply_id).twilio_sid == "SM" + "e" * 32
    assert row(db, parked).twilio_sid is None
