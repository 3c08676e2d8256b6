"""DELETE /patients/{id}: what the patient said and who they are is gone; the audit stays."""

from __future__ import annotations

import json

import sqlalchemy as sa

from service.store.models import (
    Alert,
    AuditLog,
    CheckIn,
    Episode,
    FollowUp,
    Message,
    Outbox,
    Patient,
    WebhookReceipt,
)
from tests.web.api.conftest import SOON_NIGHT_PAIN, error_of


def _erasable(api, clinic, enroll, patients):
    patient = enroll(name="Ana Pérez", date_of_birth="1970-05-01", timezone="America/Chicago")
    patients.complete_intake(clinic, patient["phone"], SOON_NIGHT_PAIN)
    patients.text(clinic, patient["phone"], "the pain is worse at night, I live at 5 Elm St")
    api.post(f"/patients/{patient['id']}/checkins")  # queues a question for the next morning
    api.get(f"/patients/{patient['id']}")
    return patient


def test_erasure_removes_texts_answers_and_identity(api, db, clinic, enroll, patients):
    patient = _erasable(api, clinic, enroll, patients)
    pid, phone = patient["id"], patient["phone"]
    response = api.delete(f"/patients/{pid}")
    assert response.status_code == 204 and response.get_data() == b""

    with db.transaction() as session:
        row = session.get(Patient, pid)
        assert (row.name, row.date_of_birth, row.timezone) == (None, None, None)
        assert phone not in row.phone_e164 and row.erased_at is not None
        assert row.opted_out is True
        messages = session.execute(sa.select(Message).where(Message.patient_id == pid)
                                   ).scalars().all()
        assert messages and all(m.body == "" for m in messages)
        assert all(phone not in (m.from_number, m.to_number) for m in messages)
        checkins = session.execute(sa.select(CheckIn).where(CheckIn.patient_id == pid)
                                   ).scalars().all()
        assert checkins and all(c.answers == {} and c.state == {} and c.reasons == []
                                for c in checkins)
        assert {c.status for c in checkins} <= {"completed", "cancelled", "timed_out"}
        assert [c.level for c in checkins if c.kind == "intake"] == ["soon"]  # outcome kept
        alerts = session.execute(sa.select(Alert).where(Alert.patient_id == pid)).scalars()
        for alert in alerts:
            assert (alert.summary, alert.reasons, alert.missing) == ("", [], [])
            assert alert.status == "resolved"
        outbox = session.execute(sa.select(Outbox).where(Outbox.patient_id == pid)
                                 ).scalars().all()
        assert outbox and all(o.body == "" and o.to_number == "" for o in outbox)
        assert "pending" not in {o.status for o in outbox}
        assert {f.status for f in session.execute(
            sa.select(FollowUp).where(FollowUp.patient_id == pid)).scalars()} == {"cancelled"}
        (episode,) = session.execute(sa.select(Episode).where(Episode.patient_id == pid)
                                     ).scalars()
        assert (episode.status, episode.baseline_pain_score) == ("closed", None)
        receipts = session.execute(sa.select(WebhookReceipt.response_body)).scalars().all()
        assert receipts and set(receipts) == {"[]"}

        audit = session.execute(sa.select(AuditLog).where(AuditLog.patient_id == pid)
                                .order_by(AuditLog.id)).scalars().all()
        assert audit[-1].action == "patient_erased" and audit[-1].actor_type == "api"
        assert {"patient_enrolled", "patient_read", "checkin_requested"} <= {
            a.action for a in audit}
        assert all(phone not in json.dumps(a.detail) for a in audit)
        for table in (Message.body, Outbox.body, Alert.summary):
            assert not session.execute(sa.select(table).where(table.contains("Elm St"))).all()


def test_an_erased_patient_is_gone_from_the_api(api, clinic, enroll, patients):
    patient = _erasable(api, clinic, enroll, patients)
    pid = patient["id"]
    api.delete(f"/patients/{pid}")
    for path in (f"/patients/{pid}", f"/patients/{pid}/episodes"):
        error_of(api.get(path), 404)
    error_of(api.delete(f"/patients/{pid}"), 404)
    error_of(api.post(f"/patients/{pid}/checkins"), 404)
    assert api.get("/patients").get_json()["data"] == []
    assert all(a["summary"] == "" for a in api.get("/alerts").get_json()["data"])


def test_the_number_can_be_enrolled_again_as_a_new_patient(api, clinic, enroll, patients):
    patient = _erasable(api, clinic, enroll, patients)
    api.delete(f"/patients/{patient['id']}")
    again = enroll(phone=patient["phone"])
    assert again["id"] != patient["id"]
    assert api.get(f"/patients/{again['id']}/episodes").get_json()["data"] == []


def test_a_text_from_an_erased_number_does_not_reach_the_old_record(api, db, clinic, enroll,
                                                                     patients):
    patient = _erasable(api, clinic, enroll, patients)
    api.delete(f"/patients/{patient['id']}")
    patients.text(clinic, patient["phone"], "hello again")
    with db.transaction() as session:
        assert not session.execute(sa.select(Message).where(
            Message.patient_id == patient["id"], Message.body != "")).all()
