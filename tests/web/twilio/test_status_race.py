"""A status callback that races the sender recording the same message gets a 204 and is
applied, not a 500 (found by tests/e2e/test_faults.py, issue 7: the fake Twilio calls back
within milliseconds of the send)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from service.store.models import Message, Outbox, Patient
from tests.support.db import rows
from tests.support.phones import WEBHOOK_CONFIG, Phone, new_sid

PATIENT = "+16175550162"


@pytest.fixture
def app_config(app_config, database_url):
    return {**app_config, **WEBHOOK_CONFIG}


def test_a_callback_racing_the_senders_record_is_applied(client, db, make_clinic,
                                                         database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("the race needs row-level concurrency (PostgreSQL)")
    clinic = make_clinic()
    number = clinic.numbers[0].phone_e164
    sid, now = new_sid(), datetime.now(UTC)
    with db.transaction() as session:
        patient = Patient(clinic_id=clinic.id, phone_e164=PATIENT, consent="given",
                          created_at=now)
        session.add(patient)
        session.flush()
        # The send went out and its outbox row has the SID ...
        session.add(Outbox(clinic_id=clinic.id, patient_id=patient.id, kind="checkin",
                           to_number=PATIENT, from_number=number, body="How is your back?",
                           status="sent", twilio_sid=sid, not_before=now, created_at=now))
        patient_id = patient.id
    # ... and the sender's Message row is being written (not committed yet) as the callback
    # comes in: the callback's insert waits on the unique SID, then loses.
    sender = db.sessionmaker()
    sender.add(Message(clinic_id=clinic.id, patient_id=patient_id, direction="out",
                       channel="sms", from_number=number, to_number=PATIENT,
                       body="How is your back?", twilio_sid=sid, status="queued",
                       created_at=now))
    sender.flush()
    committer = threading.Timer(0.5, sender.commit)
    committer.start()
    try:
        response = Phone(client, PATIENT, number).status(sid, "delivered")
    finally:
        committer.join()
        sender.close()
    assert response.status_code == 204
    (message,) = rows(db, Message, Message.twilio_sid == sid)
    assert message.status == "delivered"
