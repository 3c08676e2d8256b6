"""The Twilio sender through the real `twilio` client over a fake HTTP client (requests, results,
error classification, the look-up before a resend), and `outbox.send_one` with it and with the
dry-run sender: the row states of sent, retry, failed, unknown and skipped sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.conversations import consent
from service.messaging import outbox
from service.messaging.senders import (
    DryRunSender,
    SendError,
    SendResult,
    TwilioSender,
    sender_from_config,
)
from service.store.models import Clinic, Message, Outbox, Patient
from tests.support.db import rows
from tests.support.sending import send_one
from tests.support.twilio import ACCOUNT_SID, AUTH_TOKEN, MESSAGES_URL, FakeTwilio

CLINIC_NUMBER = "+16175550100"
PATIENT = "+16175550142"
CALLBACK = "https://triage.example.org/twilio/status"
NOW = datetime(2025, 3, 3, 15, 0, tzinfo=UTC)


@pytest.fixture
def fake() -> FakeTwilio:
    return FakeTwilio()


@pytest.fixture
def sender(fake) -> TwilioSender:
    return TwilioSender(ACCOUNT_SID, AUTH_TOKEN, from_number=CLINIC_NUMBER,
                        http_client=fake.http_client())


# ---- the sender on its own ------------------------------------------------------------------


def test_send_posts_to_the_messages_list_with_auth_and_status_callback(fake, sender):
    result = sender.send(to=PATIENT, from_=None, body="Hello from the clinic",
                         status_callback=CALLBACK)

    (request,) = fake.requests()
    assert (request["method"], request["url"]) == ("POST", MESSAGES_URL)
    assert request["auth"] == [ACCOUNT_SID, AUTH_TOKEN]
    assert request["form"] == {"To": PATIENT, "From": CLINIC_NUMBER, "Body": "Hello from the clinic",
                            "StatusCallback": CALLBACK}
    (held,) = fake.messages()
    assert result == SendResult(held["sid"], "queued")
    assert result.sid.startswith("SM")


def test_the_rows_from_number_wins_and_no_callback_means_no_field(fake, sender):
    sender.send(to=PATIENT, from_="+16175550101", body="Hi", status_callback=None)
    assert fake.requests()[0]["form"] == {"To": PATIENT, "From": "+16175550101", "Body": "Hi"}


def test_a_messaging_service_sends_without_a_from_number(fake):
    sender = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, messaging_service_sid="MG" + "2" * 32,
                          http_client=fake.http_client())
    result = sender.send(to=PATIENT, from_=None, body="Hi", status_callback=CALLBACK)
    assert fake.requests()[0]["form"] == {"To": PATIENT, "MessagingServiceSid": "MG" + "2" * 32,
                                     "Body": "Hi", "StatusCallback": CALLBACK}
    assert result.status == "accepted"


# (how the fake fails the next send, code, http status, transient, unknown)
ERRORS = [
    pytest.param(lambda fake: fake.fail(429), 20429, 429, True, False, id="429"),
    pytest.param(lambda fake: fake.fail(500), 20500, 500, True, False, id="500"),
    pytest.param(lambda fake: fake.fail(503, gateway=True), 503, 503, True, False, id="503"),
    pytest.param(lambda fake: fake.fail(400, code=21610), 21610, 400, False, False,
                 id="21610-opted-out"),
    pytest.param(lambda fake: fake.fail(400, code=21211), 21211, 400, False, False,
                 id="21211-invalid-number"),
    pytest.param(lambda fake: fake.fail(401, code=20003), 20003, 401, False, False,
                 id="401-bad-auth"),
    pytest.param(lambda fake: fake.timeout(before_send=False), None, None, True, True,
                 id="read-timeout"),
    pytest.param(lambda fake: fake.timeout(before_send=True), None, None, True, True,
                 id="connect-timeout"),
]


@pytest.mark.parametrize("script, code, http_status, transient, unknown", ERRORS)
def test_errors_are_classified(fake, sender, script, code, http_status, transient, unknown):
    script(fake)
    with pytest.raises(SendError) as caught:
        sender.send(to=PATIENT, from_=None, body="Hi", status_callback=CALLBACK)
    error = caught.value
    assert (error.code, error.http_status, error.transient, error.unknown) == (
        code, http_status, transient, unknown)
    assert PATIENT not in str(error)  # error texts reach logs and rows


def test_find_sent_looks_in_twilios_list_for_that_number_since_then(fake, sender):
    since = NOW - timedelta(minutes=1)
    fake.add_message(to=PATIENT, from_=CLINIC_NUMBER, body="Old text", sent=NOW - timedelta(days=2))
    fake.add_message(to="+16175550143", from_=CLINIC_NUMBER, body="Your check-in", sent=NOW)
    wanted = fake.add_message(to=PATIENT, from_=CLINIC_NUMBER, body="Your check-in", sent=NOW)
    fake.add_message(to=PATIENT, from_="+16175550101", body="Your check-in", sent=NOW)

    found = sender.find_sent(to=PATIENT, from_=CLINIC_NUMBER, body="Your check-in", since=since)

    assert found == wanted["sid"]
    (request,) = fake.requests()
    assert (request["method"], request["url"]) == ("GET", MESSAGES_URL)
    assert request["query"]["To"] == PATIENT
    # Not filtered by DateSent (a message still queued has none): by creation time, here.
    assert "DateSent>" not in request["query"]
    assert sender.find_sent(to=PATIENT, from_=CLINIC_NUMBER, body="Old text", since=since) is None
    assert sender.find_sent(to=PATIENT, from_=CLINIC_NUMBER, body="Other", since=since) is None


def test_find_sent_that_cannot_ask_twilio_is_an_unknown_error(fake, sender):
    fake.fail(500, applies="list")
    with pytest.raises(SendError) as caught:
        sender.find_sent(to=PATIENT, from_=CLINIC_NUMBER, body="Hi", since=NOW)
    assert caught.value.unknown and caught.value.transient


def test_sender_from_config_needs_both_credentials():
    assert isinstance(sender_from_config({}), DryRunSender)
    assert isinstance(sender_from_config({"TWILIO_ACCOUNT_SID": ACCOUNT_SID}), DryRunSender)
    chosen = sender_from_config({"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "t",
                                 "TWILIO_FROM_NUMBER": CLINIC_NUMBER})
    assert isinstance(chosen, TwilioSender) and chosen.from_number == CLINIC_NUMBER


def test_dry_run_sender_sends_nothing_and_says_delivered():
    result = DryRunSender().send(to=PATIENT, from_=CLINIC_NUMBER, body="Hi", status_callback=None)
    assert result.sid.startswith("DR") and result.status == "delivered"
    assert DryRunSender().find_sent(to=PATIENT, from_=None, body="Hi", since=NOW) is None


# ---- outbox.send_one: the row states ------------------------------------------------------


@pytest.fixture
def queued(db, make_clinic) -> Outbox:
    """The consent text of a newly enrolled patient, due now."""
    clinic = make_clinic(name="Back Clinic", numbers=[CLINIC_NUMBER])
    with db.transaction() as session:
        consent.enroll_patient(session, session.get(Clinic, clinic.id), phone=PATIENT, now=NOW)
    (row,) = rows(db, Outbox)
    assert (row.status, row.not_before, row.from_number) == ("pending", NOW, CLINIC_NUMBER)
    return row


def the_row(db, row_id: int) -> Outbox:
    return rows(db, Outbox, Outbox.id == row_id)[0]


def sent_messages(db) -> list[Message]:
    return rows(db, Message, Message.direction == "out")


def the_patient(db) -> Patient:
    return rows(db, Patient)[0]


def test_send_one_with_the_dry_run_sender(db, queued):
    outcome = send_one(db, queued.id, DryRunSender(), NOW)

    assert outcome.status == "sent"
    row = the_row(db, queued.id)
    assert (row.status, row.attempts, row.twilio_sid, row.sent_at) == (
        "sent", 1, outcome.detail, NOW)
    (message,) = sent_messages(db)
    assert (message.twilio_sid, message.body, message.to_number, message.status) == (
        outcome.detail, queued.body, PATIENT, "delivered")
    assert send_one(db, queued.id, DryRunSender(), NOW).status == "skipped"
    assert len(sent_messages(db)) == 1


def test_send_one_through_twilio(db, queued, fake, sender):
    outcome = send_one(db, queued.id, sender, NOW, status_callback=CALLBACK)

    assert outcome.status == "sent"
    (post,) = fake.posts()
    assert post["form"] == {"To": PATIENT, "From": CLINIC_NUMBER, "Body": queued.body,
                         "StatusCallback": CALLBACK}
    assert the_row(db, queued.id).twilio_sid == fake.messages()[0]["sid"] == outcome.detail
    (message,) = sent_messages(db)
    assert (message.twilio_sid, message.status) == (outcome.detail, "queued")


@pytest.mark.parametrize("status", [429, 500], ids=["429", "500"])
def test_a_transient_error_leaves_the_row_to_be_tried_again(db, queued, fake, sender, status):
    fake.fail(status)
    outcome = send_one(db, queued.id, sender, NOW)

    assert outcome.status == "retry"
    row = the_row(db, queued.id)
    assert (row.status, row.attempts, row.claimed_until, row.twilio_sid) == (
        "pending", 1, None, None)
    assert str(status) in row.last_error
    assert sent_messages(db) == []

    later = NOW + timedelta(hours=1)  # past any backoff
    assert send_one(db, queued.id, sender, later).status == "sent"
    assert [r["method"] for r in fake.requests()] == ["POST", "POST"]
    row = the_row(db, queued.id)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)
    assert len(sent_messages(db)) == 1 and len(fake.messages()) == 1


def test_21610_fails_the_row_and_records_the_opt_out(db, queued, fake, sender):
    fake.fail(400, code=21610)
    outcome = send_one(db, queued.id, sender, NOW)

    assert (outcome.status, outcome.code) == ("failed", 21610)
    assert the_row(db, queued.id).status == "failed"
    patient = the_patient(db)
    assert patient.opted_out and patient.opted_out_at == NOW
    assert sent_messages(db) == []


def test_21211_fails_the_row_and_marks_the_number_invalid(db, queued, fake, sender):
    fake.fail(400, code=21211)
    assert send_one(db, queued.id, sender, NOW).status == "failed"
    assert the_row(db, queued.id).status == "failed"
    assert the_patient(db).number_invalid


@pytest.mark.parametrize("reached_twilio", [True, False], ids=["it-went-out", "it-did-not"])
def test_an_unknown_result_is_looked_up_before_any_resend(db, queued, fake, sender,
                                                          reached_twilio):
    fake.timeout(before_send=not reached_twilio)
    outcome = send_one(db, queued.id, sender, NOW)

    assert outcome.status == "unknown"
    row = the_row(db, queued.id)
    assert (row.status, row.attempts) == ("unknown", 1)
    assert row.claimed_until == NOW + outbox.LEASE
    assert send_one(db, queued.id, sender, NOW + timedelta(seconds=30)).status == "skipped"

    outcome = send_one(db, queued.id, sender, NOW + outbox.LEASE + timedelta(seconds=1))

    assert outcome.status == "sent"
    assert [r["method"] for r in fake.requests()] == (
        ["POST", "GET"] if reached_twilio else ["POST", "GET", "POST"])
    assert len(fake.messages()) == 1  # the patient got it once
    row = the_row(db, queued.id)
    assert (row.status, row.twilio_sid) == ("sent", fake.messages()[0]["sid"])
    (message,) = sent_messages(db)
    assert message.twilio_sid == fake.messages()[0]["sid"]


def test_the_look_up_before_a_resend_does_not_take_the_same_words_sent_before(
        db, queued, fake, sender):
    """A question asked again in the same words (CLINICAL.md §6) whose send never reached
    Twilio: the look-up finds the first asking, which is recorded already, and is not fooled."""
    assert send_one(db, queued.id, sender, NOW).status == "sent"
    again = NOW + timedelta(seconds=30)
    with db.transaction() as session:
        patient = session.get(Patient, queued.patient_id)
        reask = outbox.enqueue(session, clinic=session.get(Clinic, patient.clinic_id),
                               patient=patient, body=queued.body, kind="reply", now=again,
                               quiet=False).id
    fake.timeout(before_send=True)
    assert send_one(db, reask, sender, again).status == "unknown"

    assert send_one(db, reask, sender, again + outbox.LEASE + timedelta(seconds=1)).status \
        == "sent"
    assert fake.sent_bodies(to=PATIENT) == [queued.body, queued.body]  # asked twice
    assert the_row(db, reask).twilio_sid not in (None, the_row(db, queued.id).twilio_sid)


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_is_looked_up_before_the_text_goes_again(db, queued, fake, sender,
                                                                 status):
    """A gateway's 502/504 does not say whether the API behind it created the message."""
    fake.fail(status, gateway=True)
    outcome = send_one(db, queued.id, sender, NOW)
    assert (outcome.status, the_row(db, queued.id).status) == ("unknown", "unknown")

    assert send_one(db, queued.id, sender, NOW + outbox.LEASE + timedelta(seconds=1)).status \
        == "sent"
    assert [r["method"] for r in fake.requests()] == ["POST", "GET", "POST"]


