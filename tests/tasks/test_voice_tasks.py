"""The 48-hour no-reply step of the follow-up schedule, through the real worker: a reminder
call is written and placed by the beat's voice tasks, and a busy line is tried again within the
allowed hours (issue 8; the calls' TwiML and Twilio transport are tested in
tests/web/twilio/test_voice.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from service.store.models import Call, CheckIn, Patient
from tests.support.answers import intake_answers
from tests.support.db import rows
from tests.support.phones import Phone
from tests.support.twilio import ACCOUNT_SID
from tests.tasks.helpers import SELF_CARE, run_beat, run_task

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PATIENT = "+16175550177"


@pytest.fixture
def clinic(make_clinic):
    return make_clinic(name="Back Clinic", numbers=["+16175550102"])


@pytest.fixture
def phone(client, clinic):
    return Phone(client, PATIENT, clinic.numbers[0].phone_e164)


def test_no_reply_for_48_hours_brings_a_reminder_call_and_busy_is_tried_again(
        worker, clock, phone, db):
    clock.local(2026, 5, 4, 10, 0)
    phone.conversation(["PAIN", *intake_answers(SELF_CARE)])
    with db.transaction() as session:
        session.execute(sa.update(Patient).values(calls_allowed=True))
    clock.local(2026, 6, 1, 10, 0)
    run_beat(worker.app)  # the first follow-up goes out by text
    (followup,) = rows(db, CheckIn, CheckIn.kind == "followup")
    assert followup.channel == "sms"

    clock.advance(hours=47)
    assert run_task(worker.app, "tasks.request_reminder_calls") == 0  # not yet 48 hours
    clock.advance(hours=2)
    assert run_task(worker.app, "tasks.request_reminder_calls") == 1
    assert run_task(worker.app, "tasks.place_due_calls") == 1
    (call,) = rows(db, Call)
    assert (call.to_number, call.attempt, call.purpose) == (PATIENT, 1, "reminder")
    assert call.call_sid and call.call_sid.startswith("CA")

    response = phone.post({"CallSid": call.call_sid, "CallStatus": "busy",
                           "AccountSid": ACCOUNT_SID, "To": PATIENT,
                           "From": phone.clinic_number, "ApiVersion": "2010-04-01"},
                          path="/twilio/status")
    assert response.status_code == 204, response.get_data(as_text=True)
    calls = rows(db, Call, order_by=Call.id)
    assert [(c.attempt, c.status) for c in calls][0] == (1, "busy")
    retry = calls[1]
    assert retry.attempt == 2 and retry.call_sid is None and retry.not_before > clock.now

    assert run_task(worker.app, "tasks.place_due_calls") == 0  # waits for its time
    clock.set(retry.not_before + timedelta(minutes=1))
    assert run_task(worker.app, "tasks.place_due_calls") == 1
    retry = rows(db, Call, Call.id == retry.id)[0]
    assert retry.call_sid and retry.call_sid != call.call_sid
