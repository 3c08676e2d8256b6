"""Alerts: the worklist order, filters, paging; acknowledge; resolve, and referral at the
final follow-up (CLINICAL.md section 4)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from flows.triage import RULE_TEXT
from service.records import alerts
from service.store.models import Alert, AuditLog, Clinic, Episode, FollowUp, Patient
from tests.web.api.conftest import (
    FOLLOWUP_GONE,
    FOLLOWUP_SAME,
    NOW,
    SELF_CARE,
    SOON_NIGHT_PAIN,
    Api,
    error_of,
)


@pytest.fixture
def worklist(db, clinic, enroll):
    """Four alerts, raised by the use cases' own raise_alert: soon (oldest), emergency, info
    (a patient's own text), soon (newest). Real conversations raise them in the tests of
    referral below and in tests/service."""
    ids = {name: enroll()["id"] for name in ("soon_old", "emergency", "chatty", "soon_new")}
    raised = [("soon_old", "triage", "soon", ("CONCERNING", "F_NIGHT"), ""),
              ("emergency", "triage", "emergency", ("NEURO",), ""),
              ("chatty", "patient_message", "info", (), "my back is a bit better thanks"),
              ("soon_new", "incomplete", "soon", ("INCOMPLETE",), "")]
    with db.transaction() as session:
        for minutes, (name, kind, level, reasons, summary) in enumerate(raised):
            alerts.raise_alert(session, session.get(Clinic, clinic.id),
                                 session.get(Patient, ids[name]), kind=kind, level=level,
                                 reasons=reasons, summary=summary,
                                 now=NOW + timedelta(minutes=5 * minutes))
    return ids


def test_alerts_are_listed_by_level_then_age(api, worklist):
    body = api.get("/alerts").get_json()
    got = [(a["level"], a["patient_id"]) for a in body["data"]]
    assert got == [("emergency", worklist["emergency"]), ("soon", worklist["soon_old"]),
                   ("soon", worklist["soon_new"]), ("info", worklist["chatty"])]
    first = body["data"][0]
    assert first["kind"] == "triage" and first["status"] == "open"
    assert first["reasons"][0] == {"id": "NEURO", "text": RULE_TEXT["NEURO"]}
    assert body["links"]["next"] is None
    assert body["data"][3]["kind"] == "patient_message"
    assert body["data"][3]["summary"] == "my back is a bit better thanks"


def test_alert_pages_follow_the_same_order(api, worklist):
    order = [a["id"] for a in api.get("/alerts").get_json()["data"]]
    seen, url = [], "/alerts?limit=1"
    while url:
        body = api.get(url.removeprefix("/api/v1")).get_json()
        seen += [a["id"] for a in body["data"]]
        url = body["links"]["next"]
    assert seen == order


@pytest.mark.parametrize(("query", "expected"), [
    ("level=soon", ["soon_old", "soon_new"]),
    ("kind=patient_message", ["chatty"]),
    ("kind=incomplete", ["soon_new"]),
    ("status=open", ["emergency", "soon_old", "soon_new", "chatty"]),
    ("status=resolved", []),
    ("level=soon&limit=1", ["soon_old"]),
])
def test_alert_filters(api, worklist, query, expected):
    got = [a["patient_id"] for a in api.get(f"/alerts?{query}").get_json()["data"]]
    assert got == [worklist[name] for name in expected]


def test_alert_filter_by_patient(api, worklist):
    body = api.get(f"/alerts?patient_id={worklist['emergency']}").get_json()
    assert [a["level"] for a in body["data"]] == ["emergency"]


@pytest.mark.parametrize("query", ["level=critical", "status=done", "patient_id=x",
                                   "patient_id=0", "cursor=bm9wZQ", "kind=other"])
def test_bad_alert_queries_are_400(api, query):
    error_of(api.get(f"/alerts?{query}"), 400)


def test_reading_alerts_is_audited_per_patient(api, db, worklist):
    api.get("/alerts")
    with db.transaction() as session:
        read = session.execute(sa.select(AuditLog.patient_id).where(
            AuditLog.detail["via"].as_string() == "list_alerts")).scalars().all()
    assert sorted(read) == sorted(worklist.values())


def test_acknowledge_then_resolve(api, db, worklist):
    alert_id = api.get("/alerts?level=emergency").get_json()["data"][0]["id"]
    acked = api.post(f"/alerts/{alert_id}/acknowledge")
    assert acked.status_code == 200
    body = acked.get_json()
    assert body["status"] == "acknowledged"
    by = body["acknowledged_by"]  # the token, by its name (not "api:1")
    assert (by["type"], by["name"], by["email"]) == ("api", "test system", None)
    again = api.post(f"/alerts/{alert_id}/acknowledge").get_json()
    assert again["acknowledged_at"] == body["acknowledged_at"]

    resolved = api.post(f"/alerts/{alert_id}/resolve", json={"note": "Sent to the ER."})
    assert resolved.status_code == 200
    assert (resolved.get_json()["status"], resolved.get_json()["resolution_note"]) == (
        "resolved", "Sent to the ER.")
    assert "conflict" == error_of(api.post(f"/alerts/{alert_id}/resolve",
                                           json={"note": "again"}), 409)["code"]
    error_of(api.post(f"/alerts/{alert_id}/acknowledge"), 409)
    assert [a["id"] for a in api.get("/alerts?status=resolved").get_json()["data"]] == \
        [alert_id]
    with db.transaction() as session:
        actions = session.execute(sa.select(AuditLog.action).where(
            AuditLog.action.like("alert_%")).order_by(AuditLog.id)).scalars().all()
    # The second acknowledgement changed nothing but showed the alert: audited as such.
    assert actions == ["alert_acknowledged", "alert_acknowledged", "alert_resolved"]


def test_resolving_an_open_alert_acknowledges_it_too(api, worklist):
    alert_id = api.get("/alerts?kind=patient_message").get_json()["data"][0]["id"]
    body = api.post(f"/alerts/{alert_id}/resolve", json={"note": "Replied."}).get_json()
    assert body["acknowledged_at"] == body["resolved_at"]


@pytest.mark.parametrize(("body", "status"), [
    (None, 400), ({}, 422), ({"note": ""}, 422), ({"note": "   "}, 422), ({"note": 5}, 422),
    ({"note": "ok", "by": "me"}, 422), ({"note": "x" * 2001}, 422),
])
def test_resolve_needs_a_note(api, worklist, body, status):
    alert_id = api.get("/alerts").get_json()["data"][0]["id"]
    error_of(api.post(f"/alerts/{alert_id}/resolve", json=body), status)


def test_another_clinics_alerts_are_404(client, worklist, make_clinic, make_token):
    other = Api(client, make_token(make_clinic().id))
    assert other.get("/alerts").get_json()["data"] == []
    for alert_id in (1, 2, 3, 4):
        error_of(other.post(f"/alerts/{alert_id}/acknowledge"), 404)
        error_of(other.post(f"/alerts/{alert_id}/resolve", json={"note": "x"}), 404)


# ---- referral -----------------------------------------------------------------------------


def _episode(db, patient_id):
    with db.transaction() as session:
        return session.execute(sa.select(Episode).where(Episode.patient_id == patient_id)
                               ).scalar_one()


def _followup_alert(api, patient_id):
    alerts = api.get(f"/alerts?patient_id={patient_id}&kind=followup").get_json()["data"]
    assert len(alerts) == 1, alerts
    return alerts[0]


def test_resolving_a_persistent_final_check_refers_the_episode(api, db, clinic, enroll,
                                                                patients):
    patient = enroll()
    patients.complete_intake(clinic, patient["phone"], SELF_CARE)
    patients.run_followup(clinic, patient["id"], "first", FOLLOWUP_SAME)
    first_alert = _followup_alert(api, patient["id"])
    api.post(f"/alerts/{first_alert['id']}/resolve", json={"note": "Booked a visit."})
    assert _episode(db, patient["id"]).status == "open"  # the final check is still due

    patients.run_followup(clinic, patient["id"], "final", FOLLOWUP_SAME)
    alerts = api.get(f"/alerts?patient_id={patient['id']}&status=open").get_json()["data"]
    (final_alert,) = alerts
    assert final_alert["level"] == "soon"
    assert final_alert["reasons"][0]["id"] == "PERSISTENT"
    assert _episode(db, patient["id"]).status == "open"  # until staff resolve the alert
    api.post(f"/alerts/{final_alert['id']}/resolve", json={"note": "Referred to physio."})
    episode = _episode(db, patient["id"])
    assert (episode.status, episode.closed_reason) == ("referred", "referred")
    history = api.get(f"/patients/{patient['id']}/episodes").get_json()
    assert history["data"][0]["status"] == "referred"
    assert api.get(f"/patients/{patient['id']}").get_json()["open_episode_id"] is None


def test_resolving_the_first_check_or_a_triage_alert_does_not_refer(api, db, clinic, enroll,
                                                                     patients):
    patient = enroll()
    patients.complete_intake(clinic, patient["phone"], SOON_NIGHT_PAIN)
    for alert in api.get(f"/alerts?patient_id={patient['id']}").get_json()["data"]:
        api.post(f"/alerts/{alert['id']}/resolve", json={"note": "Seen."})
    assert _episode(db, patient["id"]).status == "open"
    patients.run_followup(clinic, patient["id"], "first", FOLLOWUP_SAME)
    api.post(f"/alerts/{_followup_alert(api, patient['id'])['id']}/resolve",
             json={"note": "Seen."})
    assert _episode(db, patient["id"]).status == "open"
    with db.transaction() as session:
        final = session.execute(sa.select(FollowUp).where(
            FollowUp.patient_id == patient["id"], FollowUp.kind == "final")).scalar_one()
        assert final.status == "scheduled"


def test_a_resolved_final_check_closes_the_episode_without_referral(api, db, clinic, enroll,
                                                                     patients):
    patient = enroll()
    patients.complete_intake(clinic, patient["phone"], SELF_CARE)
    patients.run_followup(clinic, patient["id"], "final", FOLLOWUP_GONE)
    assert _episode(db, patient["id"]).status == "closed"
    with db.transaction() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(Alert)).scalar() == 0
