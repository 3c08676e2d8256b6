"""On-call texts: emergency and urgent alerts page the clinic's on-call number with a link (no
health details), again every 30 minutes while the alert is open, ONCALL_MAX_REPEATS times."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from service.store.models import Alert, Outbox
from tests.support.answers import intake_answers
from tests.support.db import one, rows
from tests.support.phones import Phone
from tests.tasks.helpers import SELF_CARE, run_beat, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PATIENT = "+16175550177"
ONCALL = "+16175550198"
LINK = "https://triage.example.org/dashboard/alerts/{}"


@pytest.fixture
def clinic(make_clinic):
    return make_clinic(name="Spine Clinic", numbers=["+16175550103"], oncall_number=ONCALL)


def emergency_intake(client, clinic, clock) -> list[str]:
    clock.local(2026, 6, 1, 2, 0)  # at night: on-call texts ignore quiet hours
    phone = Phone(client, PATIENT, clinic.numbers[0].phone_e164)
    phone.text("PAIN")
    return phone.text("yes")  # chest symptoms: emergency at once


def test_emergency_pages_oncall_then_repeats_every_30_minutes_up_to_the_limit(
        worker, clock, client, clinic, db):
    replies = emergency_intake(client, clinic, clock)
    assert replies[-1].startswith("Your answers may mean a serious problem.")
    alert = one(db, Alert)
    assert alert.level == "emergency"

    run_beat(worker.app)
    pages = worker.api.sent_bodies(to=ONCALL)
    assert pages == [f"Spine Clinic: a new alert needs a quick look. Open: {LINK.format(alert.id)}"]
    # No health details and no patient number in the page.
    for word in ("chest", "emergency", "911", PATIENT, PATIENT[-4:]):
        assert word not in pages[0]
    assert worker.api.sent_bodies(to=PATIENT) == []  # the patient had the advice as a reply

    clock.advance(minutes=29)
    run_beat(worker.app)
    assert len(worker.api.sent_bodies(to=ONCALL)) == 1
    for expected in range(2, 6):  # repeats 1..4 (ONCALL_MAX_REPEATS=4)
        clock.advance(minutes=30)
        run_beat(worker.app)
        assert len(worker.api.sent_bodies(to=ONCALL)) == expected
    clock.advance(hours=3)
    run_beat(worker.app)
    assert len(worker.api.sent_bodies(to=ONCALL)) == 5
    alert = one(db, Alert)
    assert alert.oncall_sent_count == 5
    assert alert.oncall_last_at == clock.now - timedelta(hours=3)
    assert {r.alert_id for r in rows(db, Outbox, Outbox.kind == "oncall")} == {alert.id}


def test_an_acknowledged_alert_is_not_repeated(worker, clock, client, clinic, db):
    emergency_intake(client, clinic, clock)
    run_beat(worker.app)
    with db.transaction() as session:  # staff acknowledge it on the dashboard
        session.execute(sa.update(Alert).values(status="acknowledged",
                                                acknowledged_at=clock.now))
    clock.advance(minutes=31)
    run_beat(worker.app)
    assert len(worker.api.sent_bodies(to=ONCALL)) == 1


def test_a_soon_alert_or_a_clinic_without_oncall_pages_nobody(worker, clock, client, clinic,
                                                              make_clinic, db):
    clock.local(2026, 6, 1, 10, 0)
    phone = Phone(client, PATIENT, clinic.numbers[0].phone_e164)
    phone.conversation(["PAIN", *intake_answers({**SELF_CARE, "night_pain": "yes"})])
    assert one(db, Alert).level == "soon"
    other = make_clinic(name="No Oncall", numbers=["+16175550104"])
    Phone(client, "+16175550178", other.numbers[0].phone_e164).conversation(["PAIN", "yes"])
    assert [a.level for a in rows(db, Alert)] == ["soon", "emergency"]
    run_beat(worker.app)
    assert worker.api.posts() == []


def test_the_webhook_pages_oncall_at_once_without_waiting_for_the_beat(worker, clock, clinic,
                                                                       make_app, db):
    from tests.tasks.conftest import REDIS_URL

    app = make_app(REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=worker.prefix)
    emergency_intake(app.test_client(), clinic, clock)
    alert = one(db, Alert)
    wait_for(lambda: worker.api.sent_bodies(to=ONCALL), what="the on-call text")
    assert worker.api.sent_bodies(to=ONCALL) == [
        f"Spine Clinic: a new alert needs a quick look. Open: {LINK.format(alert.id)}"]
