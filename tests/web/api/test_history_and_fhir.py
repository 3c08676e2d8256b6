"""The alert history (resolved alerts with who did what, when, and the note) and the bulk FHIR
export of a clinic's check-ins, each checked by an independent FHIR validator."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa

from service.records import alerts
from service.store.models import ApiToken, AuditLog, Clinic, Patient
from tests.web.api.conftest import NOW, SELF_CARE, SOON_NIGHT_PAIN, Api, error_of, new_phone
from tests.web.api.fhir_check import validate_fhir
from tests.web.dashboard.helpers import make_staff


@pytest.fixture
def resolved(db, clinic, enroll):
    """Three alerts resolved on 1, 10 and 20 March 2026 (14:20 UTC): an urgent one by a nurse
    (with a note), an info one by the nurse (no note), a soon one by the API token."""
    staff_id = make_staff(db, clinic.id, "nurse@clinic.example.org")
    ids = {name: enroll()["id"] for name in ("urgent", "info", "soon")}
    made = {}
    with db.transaction() as session:
        token_id = session.scalar(sa.select(ApiToken.id).where(ApiToken.clinic_id == clinic.id))
        for day, name, actor, note in [(1, "urgent", ("staff", staff_id), "Called; seen today."),
                                       (10, "info", ("staff", staff_id), ""),
                                       (20, "soon", ("api", token_id), "Booked by the EHR.")]:
            raised = datetime(2026, 3, day, 14, 0, tzinfo=UTC)
            alert = alerts.raise_alert(session, session.get(Clinic, clinic.id),
                                       session.get(Patient, ids[name]), kind="triage",
                                       level=name, now=raised)
            alerts.resolve_alert(session, alert, actor_type=actor[0], actor_id=actor[1],
                                 note=note, now=raised + timedelta(minutes=20))
            made[name] = alert.id
    return made, ids, staff_id


def test_the_history_says_who_resolved_what_when_and_why(api, resolved):
    made, ids, staff_id = resolved
    body = api.get("/alerts/history").get_json()
    assert [a["id"] for a in body["data"]] == [made["soon"], made["info"], made["urgent"]]
    urgent = body["data"][2]
    assert urgent["status"] == "resolved" and urgent["resolution_note"] == "Called; seen today."
    nurse = {"type": "staff", "id": staff_id, "email": "nurse@clinic.example.org",
             "name": None}
    assert urgent["resolved_by"] == nurse and urgent["acknowledged_by"] == nurse
    assert urgent["resolved_at"] == "2026-03-01T14:20:00+00:00"
    assert body["data"][1]["resolution_note"] is None  # an info alert, resolved without one
    assert body["data"][0]["resolved_by"]["type"] == "api"
    assert body["data"][0]["resolved_by"]["name"] == "test system"  # the token's name


@pytest.mark.parametrize(("query", "expected"), [
    ("level=urgent", ["urgent"]),
    ("since=2026-03-05", ["soon", "info"]),
    ("until=2026-03-10", ["info", "urgent"]),
    ("since=2026-03-02&until=2026-03-19", ["info"]),
    ("since=2026-03-21", []),
])
def test_history_filters(api, resolved, query, expected):
    made, _ids, _staff = resolved
    got = [a["id"] for a in api.get(f"/alerts/history?{query}").get_json()["data"]]
    assert got == [made[name] for name in expected]


def test_history_by_patient_and_page_by_page(api, resolved):
    made, ids, _staff = resolved
    only = api.get(f"/alerts/history?patient_id={ids['info']}").get_json()["data"]
    assert [a["id"] for a in only] == [made["info"]]
    seen, url = [], "/alerts/history?limit=1"
    while url:
        body = api.get(url.removeprefix("/api/v1")).get_json()
        seen += [a["id"] for a in body["data"]]
        url = body["links"]["next"]
    assert seen == [made["soon"], made["info"], made["urgent"]]


def test_history_reads_are_audited_per_patient(api, db, resolved):
    _made, ids, _staff = resolved
    api.get("/alerts/history")
    with db.transaction() as session:
        read = session.scalars(sa.select(AuditLog.patient_id).where(
            AuditLog.detail["via"].as_string() == "alert_history")).all()
    assert sorted(read) == sorted(ids.values())


@pytest.mark.parametrize("query", ["since=2026-13-01", "until=yesterday", "level=loud",
                                   "since=2026-03-10&until=2026-03-01", "cursor=bm9wZQ",
                                   "patient_id=0"])
def test_bad_history_queries_are_400(api, query):
    error_of(api.get(f"/alerts/history?{query}"), 400)


def test_an_info_alert_resolves_without_a_note_and_a_soon_one_does_not(api, db, clinic,
                                                                       enroll):
    ids = {level: enroll()["id"] for level in ("info", "soon")}
    with db.transaction() as session:
        made = {level: alerts.raise_alert(session, session.get(Clinic, clinic.id),
                                          session.get(Patient, pid), kind="patient_message",
                                          level=level, now=NOW).id
                for level, pid in ids.items()}
    done = api.post(f"/alerts/{made['info']}/resolve", json={})
    assert done.status_code == 200
    assert (done.get_json()["status"], done.get_json()["resolution_note"]) == ("resolved", None)
    refused = error_of(api.post(f"/alerts/{made['soon']}/resolve", json={}), 422)
    assert refused["message"] == "a note is required to resolve a soon alert"


# ---- bulk FHIR export ---------------------------------------------------------------------


def test_a_date_range_of_checkins_as_one_valid_fhir_bundle(api, db, clinic, enroll, patients,
                                                          make_clinic, make_token):
    done, started = enroll(), enroll()
    patients.complete_intake(clinic, done["phone"], SOON_NIGHT_PAIN)
    patients.text(clinic, started["phone"], "YES")  # an intake begun, nothing answered yet
    other = make_clinic()
    elsewhere = Api(api.client, make_token(other.id)).post("/patients",
                                                           json={"phone": new_phone()})
    patients.complete_intake(other, elsewhere.get_json()["phone"], SELF_CARE)

    response = api.get("/fhir/checkins?start=2026-03-02&end=2026-03-02")
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    bundle = response.get_json()
    validate_fhir(bundle)
    resources = [entry["resource"] for entry in bundle["entry"]]
    assert [r["resourceType"] for r in resources] == [
        "Questionnaire", "QuestionnaireResponse", "QuestionnaireResponse"]
    assert "total" not in bundle  # R4 bdl-1: a collection has none
    by_patient = {r["subject"]["reference"]: r for r in resources[1:]}
    assert set(by_patient) == {f"Patient/{done['id']}", f"Patient/{started['id']}"}
    assert by_patient[f"Patient/{done['id']}"]["status"] == "completed"
    begun = by_patient[f"Patient/{started['id']}"]
    assert begun["status"] == "in-progress" and "item" not in begun  # no answer: no "item"
    with db.transaction() as session:
        read = session.scalars(sa.select(AuditLog.patient_id).where(
            AuditLog.detail["via"].as_string() == "export_checkins")).all()
    assert sorted(read) == sorted([done["id"], started["id"]])

    empty = api.get("/fhir/checkins?start=2026-02-01&end=2026-02-28").get_json()
    validate_fhir(empty)
    assert "total" not in empty and "entry" not in empty


@pytest.mark.parametrize("query", ["start=2026-03-02", "end=2026-03-02",
                                   "start=2026-03-10&end=2026-03-01",
                                   "start=2020-01-01&end=2026-01-01", "start=x&end=y"])
def test_bad_export_ranges_are_400(api, query):
    error_of(api.get(f"/fhir/checkins?{query}"), 400)


# ---- enrolment wakes the worker -----------------------------------------------------------

WAKE_REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('TEST_SPOOL_REDIS_DB', '14'))}"


def test_enrolling_by_api_wakes_the_worker_for_the_consent_text(make_app, clinic, make_token):
    prefix = f"test-api-enroll-{uuid.uuid4().hex}:"
    app = make_app(REDIS_URL=WAKE_REDIS_URL, REDIS_KEY_PREFIX=prefix)
    api = Api(app.test_client(), make_token(clinic.id))
    broker = redis.Redis.from_url(WAKE_REDIS_URL)
    try:
        assert api.post("/patients", json={"phone": new_phone()}).status_code == 201
        queued = [json.loads(raw)["headers"]["task"]
                  for raw in broker.lrange(f"{prefix}celery", 0, -1)]
        assert queued == ["tasks.send_now"]  # not left to the next beat
    finally:
        keys = broker.keys(f"{prefix}*")
        if keys:
            broker.delete(*keys)
        broker.close()
