"""Patients: enroll, list, read, episodes, start a check-in, hold or cancel follow-ups."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flows.triage import RULE_TEXT
from service.store.models import AuditLog, FollowUp, Outbox
from tests.web.api.conftest import (
    EMERGENCY_WEAKNESS,
    SOON_NIGHT_PAIN,
    Api,
    error_of,
    new_phone,
)

# ---- enroll -------------------------------------------------------------------------------


def test_enroll_normalizes_the_phone_and_queues_the_consent_text(api, db, clinic):
    response = api.post("/patients", json={
        "phone": "(617) 555-0142", "name": "Ana  Pérez", "date_of_birth": "1970-05-01",
        "language": "es", "timezone": "America/Chicago", "calls_allowed": True})
    assert response.status_code == 201, response.get_json()
    patient = response.get_json()
    assert patient["phone"] == "+16175550142"
    assert patient["name"] == "Ana Pérez"
    assert (patient["date_of_birth"], patient["language"], patient["timezone"]) == (
        "1970-05-01", "es", "America/Chicago")
    assert patient["calls_allowed"] is True
    assert (patient["consent"], patient["opted_out"], patient["open_episode_id"]) == (
        "pending", False, None)
    assert response.headers["Location"] == f"/api/v1/patients/{patient['id']}"
    assert api.get(f"/patients/{patient['id']}").get_json() == patient
    with db.transaction() as session:
        (row,) = session.execute(sa.select(Outbox)).scalars()
        assert (row.kind, row.to_number, row.status) == ("consent", "+16175550142", "pending")
        assert clinic.name in row.body  # the consent text names the clinic (Spanish here)
        enrolled = session.execute(sa.select(AuditLog).where(
            AuditLog.action == "patient_enrolled")).scalar_one()
        assert (enrolled.actor_type, enrolled.patient_id) == ("api", patient["id"])


def test_enroll_defaults(enroll):
    patient = enroll(phone="+1 617 555 0150")
    assert (patient["name"], patient["date_of_birth"], patient["language"],
            patient["timezone"], patient["calls_allowed"]) == (None, None, "en", None, False)


def test_enrolling_the_same_number_twice_is_409(api, enroll):
    enroll(phone="+16175550143")
    error = error_of(api.post("/patients", json={"phone": "617-555-0143"}), 409)
    assert error["code"] == "conflict"
    assert "already enrolled" in error["message"]


def test_another_clinic_may_enroll_the_same_number(client, enroll, make_clinic, make_token):
    enroll(phone="+16175550144")
    other = Api(client, make_token(make_clinic().id))
    assert other.post("/patients", json={"phone": "+16175550144"}).status_code == 201


@pytest.mark.parametrize(("body", "words"), [
    ({}, "'phone' is a required property"),
    ({"phone": ""}, "phone"),
    ({"phone": 6175550100}, "phone: 6175550100 is not of type 'string'"),
    ({"phone": "+16175550100", "nickname": "x"}, "Additional properties"),
    ({"phone": "+16175550100", "language": "fr"}, "language: 'fr' is not one of"),
    ({"phone": "+16175550100", "date_of_birth": "1970-13-01"}, "date_of_birth"),
    ({"phone": "+16175550100", "calls_allowed": "yes"}, "calls_allowed"),
    ({"phone": "+16175550100", "name": "x" * 101}, "name"),
    ([], "is not of type 'object'"),
])
def test_a_body_that_does_not_match_the_schema_is_422(api, body, words):
    error = error_of(api.post("/patients", json=body), 422)
    assert error["code"] == "validation_error"
    assert words in error["message"]


@pytest.mark.parametrize(("body", "words"), [
    ({"phone": "+1 555 123 4567"}, "phone: '+1 555 123 4567' is not a valid phone number"),
    ({"phone": "hello"}, "is not a phone number"),
    ({"phone": "+16175550100", "timezone": "Mars/Olympus"}, "timezone"),
    ({"phone": "+16175550100", "date_of_birth": "2999-01-01"}, "date_of_birth"),
    ({"phone": "+16175550100", "name": "nul\u0000byte"}, "NUL"),
])
def test_unacceptable_values_are_422(api, body, words):
    assert words in error_of(api.post("/patients", json=body), 422)["message"]


@pytest.mark.parametrize(("data", "content_type", "words"), [
    ("", "application/json", "a JSON body is required"),
    ("{not json", "application/json", "not valid JSON"),
    ("phone=+16175550100", "application/x-www-form-urlencoded", "Content-Type"),
])
def test_a_body_that_is_not_json_is_400(api, data, content_type, words):
    response = api.post("/patients", data=data, content_type=content_type)
    assert words in error_of(response, 400)["message"]


# ---- read ---------------------------------------------------------------------------------


def test_list_pages_through_every_patient_once(api, enroll):
    ids = [enroll()["id"] for _ in range(5)]
    seen, url, pages = [], "/patients?limit=2", 0
    while url:
        body = api.get(url.removeprefix("/api/v1")).get_json()
        seen += [p["id"] for p in body["data"]]
        url, pages = body["links"]["next"], pages + 1
        assert (url is None) == (body["next_cursor"] is None)
    assert seen == ids
    assert pages == 3


def test_list_filters_by_phone_in_any_notation_and_by_part_of_the_name(api, enroll):
    ana = enroll(phone="+16175550160", name="Ana Pérez")
    enroll(phone="+16175550161", name="Bob Stone")
    enroll(phone="+16175550162", name="Anabel Ruiz")
    by_phone = api.get("/patients", query_string={"phone": "(617) 555-0160"}).get_json()
    assert [p["id"] for p in by_phone["data"]] == [ana["id"]]
    by_name = api.get("/patients", query_string={"name": "ANA"}).get_json()
    assert [p["name"] for p in by_name["data"]] == ["Ana Pérez", "Anabel Ruiz"]
    assert api.get("/patients", query_string={"name": "%"}).get_json()["data"] == []


def test_the_next_link_keeps_the_filters(api, enroll):
    for name in ("Ana One", "Ana Two", "Bob"):
        enroll(name=name)
    first = api.get("/patients?name=ana&limit=1").get_json()
    assert "name=ana" in first["links"]["next"]
    second = api.get(first["links"]["next"].removeprefix("/api/v1")).get_json()
    assert [p["name"] for p in second["data"]] == ["Ana Two"]
    assert second["links"]["next"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=ten", "cursor=%%%",
                                   "cursor=eyJpZCI6ICJ4In0", "phone=12", "limit=1&limit=2"])
def test_bad_query_parameters_are_400(api, query):
    assert error_of(api.get(f"/patients?{query}"), 400)["code"] == "bad_request"


def test_a_clinic_sees_only_its_own_patients(client, api, enroll, make_clinic, make_token):
    mine = enroll()
    other = Api(client, make_token(make_clinic().id))
    theirs = other.post("/patients", json={"phone": new_phone()}).get_json()
    assert [p["id"] for p in api.get("/patients").get_json()["data"]] == [mine["id"]]
    for path in (f"/patients/{theirs['id']}", f"/patients/{theirs['id']}/episodes"):
        assert error_of(api.get(path), 404)["code"] == "not_found"
    for action in ("checkins", "followups/pause", "followups/resume", "followups/cancel"):
        error_of(api.post(f"/patients/{theirs['id']}/{action}"), 404)
    error_of(api.delete(f"/patients/{theirs['id']}"), 404)
    assert other.get(f"/patients/{theirs['id']}").status_code == 200


@pytest.mark.parametrize("path", ["/patients/999", "/patients/99999999999",
                                  "/patients/0/episodes"])
def test_unknown_patients_are_404(api, path):
    error_of(api.get(path), 404)


def test_every_read_of_a_patient_is_audited(api, db, enroll):
    a, b = enroll(), enroll()
    api.get("/patients")
    api.get(f"/patients/{a['id']}")
    api.get(f"/patients/{a['id']}/episodes")
    with db.transaction() as session:
        rows = session.execute(sa.select(AuditLog).where(AuditLog.action == "patient_read")
                               .order_by(AuditLog.id)).scalars().all()
        token_id = session.execute(sa.text("SELECT id FROM api_tokens")).scalar()
    assert [(r.patient_id, r.detail["via"]) for r in rows] == [
        (a["id"], "list_patients"), (b["id"], "list_patients"), (a["id"], "get_patient"),
        (a["id"], "list_episodes")]
    assert {(r.actor_type, r.actor_id) for r in rows} == {("api", str(token_id))}


# ---- episodes -----------------------------------------------------------------------------


def test_episodes_show_answers_levels_reasons_and_messages(api, clinic, enroll, patients):
    patient = enroll()
    patients.complete_intake(clinic, patient["phone"], SOON_NIGHT_PAIN)
    body = api.get(f"/patients/{patient['id']}/episodes").get_json()
    (episode,) = body["data"]
    assert (episode["status"], episode["intake_level"], episode["last_level"],
            episode["baseline_pain_score"]) == ("open", "soon", "soon", 3)
    (intake,) = episode["checkins"]
    assert (intake["kind"], intake["status"], intake["level"]) == ("intake", "completed", "soon")
    assert intake["reasons"][0] == {"id": "CONCERNING", "text": RULE_TEXT["CONCERNING"]}
    assert {"id": "F_NIGHT", "text": RULE_TEXT["F_NIGHT"]} in intake["reasons"]
    assert intake["answers"]["night_pain"] is True
    assert intake["answers"]["pain_score"] == 3
    assert intake["missing"] == []
    directions = {m["direction"] for m in intake["messages"]}
    assert directions == {"in", "out"}
    assert [f["kind"] for f in episode["followups"]] == ["first", "final"]
    assert {f["status"] for f in episode["followups"]} == {"scheduled"}
    assert api.get(f"/patients/{patient['id']}").get_json()["open_episode_id"] == episode["id"]


def test_an_intake_in_progress_and_unanswered_fields_are_shown(api, clinic, enroll, patients):
    patient = enroll()
    patients.text(clinic, patient["phone"], "YES")
    patients.text(clinic, patient["phone"], "no")
    body = api.get(f"/patients/{patient['id']}/episodes").get_json()
    assert body["data"] == []
    (running,) = body["other_checkins"]
    assert (running["status"], running["level"], running["reasons"]) == ("active", None, [])
    assert running["answers"]["chest_symptoms"] is False
    patients.answer(clinic, patient["phone"], {"cancer_history": "not sure", "age_years": "40",
                                               "pain_score": "2", "relieved_by_rest": "yes"})
    (episode,) = api.get(f"/patients/{patient['id']}/episodes").get_json()["data"]
    assert episode["checkins"][0]["missing"] == ["cancer_history"]
    assert episode["checkins"][0]["reasons"][0]["id"] == "INCOMPLETE"


# ---- start a check-in ---------------------------------------------------------------------


def test_start_checkin_asks_for_consent_first(api, db, enroll):
    patient = enroll()
    response = api.post(f"/patients/{patient['id']}/checkins")
    assert response.status_code == 202
    assert response.get_json() == {"patient_id": patient["id"], "result": "consent_requested"}
    with db.transaction() as session:
        kinds = session.execute(sa.select(Outbox.kind).order_by(Outbox.id)).scalars().all()
    assert kinds == ["consent", "consent"]


def test_start_checkin_starts_continues_then_follows_up(api, clinic, enroll, patients):
    patient = enroll()
    patients.text(clinic, patient["phone"], "YES")  # consent: the intake starts at once
    result = api.post(f"/patients/{patient['id']}/checkins").get_json()["result"]
    assert result == "continued"
    patients.answer(clinic, patient["phone"], SOON_NIGHT_PAIN)
    assert api.post(f"/patients/{patient['id']}/checkins").get_json()["result"] == \
        "followup_started"


def test_after_an_emergency_a_checkin_is_a_followup_of_the_open_episode(api, clinic, enroll,
                                                                        patients):
    patient = enroll()
    patients.complete_intake(clinic, patient["phone"], EMERGENCY_WEAKNESS)
    # An emergency episode stays open for staff (no automatic follow-up is scheduled).
    assert api.post(f"/patients/{patient['id']}/checkins").get_json()["result"] == \
        "followup_started"


def test_with_no_episode_and_no_conversation_an_intake_starts(api, clinic, enroll, patients):
    patient = enroll()
    patients.text(clinic, patient["phone"], "YES")
    patients.text(clinic, patient["phone"], "STOP")  # ends the intake; no episode opens
    patients.text(clinic, patient["phone"], "START")
    response = api.post(f"/patients/{patient['id']}/checkins")
    assert (response.status_code, response.get_json()["result"]) == (202, "intake_started")


def test_start_checkin_for_an_opted_out_patient_is_409(api, clinic, enroll, patients):
    patient = enroll()
    patients.text(clinic, patient["phone"], "STOP")
    error = error_of(api.post(f"/patients/{patient['id']}/checkins"), 409)
    assert "opted out" in error["message"]


# ---- follow-ups ---------------------------------------------------------------------------


def _statuses(db, patient_id):
    with db.transaction() as session:
        return session.execute(sa.select(FollowUp.kind, FollowUp.status)
                               .where(FollowUp.patient_id == patient_id)
                               .order_by(FollowUp.due_at)).all()


def test_pause_resume_and_cancel_followups(api, db, clinic, enroll, patients):
    patient = enroll()
    patients.complete_intake(clinic, patient["phone"], SOON_NIGHT_PAIN)
    pid = patient["id"]

    paused = api.post(f"/patients/{pid}/followups/pause").get_json()
    assert paused["changed"] == 2
    assert [f["status"] for f in paused["followups"]] == ["paused", "paused"]
    assert _statuses(db, pid) == [("first", "paused"), ("final", "paused")]
    assert api.post(f"/patients/{pid}/followups/pause").get_json()["changed"] == 0

    resumed = api.post(f"/patients/{pid}/followups/resume").get_json()
    assert resumed["changed"] == 2
    assert _statuses(db, pid) == [("first", "scheduled"), ("final", "scheduled")]

    api.post(f"/patients/{pid}/followups/pause")
    cancelled = api.post(f"/patients/{pid}/followups/cancel").get_json()
    assert (cancelled["changed"], cancelled["followups"]) == (2, [])
    assert _statuses(db, pid) == [("first", "cancelled"), ("final", "cancelled")]
    with db.transaction() as session:
        actions = session.execute(sa.select(AuditLog.action).where(
            AuditLog.action.like("followups_%")).order_by(AuditLog.id)).scalars().all()
    assert actions == ["followups_paused", "followups_paused", "followups_resumed",
                       "followups_paused", "followups_cancelled"]


def test_resuming_for_an_opted_out_patient_is_409(api, db, clinic, enroll, patients):
    patient = enroll()
    patients.complete_intake(clinic, patient["phone"], SOON_NIGHT_PAIN)
    api.post(f"/patients/{patient['id']}/followups/pause")
    patients.text(clinic, patient["phone"], "STOP")
    error_of(api.post(f"/patients/{patient['id']}/followups/resume"), 409)