def test_a_timed_out_text_still_in_twilios_queue_is_found_not_sent_twice(db, queued, fake,
                                                                          sender):
    """Twilio created it but has not sent it yet (a Messaging Service or a busy number queues
    it): it has no date_sent, and the look-up finds it all the same."""
    fake.keep_queued()
    fake.timeout(before_send=False)
    assert send_one(db, queued.id, sender, NOW).status == "unknown"
    (created,) = fake.messages()
    assert created["date_sent"] is None

    assert send_one(db, queued.id, sender, NOW + outbox.LEASE + timedelta(seconds=1)).status \
        == "sent"
    assert [r["method"] for r in fake.requests()] == ["POST", "GET"]
    assert len(fake.messages()) == 1  # the patient gets it once
    assert the_row(db, queued.id).twilio_sid == created["sid"]


def test_a_text_whose_status_callback_came_during_the_time_out_is_not_sent_again(
        db, queued, fake, sender):
    from service.messaging import delivery

    fake.timeout(before_send=False)  # created at Twilio; the answer never came
    assert send_one(db, queued.id, sender, NOW).status == "unknown"
    (created,) = fake.messages()
    with db.transaction() as session:  # its callback, matched to the row by recipient
        assert delivery.record_status(session, sid=created["sid"], status="sent",
                                      error_code=None, now=NOW, to=PATIENT)

    assert send_one(db, queued.id, sender, NOW + outbox.LEASE + timedelta(seconds=1)).status \
        == "sent"
    assert [r["method"] for r in fake.requests()] == ["POST"]  # no look-up, no second send
    assert the_row(db, queued.id).twilio_sid == created["sid"]
    assert [m.twilio_sid for m in sent_messages(db)] == [created["sid"]]


def test_rows_of_an_opted_out_patient_are_cancelled_not_sent(db, queued, fake, sender):
    with db.transaction() as session:
        session.get(Patient, queued.patient_id).opted_out = True
    assert send_one(db, queued.id, sender, NOW).status == "skipped"
    assert the_row(db, queued.id).status == "cancelled"
    assert fake.requests() == []


def test_a_row_held_for_quiet_hours_is_not_sent_early(db, queued, fake, sender):
    with db.transaction() as session:
        session.get(Outbox, queued.id).not_before = NOW + timedelta(hours=9)
    assert send_one(db, queued.id, sender, NOW).status == "skipped"
    assert the_row(db, queued.id).status == "pending"
    assert fake.requests() == []
