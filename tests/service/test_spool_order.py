"""After an outage, a patient's new texts queue behind their spooled ones: the conversation gets
the answers in the order they were sent (found by tests/e2e/test_faults.py, issue 7)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.conversations import inbound
from service.store.models import Message
from tests.service.sms_helpers import SMS_CONFIG, Phone, rows, twiml_messages

PATIENT = "+16175550152"
OTHER_PATIENT = "+16175550153"


@pytest.fixture
def app_config(app_config, database_url):
    return {**app_config, **SMS_CONFIG}


@pytest.fixture
def dead_database_url(database_url, tmp_path) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'no-such-dir' / 'triage.db'}"
    return "postgresql://postgres@127.0.0.1:1/triage"  # nothing listens on port 1


def test_texts_after_the_outage_wait_behind_the_spooled_ones(make_app, make_clinic, db,
                                                             dead_database_url, tmp_path):
    clinic = make_clinic()
    number = clinic.numbers[0].phone_e164
    spool_dir = str(tmp_path / "spool")
    down = make_app(DATABASE_URL=dead_database_url, SPOOL_DIR=spool_dir)
    up = make_app(SPOOL_DIR=spool_dir)
    holding = inbound.text_for_holding()

    assert twiml_messages(Phone(down.test_client(), PATIENT, number).send("PAIN")) == [holding]
    # The database is back, but the spool was not replayed yet.
    patient = Phone(up.test_client(), PATIENT, number)
    assert twiml_messages(patient.send("no")) == [holding]
    other = Phone(up.test_client(), OTHER_PATIENT, number)
    assert twiml_messages(other.send("PAIN")) != [holding]  # nobody else waits

    spool = up.extensions["spool"]
    assert spool.holds(PATIENT) and not spool.holds(OTHER_PATIENT)
    assert [m.body for m in rows(db, Message, Message.direction == "in")] == ["PAIN"]
    assert spool.replay(lambda record: inbound.replay_spooled(db, record, datetime.now(UTC))) == 2
    assert not spool.holds(PATIENT)
    mine = rows(db, Message, Message.direction == "in", Message.from_number == PATIENT,
                order_by=Message.id)
    assert [m.body for m in mine] == ["PAIN", "no"]
    # Once the spool is empty the patient's texts are answered at once again.
    assert twiml_messages(patient.send("no")) != [holding]

