"""The staff dashboard through the Flask client, on SQLite and PostgreSQL: sign-in and its
limits, clinic isolation, CSRF, escaping, the alert queue, patients, actions, audit, exports."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import redis
import sqlalchemy as sa

from service.accounts.staff import ADDRESS_MAX_FAILURES, MAX_FAILED_LOGINS, authenticate
from service.cli import main
from service.records import alerts
from service.records.exports import ITEM_TYPES
from service.store.models import (
    Alert,
    AuditLog,
    CheckIn,
    Clinic,
    ClinicNumber,
    Episode,
    FollowUp,
    Outbox,
    Patient,
    Staff,
)
from service.web.dashboard.views import CSP
from tests.conftest import production
from tests.support.answers import intake_answers
from tests.support.db import rows
from tests.support.phones import WEBHOOK_CONFIG, Phone
from tests.web.api.fhir_check import validate_fhir
from tests.web.dashboard.helpers import PASSWORD, StaffClient, make_staff

CLINIC_A_NUMBER = "+16175550110"
CLINIC_B_NUMBER = "+16175550120"
PATIENT = "+16175550142"
# The broker the enrolment's wake-up lands on (no worker listens: the test reads the queue).
WAKE_REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('TEST_SPOOL_REDIS_DB', '14'))}"
XSS = "<script>window.__pwned = 1</script>"


@pytest.fixture
def app(make_app):
    return make_app(**WEBHOOK_CONFIG)


@pytest.fixture
def clinic_a(make_clinic):
    return make_clinic(name="Clinic A", numbers=[CLINIC_A_NUMBER])


@pytest.fixture
def clinic_b(make_clinic):
    return make_clinic(name="Clinic B", numbers=[CLINIC_B_NUMBER])


@pytest.fixture
def staff_a(db, clinic_a):
    make_staff(db, clinic_a.id, "clin@a.example.org")
    return "clin@a.example.org"


@pytest.fixture
def admin_a(db, clinic_a):
    make_staff(db, clinic_a.id, "admin@a.example.org", role="admin")
    return "admin@a.example.org"


@pytest.fixture
def web(client, staff_a) -> StaffClient:
    """Clinic A's clinician, signed in."""
    staff = StaffClient(client)
    assert staff.login(staff_a).status_code == 302
    return staff


@pytest.fixture
def admin_web(app, admin_a) -> StaffClient:
    staff = StaffClient(app.test_client())
    assert staff.login(admin_a).status_code == 302
    return staff


def emergency_by_sms(client, clinic_number: str = CLINIC_A_NUMBER, phone: str = PATIENT,
                     *, extra: tuple[str, ...] = ()) -> Phone:
    """A real conversation through the signed webhook that ends in an emergency alert."""
    patient = Phone(client, phone, clinic_number)
    patient.text("PAIN")
    for body in extra:
        patient.text(body)
    patient.text("yes")  # chest symptoms: emergency, the flow ends at once
    return patient


def full_intake_by_sms(client, answers: dict[str, str], phone: str = PATIENT) -> None:
    patient = Phone(client, phone, CLINIC_A_NUMBER)
    patient.text("PAIN")
    for body in intake_answers(answers):
        patient.text(body)


def only_patient(db) -> Patient:
    (patient,) = rows(db, Patient)
    return patient


def audit_actions(db, **where) -> list[str]:
    return [row.action for row in rows(db, AuditLog, *(getattr(AuditLog, k) == v
                                                       for k, v in where.items()))]


# ---- signing in ---------------------------------------------------------------------------


def test_pages_need_a_signed_in_staff_member(client):
    page = client.get("/dashboard/patients")
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/dashboard/login?next=/dashboard/patients")
    assert client.get("/dashboard/alerts.json").status_code == 401


def test_sign_in_goes_to_the_page_asked_for_and_sign_out_ends_the_session(client, staff_a):
    staff = StaffClient(client)
    response = staff.login(staff_a, next_="/dashboard/patients")
    assert response.status_code == 302
    assert response.headers["Location"] == "/dashboard/patients"
    assert "clin@a.example.org" in client.get("/dashboard/").get_data(as_text=True)

    assert staff.post("/dashboard/logout").status_code == 302
    assert client.get("/dashboard/").status_code == 302


def test_sign_in_never_redirects_to_another_site(client, staff_a):
    response = StaffClient(client).login(staff_a, next_="https://evil.example.com/x")
    assert response.headers["Location"] == "/dashboard/"


@pytest.mark.parametrize("email, password", [
    ("clin@a.example.org", "wrong-password-1"),
    ("nobody@a.example.org", PASSWORD),
    ("", ""),
])
def test_a_wrong_email_or_password_is_refused_with_one_message(client, staff_a, email, password):
    response = StaffClient(client).login(email, password)
    assert response.status_code == 401
    assert "The email or password is wrong, or the account is locked" \
        in response.get_data(as_text=True)


def test_the_email_is_matched_whatever_its_case(client, staff_a):
    assert StaffClient(client).login("  CLIN@A.example.org ").status_code == 302


def test_an_account_locks_after_repeated_failures_then_opens_again(db, clinic_a, staff_a):
    now = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    with db.transaction() as session:
        outcomes = [authenticate(session, email=staff_a, password="nope-nope-nope",
                                 address="10.0.0.1", now=now).outcome
                    for _ in range(MAX_FAILED_LOGINS)]
        right_but_locked = authenticate(session, email=staff_a, password=PASSWORD,
                                        address="10.0.0.2", now=now + timedelta(minutes=14))
        later = authenticate(session, email=staff_a, password=PASSWORD, address="10.0.0.2",
                             now=now + timedelta(minutes=16))
    assert outcomes == ["bad_credentials"] * (MAX_FAILED_LOGINS - 1) + ["locked"]
    assert right_but_locked.outcome == "locked"
    assert later.ok
    (staff,) = rows(db, Staff)
    assert staff.failed_logins == 0 and staff.locked_until is None
    assert "staff_locked" in audit_actions(db)


def test_a_locked_account_is_refused_in_the_browser_as_a_wrong_password_is(client, staff_a):
    """Not a 429 "for this account": that told anyone which emails have accounts."""
    staff = StaffClient(client)
    for _ in range(MAX_FAILED_LOGINS):
        staff.login(staff_a, "wrong-password-1")
    response = staff.login(staff_a)
    assert response.status_code == 401
    assert "or the account is locked" in response.get_data(as_text=True)


def test_one_address_that_keeps_failing_is_refused_for_every_account(client, staff_a):
    staff = StaffClient(client)
    guesser = {"REMOTE_ADDR": "203.0.113.9"}
    for n in range(ADDRESS_MAX_FAILURES):
        staff.login(f"guess{n}@a.example.org", "wrong-password-1", environ_base=guesser)
    refused = staff.login(staff_a, environ_base=guesser)
    assert refused.status_code == 429
    assert "from this address" in refused.get_data(as_text=True)
    # Another address is not affected, and the account itself was never locked.
    assert staff.login(staff_a, environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code == 302


def test_changing_the_password_ends_existing_sessions(db, web, staff_a):
    from service.accounts.staff import set_password

    assert web.get("/dashboard/").status_code == 200
    with db.transaction() as session:
        staff = session.scalar(sa.select(Staff).where(Staff.email == staff_a))
        set_password(session, staff, "another-password-2", datetime.now(UTC))
    assert web.get("/dashboard/").status_code == 302


# ---- web safety ---------------------------------------------------------------------------


def test_session_cookie_is_httponly_and_lax(client, staff_a):
    response = StaffClient(client).login(staff_a)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # development over plain http


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_session_cookie_is_secure_in_production(make_app, database_url, clinic_a):
    app = make_app(**production())
    make_staff(app.extensions["db"], clinic_a.id, "prod@a.example.org")
    response = StaffClient(app.test_client()).login("prod@a.example.org")
    assert response.status_code == 302
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_form_without_its_csrf_token_is_refused(client, web):
    emergency_by_sms(client)
    (alert,) = rows(client.application.extensions["db"], Alert)
    refused = web.post(f"/dashboard/alerts/{alert.id}/acknowledge", with_token=False)
    assert refused.status_code == 400
    assert "Form expired" in refused.get_data(as_text=True)
    forged = web.post(f"/dashboard/alerts/{alert.id}/acknowledge",
                      {"csrf_token": "forged"}, with_token=False)
    assert forged.status_code == 400
    assert rows(client.application.extensions["db"], Alert)[0].status == "open"


def test_the_login_form_needs_its_token_too(client, staff_a):
    response = client.post("/dashboard/login", data={"email": staff_a, "password": PASSWORD})
    assert response.status_code == 400


def test_twilio_webhooks_are_not_asked_for_a_csrf_token(client, clinic_a):
    assert Phone(client, PATIENT, CLINIC_A_NUMBER).send("PAIN").status_code == 200


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/patients", "/dashboard/patients/new",
                                  "/dashboard/exports", "/dashboard/login"])
def test_every_page_has_a_strict_csp_and_no_inline_script(app, web, path):
    signed_out = app.test_client()
    response = signed_out.get(path) if path.endswith("/login") else web.get(path)
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert response.headers["X-Frame-Options"] == "DENY"
    html = response.get_data(as_text=True)
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts)
    assert " style=" not in html and "<style" not in html
    assert re.search(r"<[^>]+\son[a-z]+\s*=", html) is None  # no inline event handlers


def test_patient_written_text_is_escaped_everywhere(client, web, db):
    emergency_by_sms(client, extra=(XSS,))
    with db.transaction() as session:
        patient = session.scalar(sa.select(Patient))
        patient.name = '<img src=x onerror="alert(1)">'
        clinic = session.get(Clinic, patient.clinic_id)
        alerts.raise_alert(session, clinic, patient, kind="patient_message", level="info",
                             now=datetime.now(UTC), summary=XSS)
    for path in ("/dashboard/", f"/dashboard/patients/{patient.id}", "/dashboard/patients",
                 "/dashboard/alerts.json"):
        body = web.get(path).get_data(as_text=True)
        assert "<script>window" not in body and "<img src=x" not in body, path
    page = web.get(f"/dashboard/patients/{patient.id}").get_data(as_text=True)
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page


# ---- clinic isolation ---------------------------------------------------------------------


def test_another_clinics_records_are_404(client, web, db, clinic_b):
    emergency_by_sms(client, CLINIC_B_NUMBER)
    (patient,) = rows(db, Patient)
    (alert,) = rows(db, Alert)
    (checkin,) = rows(db, CheckIn)
    assert patient.clinic_id == clinic_b.id
    for path in (f"/dashboard/patients/{patient.id}", f"/dashboard/checkins/{checkin.id}/fhir.json"):
        assert web.get(path).status_code == 404, path
    for path in (f"/dashboard/alerts/{alert.id}/acknowledge", f"/dashboard/alerts/{alert.id}/resolve",
                 f"/dashboard/patients/{patient.id}/checkin",
                 f"/dashboard/patients/{patient.id}/followups/pause",
                 f"/dashboard/patients/{patient.id}/opt-out"):
        assert web.post(path, {"note": "x"}).status_code == 404, path
    assert "Clinic B" not in web.get("/dashboard/").get_data(as_text=True)
    assert web.get("/dashboard/alerts.json").json["count"] == 0
    assert "No patient matches" in web.get(f"/dashboard/patients?q={PATIENT[-4:]}").get_data(
        as_text=True)
    assert rows(db, Alert)[0].status == "open"
    assert "patient_viewed" not in audit_actions(db)


def test_admins_of_another_clinic_cannot_erase(app, db, client, clinic_b, admin_a):
    emergency_by_sms(client, CLINIC_B_NUMBER)
    admin = StaffClient(app.test_client())
    admin.login(admin_a)
    patient = only_patient(db)
    assert admin.post(f"/dashboard/patients/{patient.id}/erase",
                      {"confirm": "ERASE"}).status_code == 404
    assert only_patient(db).erased_at is None


# ---- alert queue --------------------------------------------------------------------------


def test_an_sms_emergency_shows_in_the_queue_with_its_reasons_and_gaps(client, web, db):
    emergency_by_sms(client)
    page = web.get("/dashboard/").get_data(as_text=True)
    assert 'class="alert level-emergency status-open"' in page
    assert "CHEST" in page and "aortic dissection" in page  # the rule in plain words
    assert "Not answered:" in page and "New weakness in arms or legs" in page
    assert "just now" in page
    # The nurse calls from the card: the full number, as a tel: link, read like a record.
    assert f'href="tel:{PATIENT}"' in page and "Call +1 617 555 0142" in page
    assert "their time" in page and "America/New_York" in page
    patient = only_patient(db)
    assert audit_actions(db, patient_id=patient.id).count("patient_phone_shown") == 1


def test_a_soon_card_masks_the_number_and_an_info_alert_resolves_in_one_click(db, web,
                                                                                clinic_a):
    now = datetime.now(UTC)
    with db.transaction() as session:
        clinic = session.get(Clinic, clinic_a.id)
        made = {}
        for level, phone in [("soon", "+16175550161"), ("info", "+16175550162")]:
            patient = Patient(clinic_id=clinic.id, phone_e164=phone, name=None,
                              timezone="America/Los_Angeles")
            session.add(patient)
            session.flush()
            made[level] = alerts.raise_alert(session, clinic, patient, kind="patient_message",
                                             level=level, now=now, summary="ok thanks").id
    page = web.get("/dashboard/").get_data(as_text=True)
    assert "tel:" not in page and "+16175550161" not in page
    assert "+1******0161" in page  # no name: the masked number names the patient
    assert "(no name)" not in page and "America/Los_Angeles" in page
    assert "patient_phone_shown" not in audit_actions(db)

    assert web.post(f"/dashboard/alerts/{made['info']}/resolve", {"note": ""}).status_code == 302
    assert web.post(f"/dashboard/alerts/{made['soon']}/resolve", {"note": ""}).status_code == 302
    with db.transaction() as session:
        info, soon = session.get(Alert, made["info"]), session.get(Alert, made["soon"])
        assert (info.status, info.resolution_note) == ("resolved", None)
        assert soon.status == "open"  # a note is still required at soon and above
    assert "a note is required to resolve a soon alert" in web.get("/dashboard/").get_data(
        as_text=True)


def _resolved_alerts(db, clinic_id: int) -> dict[str, int]:
    """Three resolved alerts of two patients, resolved on 1, 10 and 20 March (clinic time)."""
    made = {}
    with db.transaction() as session:
        clinic = session.get(Clinic, clinic_id)
        ana = Patient(clinic_id=clinic.id, phone_e164="+16175550171", name="Ana Rivera")
        texted = Patient(clinic_id=clinic.id, phone_e164="+16175550172")  # texted in: no name
        session.add_all([ana, texted])
        session.flush()
        for key, patient, level, day, note in [
                ("ana_urgent", ana, "urgent", 1, "Called; seen the same day."),
                ("ana_info", ana, "info", 10, ""),
                ("texted_soon", texted, "soon", 20, "Booked a visit on Monday.")]:
            raised = datetime(2026, 3, day, 14, 0, tzinfo=UTC)
            alert = alerts.raise_alert(session, clinic, patient, kind="triage", level=level,
                                       now=raised, reasons=["SYSTEMIC"] if level == "urgent"
                                       else [])
            staff = session.scalar(sa.select(Staff).where(Staff.clinic_id == clinic.id))
            alerts.acknowledge_alert(session, alert, actor_type="staff", actor_id=staff.id,
                                     now=raised + timedelta(minutes=3))
            alerts.resolve_alert(session, alert, actor_type="staff", actor_id=staff.id,
                                 note=note, now=raised + timedelta(minutes=20))
            made[key] = alert.id
    return made


def _history_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="level-\w+" data-alert-id="(\d+)"', page)]


def test_alert_history_filters_by_level_dates_and_patient(db, web, clinic_a):
    made = _resolved_alerts(db, clinic_a.id)
    everything = web.get("/dashboard/alerts/history").get_data(as_text=True)
    assert _history_ids(everything) == [made["texted_soon"], made["ana_info"],
                                        made["ana_urgent"]]  # most recently resolved first
    # who and when, by email, not "staff:1"; the note, or that there was none
    assert "clin@a.example.org" in everything and "staff:" not in everything
    assert "2026-03-01 09:03" in everything  # acknowledged, clinic time (America/New_York)
    assert "Called; seen the same day." in everything and "(no note)" in everything
    assert "+1******0172" in everything and "+16175550172" not in everything

    def ids(query: str) -> list[int]:
        return _history_ids(web.get(f"/dashboard/alerts/history?{query}").get_data(as_text=True))

    assert ids("level=urgent") == [made["ana_urgent"]]
    assert ids("start=2026-03-05&end=2026-03-10") == [made["ana_info"]]
    assert ids("q=rivera") == [made["ana_info"], made["ana_urgent"]]
    assert ids("q=0172") == [made["texted_soon"]]
    with db.transaction() as session:
        ana_id = session.get(Alert, made["ana_info"]).patient_id
    assert ids(f"patient={ana_id}&level=info") == [made["ana_info"]]
    assert set(audit_actions(db, patient_id=ana_id)) >= {"alert_history_viewed"}


@pytest.mark.parametrize("query, message", [
    ("level=loud", "choose a level from the list"),
    ("start=03/01/2026", "From: use the form YYYY-MM-DD"),
    ("start=2026-03-10&end=2026-03-01", "the To date is before the From date"),
    ("before_at=yesterday&before_id=3", "that page link is not one this dashboard made"),
])
def test_alert_history_says_which_filter_is_wrong(db, web, clinic_a, query, message):
    _resolved_alerts(db, clinic_a.id)
    response = web.get(f"/dashboard/alerts/history?{query}")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert message in page
    assert len(_history_ids(page)) >= 1  # the other filters still apply: the page is usable


def test_alert_history_pages_on(app, db, web, clinic_a):
    made = _resolved_alerts(db, clinic_a.id)
    app.config["DASHBOARD_HISTORY_PAGE"] = 2
    first = web.get("/dashboard/alerts/history").get_data(as_text=True)
    assert _history_ids(first) == [made["texted_soon"], made["ana_info"]]
    older = re.search(r'<a href="([^"]+)">Older alerts</a>', first).group(1)
    second = web.get(older.replace("&amp;", "&")).get_data(as_text=True)
    assert _history_ids(second) == [made["ana_urgent"]]
    assert "Older alerts" not in second


def test_queue_is_sorted_by_level_then_age(db, web, clinic_a):
    start = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    made = []
    with db.transaction() as session:
        clinic = session.get(Clinic, clinic_a.id)
        for n, (level, minutes) in enumerate([("info", 0), ("soon", 5), ("urgent", 10),
                                              ("emergency", 30), ("soon", 1), ("emergency", 2)]):
            patient = Patient(clinic_id=clinic.id, phone_e164=f"+161755502{n:02d}", name=f"P{n}")
            session.add(patient)
            session.flush()
            made.append(alerts.raise_alert(session, clinic, patient, kind="triage", level=level,
                                             now=start + timedelta(minutes=minutes)).id)
    body = web.get("/dashboard/alerts.json").json
    assert [a["level"] for a in body["alerts"]] == [
        "emergency", "emergency", "urgent", "soon", "soon", "info"]
    assert [a["id"] for a in body["alerts"]] == [made[5], made[3], made[2], made[4], made[1],
                                                 made[0]]
    assert body["emergency"] == 2


def test_the_queue_json_sends_html_only_when_the_queue_changed(client, web):
    first = web.get("/dashboard/alerts.json").json
    assert first["count"] == 0 and "html" in first
    same = web.get(f"/dashboard/alerts.json?since={first['signature']}").json
    assert "html" not in same
    emergency_by_sms(client)
    changed = web.get(f"/dashboard/alerts.json?since={first['signature']}").json
    assert changed["signature"] != first["signature"]
    assert changed["count"] == 1 and 'data-level="emergency"' in changed["html"]


def test_acknowledge_then_resolve_with_a_note(client, web, db, staff_a):
    emergency_by_sms(client)
    (alert,) = rows(db, Alert)
    assert web.post(f"/dashboard/alerts/{alert.id}/acknowledge").status_code == 302
    page = web.get("/dashboard/").get_data(as_text=True)
    assert "acknowledged by clin@a.example.org" in page

    no_note = web.post(f"/dashboard/alerts/{alert.id}/resolve", {"note": "  "})
    assert no_note.status_code == 302
    assert rows(db, Alert)[0].status == "acknowledged"

    web.post(f"/dashboard/alerts/{alert.id}/resolve", {"note": "Called; sent to the ER."})
    (alert,) = rows(db, Alert)
    assert alert.status == "resolved" and alert.resolution_note == "Called; sent to the ER."
    assert web.get("/dashboard/alerts.json").json["count"] == 0
    assert {"alert_acknowledged", "alert_resolved"} <= set(audit_actions(db))


# ---- patients -----------------------------------------------------------------------------


def test_enroll_normalizes_the_phone_and_queues_the_consent_text(web, db):
    response = web.post("/dashboard/patients/new", {
        "phone": "(617) 555-0177", "name": "Ana Rivera", "date_of_birth": "1961-04-02",
        "language": "es", "timezone": "America/Chicago", "calls_allowed": "yes",
        "consent": "yes"})
    assert response.status_code == 302
    patient = only_patient(db)
    assert response.headers["Location"] == f"/dashboard/patients/{patient.id}"
    assert (patient.phone_e164, patient.name, patient.date_of_birth, patient.language,
            patient.timezone, patient.calls_allowed, patient.consent) == (
        "+16175550177", "Ana Rivera", date(1961, 4, 2), "es", "America/Chicago", True, "pending")
    (consent,) = rows(db, Outbox)
    assert consent.kind == "consent"
    assert "patient_enrolled" in audit_actions(db)


def test_without_redis_the_enrolment_says_the_next_beat_sends_the_text(web, monkeypatch):
    monkeypatch.setenv("TRIAGE_FAKE_NOW", "2026-03-03T15:00:00+00:00")  # 10:00 in New York
    response = web.post("/dashboard/patients/new", {"phone": "+16175550177",
                                                    "language": "en", "consent": "yes"})
    page = web.get(response.headers["Location"]).get_data(as_text=True)
    assert "(asking them to reply YES) goes out within a minute." in page


def test_enrolling_wakes_the_worker_so_the_consent_text_goes_at_once(make_app, db, clinic_a,
                                                                   staff_a, monkeypatch):
    monkeypatch.setenv("TRIAGE_FAKE_NOW", "2026-03-03T15:00:00+00:00")  # 10:00 in New York
    prefix = f"test-enroll-{uuid.uuid4().hex}:"
    app = make_app(**WEBHOOK_CONFIG, REDIS_URL=WAKE_REDIS_URL, REDIS_KEY_PREFIX=prefix)
    web = StaffClient(app.test_client())
    web.login(staff_a)
    broker = redis.Redis.from_url(WAKE_REDIS_URL)
    try:
        response = web.post("/dashboard/patients/new", {"phone": "+16175550177",
                                                        "language": "en", "consent": "yes"})
        assert response.status_code == 302
        queued = [json.loads(raw)["headers"]["task"]
                  for raw in broker.lrange(f"{prefix}celery", 0, -1)]
        assert queued == ["tasks.send_now"]
        (consent,) = rows(db, Outbox)
        assert consent.kind == "consent" and consent.status == "pending"
        page = web.get(response.headers["Location"]).get_data(as_text=True)
        assert "(asking them to reply YES) is going out now." in page
    finally:
        keys = broker.keys(f"{prefix}*")
        if keys:
            broker.delete(*keys)
        broker.close()


def test_enrolling_at_night_holds_the_consent_text_and_says_until_when(web, db, monkeypatch):
    monkeypatch.setenv("TRIAGE_FAKE_NOW", "2026-03-03T07:30:00+00:00")  # 02:30 in New York
    response = web.post("/dashboard/patients/new", {"phone": "+16175550177", "language": "en",
                                                    "consent": "yes"})
    assert response.status_code == 302
    (consent,) = rows(db, Outbox)
    assert consent.kind == "consent"
    assert consent.not_before > datetime(2026, 3, 3, 7, 30, tzinfo=UTC)  # quiet hours hold it
    page = web.get(response.headers["Location"]).get_data(as_text=True)
    assert "waits for the end of quiet hours: 2026-03-03 08:00 America/New_York" in page


@pytest.mark.parametrize("form, field_error", [
    ({"phone": "+1 555 010 0000"}, "not a valid phone number"),
    ({"phone": "hello"}, "is not a phone number"),
    ({"date_of_birth": "2999-01-01"}, "not a possible date of birth"),
    ({"timezone": "Mars/Olympus"}, "choose a timezone"),
    ({"consent": ""}, "must agree to receive texts"),
])
def test_enroll_says_what_is_wrong(web, db, form, field_error):
    data = {"phone": "+16175550177", "name": "X", "language": "en", "consent": "yes", **form}
    response = web.post("/dashboard/patients/new", data)
    assert response.status_code == 400
    assert field_error in response.get_data(as_text=True)
    assert rows(db, Patient) == []


def test_enrolling_the_same_phone_twice_is_refused(web, db):
    data = {"phone": "+16175550177", "language": "en", "consent": "yes"}
    assert web.post("/dashboard/patients/new", data).status_code == 302
    again = web.post("/dashboard/patients/new", data)
    assert again.status_code == 400
    assert "already enrolled" in again.get_data(as_text=True)


def test_patient_list_searches_by_name_or_phone_and_masks_phones(web, db, clinic_a):
    for phone, name in [("+16175550171", "Ana Rivera"), ("+16175550182", "Bo Chen")]:
        web.post("/dashboard/patients/new", {"phone": phone, "name": name, "language": "en",
                                             "consent": "yes"})
    everyone = web.get("/dashboard/patients").get_data(as_text=True)
    assert "Ana Rivera" in everyone and "Bo Chen" in everyone
    assert "+1******0171" in everyone and "+16175550171" not in everyone
    by_name = web.get("/dashboard/patients?q=rIVer").get_data(as_text=True)
    assert "Ana Rivera" in by_name and "Bo Chen" not in by_name
    by_phone = web.get("/dashboard/patients?q=555-0182").get_data(as_text=True)
    assert "Bo Chen" in by_phone and "Ana Rivera" not in by_phone
    assert "No patient matches" in web.get("/dashboard/patients?q=%25").get_data(as_text=True)


def test_patient_list_shows_last_level_and_next_followup(client, web, db):
    answers = {**_self_care(), "night_pain": "yes"}  # one concerning feature: soon
    full_intake_by_sms(client, answers)
    (first, _final) = rows(db, FollowUp, order_by=FollowUp.due_at)
    page = web.get("/dashboard/patients").get_data(as_text=True)
    assert 'badge level-soon' in page
    assert first.due_at.astimezone().strftime("%Y-%m") in page


def test_patient_page_has_timeline_chart_and_clinician_context(client, web, db):
    full_intake_by_sms(client, {**_self_care(), "pain_score": "6", "night_pain": "yes"})
    patient = only_patient(db)
    page = web.get(f"/dashboard/patients/{patient.id}").get_data(as_text=True)
    # the chart: server-rendered SVG, one point per scored check-in, the baseline drawn
    assert '<svg class="pain-chart"' in page
    assert page.count('<circle class="point') == 1
    assert "baseline 6" in page
    # clinician context of CLINICAL.md section 5
    assert "Clinician context" in page and "CONCERNING" in page and "F_NIGHT" in page
    assert "neurological examination" in page and "ESR and CRP" in page
    assert "MRI, preferred when a tumour or spinal cord compression is suspected." in page
    assert "CT when bone detail is needed." in page
    assert "never advice to give the patient" in page
    # timeline: messages both ways, the check-in and its level, the alert, the follow-ups
    for text in ("Patient SMS", "Clinic SMS", "Intake check-in completed: Soon",
                 "Alert raised: Check-in result (Soon)", "First follow-up due (scheduled)",
                 "Final follow-up due (scheduled)"):
        assert text in page, text
    assert PATIENT in page  # the record itself shows the full number
    assert "<dt>Timezone</dt><dd>America/New_York" in page  # the zone is named, not "clinic"
    # Grouped by check-in, the latest open; inside, the conversation reads top to bottom:
    # the check-in starts, the patient's texts and the clinic's replies alternate, it ends.
    groups = re.findall(r"<details class=\"checkin-group[^\"]*\"( open)?>(.*?)</details>",
                        page, re.S)
    assert [bool(is_open) for is_open, _ in groups] == [True, False]
    intake, outside = groups[0][1], groups[1][1]
    assert "Intake check-in (SMS)" in intake and "completed: Soon" in intake
    assert intake.index("Intake check-in started") < intake.index("Patient SMS") \
        < intake.index("Alert raised") < intake.index("Intake check-in completed")
    whats = re.findall(r'<span class="what">(Patient SMS|Clinic SMS[^<]*)</span>', intake)
    assert [w.split()[0] for w in whats[:6]] == [  # greeting and question 1, answer 1, ...
        "Clinic", "Clinic", "Patient", "Clinic", "Patient", "Clinic"]
    assert "Outside a check-in" in outside and "First follow-up due" in outside
    # Follow-ups are pending: pause and cancel are offered; nothing is paused: no resume.
    assert "Pause follow-ups" in page and "Cancel follow-ups" in page
    assert "Resume follow-ups" not in page


def test_viewing_a_patient_leaves_an_audit_row_that_admins_see(client, web, admin_web, db):
    emergency_by_sms(client)
    patient = only_patient(db)
    web.get(f"/dashboard/patients/{patient.id}")
    (viewed,) = rows(db, AuditLog, AuditLog.action == "patient_viewed")
    assert (viewed.actor_type, viewed.patient_id) == ("staff", patient.id)
    assert web.get("/dashboard/admin/audit").status_code == 403  # clinicians do not
    page = admin_web.get(f"/dashboard/admin/audit?patient={patient.id}").get_data(as_text=True)
    assert "patient_viewed" in page and "clin@a.example.org" in page


def test_start_a_checkin_now_and_hold_the_followups(client, web, db):
    full_intake_by_sms(client, _self_care())
    patient = only_patient(db)
    base = f"/dashboard/patients/{patient.id}"

    web.post(f"{base}/followups/pause")
    assert {f.status for f in rows(db, FollowUp)} == {"paused"}
    web.post(f"{base}/followups/resume")
    assert {f.status for f in rows(db, FollowUp)} == {"scheduled"}

    web.post(f"{base}/checkin")
    active = rows(db, CheckIn, CheckIn.status == "active")
    assert [c.kind for c in active] == ["followup"]
    assert "Follow-up check started" in web.get(base).get_data(as_text=True)

    web.post(f"{base}/followups/cancel")
    assert {f.status for f in rows(db, FollowUp)} == {"cancelled"}
    assert {"followups_paused", "followups_resumed", "checkin_requested",
            "followups_cancelled"} <= set(audit_actions(db, patient_id=patient.id))


def test_mark_opted_out_stops_everything_without_a_text(client, web, db):
    full_intake_by_sms(client, _self_care())
    patient = only_patient(db)
    pending_before = len(rows(db, Outbox, Outbox.status == "pending"))
    web.post(f"/dashboard/patients/{patient.id}/opt-out")
    patient = only_patient(db)
    assert patient.opted_out
    assert {f.status for f in rows(db, FollowUp)} == {"cancelled"}
    assert len(rows(db, Outbox, Outbox.status == "pending")) == 0
    assert pending_before == 0 or rows(db, Outbox, Outbox.status == "cancelled")
    refused = web.post(f"/dashboard/patients/{patient.id}/checkin")
    assert refused.status_code == 302
    assert "opted out" in web.get(f"/dashboard/patients/{patient.id}").get_data(as_text=True)


def test_only_admins_erase_and_erased_patients_disappear(client, web, admin_web, db):
    emergency_by_sms(client, extra=(XSS,))
    patient = only_patient(db)
    assert web.post(f"/dashboard/patients/{patient.id}/erase",
                    {"confirm": "ERASE"}).status_code == 403
    not_confirmed = admin_web.post(f"/dashboard/patients/{patient.id}/erase", {"confirm": ""})
    assert not_confirmed.status_code == 302 and only_patient(db).erased_at is None

    admin_web.post(f"/dashboard/patients/{patient.id}/erase", {"confirm": "ERASE"})
    erased = only_patient(db)
    assert erased.erased_at is not None and erased.name is None
    assert erased.phone_e164 != PATIENT
    assert admin_web.get(f"/dashboard/patients/{patient.id}").status_code == 404
    assert admin_web.get("/dashboard/alerts.json").json["count"] == 0
    assert "patient_erased" in audit_actions(db)


# ---- exports ------------------------------------------------------------------------------


def test_episode_csv_for_a_date_range(client, web, db):
    full_intake_by_sms(client, {**_self_care(), "pain_score": "6", "night_pain": "yes"})
    with db.transaction() as session:
        patient = session.scalar(sa.select(Patient))
        patient.name = "=HYPERLINK(\"http://x\")"
        old = Episode(clinic_id=patient.clinic_id, patient_id=patient.id, status="closed",
                      opened_at=datetime(2020, 1, 5, 12, tzinfo=UTC), intake_level="urgent",
                      last_level="urgent")
        session.add(old)
    today = datetime.now(UTC).date()
    response = web.get(f"/dashboard/exports/episodes.csv?start={today - timedelta(days=1)}"
                       f"&end={today + timedelta(days=1)}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(table) == 1  # the 2020 episode is outside the range
    (row,) = table
    assert row["intake_level"] == "soon" and row["baseline_pain_score"] == "6"
    assert row["latest_pain_score"] == "6" and "F_NIGHT" in row["intake_reasons"]
    assert row["checkins"] == "1" and row["alerts"] == "1" and row["open_alerts"] == "1"
    assert row["patient_name"].startswith("'=")  # no formula in a spreadsheet
    assert row["next_followup_at"]
    (exported,) = rows(db, AuditLog, AuditLog.action == "episodes_exported")
    assert exported.detail["rows"] == 1


def test_episode_csv_rejects_a_bad_range(web):
    assert web.get("/dashboard/exports/episodes.csv?start=2026-03-02&end=2026-03-01"
                   ).status_code == 302
    assert web.get("/dashboard/exports/episodes.csv?start=x&end=y").status_code == 302


# The part of the FHIR R4 JSON schema these resources use (the full schema is not shipped).
CODING = {"type": "object", "required": ["code"], "properties": {
    "system": {"type": "string", "format": "uri"}, "code": {"type": "string"},
    "display": {"type": "string"}}}
EXTENSION = {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}
QUESTIONNAIRE = {
    "type": "object",
    "required": ["resourceType", "status", "item", "url", "version"],
    "properties": {
        "resourceType": {"const": "Questionnaire"},
        "status": {"enum": ["draft", "active", "retired", "unknown"]},
        "subjectType": {"type": "array", "items": {"type": "string"}},
        "item": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["linkId", "type"], "additionalProperties": False,
            "properties": {
                "linkId": {"type": "string", "pattern": "^[a-z_]+$"}, "text": {"type": "string"},
                "type": {"enum": ["boolean", "integer", "choice", "string"]},
                "required": {"type": "boolean"}, "extension": {"type": "array", "items": EXTENSION},
                "answerOption": {"type": "array", "items": {
                    "type": "object", "required": ["valueCoding"],
                    "properties": {"valueCoding": CODING}}}}}},
    },
}
ANSWER = {"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
    "valueBoolean": {"type": "boolean"}, "valueInteger": {"type": "integer"},
    "valueCoding": CODING, "valueString": {"type": "string"}}, "additionalProperties": False}
RESPONSE = {
    "type": "object",
    "required": ["resourceType", "questionnaire", "status", "subject", "authored"],
    "properties": {
        "resourceType": {"const": "QuestionnaireResponse"},
        "status": {"enum": ["in-progress", "completed", "amended", "entered-in-error",
                            "stopped"]},
        "subject": {"type": "object", "required": ["reference"]},
        "authored": {"type": "string", "format": "date-time"},
        "extension": {"type": "array", "items": EXTENSION},
        "item": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["linkId", "answer"], "properties": {
                "linkId": {"type": "string"}, "text": {"type": "string"},
                "answer": {"type": "array", "minItems": 1, "items": ANSWER}}}},
    },
}
BUNDLE = {
    "type": "object", "required": ["resourceType", "type", "entry"],
    "properties": {
        "resourceType": {"const": "Bundle"}, "type": {"const": "collection"},
        "entry": {"type": "array", "minItems": 2, "maxItems": 2, "items": {
            "type": "object", "required": ["fullUrl", "resource"]}}},
}


def test_a_checkin_as_fhir_questionnaire_response_with_its_questionnaire(client, web, db):
    full_intake_by_sms(client, {**_self_care(), "pain_score": "6", "night_pain": "yes"})
    (checkin,) = rows(db, CheckIn)
    response = web.get(f"/dashboard/checkins/{checkin.id}/fhir.json")
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    bundle = response.json
    validate_fhir(bundle)
    jsonschema.validate(bundle, BUNDLE)
    questionnaire, answered = (entry["resource"] for entry in bundle["entry"])
    jsonschema.validate(questionnaire, QUESTIONNAIRE)
    jsonschema.validate(answered, RESPONSE)

    from flows.loader import get_flow

    flow = get_flow("intake", checkin.flow_version)
    assert [item["linkId"] for item in questionnaire["item"]] == [
        node.field for node in flow.questions]
    assert answered["questionnaire"] == f"{questionnaire['url']}|{questionnaire['version']}"
    assert answered["status"] == "completed"
    assert answered["subject"]["reference"] == f"Patient/{checkin.patient_id}"
    types = {item["linkId"]: item["type"] for item in questionnaire["item"]}
    by_link = {item["linkId"]: item["answer"][0] for item in answered["item"]}
    assert set(by_link) <= set(types)
    value_key = {"boolean": "valueBoolean", "integer": "valueInteger", "choice": "valueCoding"}
    for link, answer in by_link.items():
        assert list(answer) == [value_key[types[link]]], link
    assert by_link["pain_score"] == {"valueInteger": 6}
    assert by_link["night_pain"] == {"valueBoolean": True}
    assert by_link["duration_days"] == {"valueInteger": 14}
    assert {"url": "https://triage.example.org/fhir/StructureDefinition/triage-level",
            "valueCode": "soon"} in answered["extension"]
    assert "checkin_exported" in audit_actions(db)


def test_the_clinics_checkins_of_a_date_range_as_one_fhir_bundle(client, web, db, clinic_b):
    full_intake_by_sms(client, {**_self_care(), "night_pain": "yes"})
    full_intake_by_sms(client, _self_care(), phone="+16175550143")
    patient = rows(db, Patient, Patient.phone_e164 == "+16175550143")[0]
    web.post(f"/dashboard/patients/{patient.id}/checkin")  # a follow-up, nothing answered yet
    emergency_by_sms(client, CLINIC_B_NUMBER, phone="+16175550144")  # another clinic's
    today = datetime.now(UTC).astimezone(ZoneInfo("America/New_York")).date()
    response = web.get(f"/dashboard/exports/checkins.fhir.json?start={today}&end={today}")
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    assert "attachment" in response.headers["Content-Disposition"]
    bundle = response.json
    validate_fhir(bundle)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Questionnaire", "Questionnaire", "QuestionnaireResponse",
                     "QuestionnaireResponse", "QuestionnaireResponse"]  # intake, follow-up
    assert "total" not in bundle  # R4 bdl-1: a collection has none
    subjects = {e["resource"]["subject"]["reference"] for e in bundle["entry"][2:]}
    assert len(subjects) == 2  # clinic A's two patients only
    exported = rows(db, AuditLog, AuditLog.action == "checkins_exported")
    assert sorted(row.patient_id for row in exported) == sorted(
        int(ref.split("/")[1]) for ref in subjects)

    yesterday = today - timedelta(days=1)
    empty = web.get(f"/dashboard/exports/checkins.fhir.json?start={yesterday}&end={yesterday}")
    validate_fhir(empty.json)
    assert "total" not in empty.json and "entry" not in empty.json
    bad = web.get("/dashboard/exports/checkins.fhir.json?start=2026-02-01&end=2026-01-01")
    assert bad.status_code == 302
    assert "the end date is before the start date" in web.get("/dashboard/exports").get_data(
        as_text=True)


def test_a_followup_questionnaire_offers_the_status_choices(client, web, db):
    full_intake_by_sms(client, _self_care())
    patient = only_patient(db)
    web.post(f"/dashboard/patients/{patient.id}/checkin")
    followup = rows(db, CheckIn, CheckIn.kind == "followup")[0]
    bundle = web.get(f"/dashboard/checkins/{followup.id}/fhir.json").json
    validate_fhir(bundle)
    questionnaire, answered = (entry["resource"] for entry in bundle["entry"])
    (status,) = [item for item in questionnaire["item"] if item["linkId"] == "status"]
    assert status["type"] == "choice"
    assert [o["valueCoding"]["code"] for o in status["answerOption"]] == [
        "gone", "better", "same", "worse"]
    # Nothing answered yet: no "item" at all (FHIR forbids an empty array).
    assert answered["status"] == "in-progress" and "item" not in answered
    assert {item["type"] for item in questionnaire["item"]} <= set(ITEM_TYPES.values())


# ---- command line -------------------------------------------------------------------------


def test_cli_staff_create_and_sign_in(app, runner, db, clinic_a):
    result = runner.invoke(main, ["staff", "create", "--clinic", str(clinic_a.id), "--email",
                                  "New@A.example.org", "--role", "admin", "--password",
                                  "long-enough-pw"])
    assert result.exit_code == 0, result.output
    (staff,) = rows(db, Staff)
    assert staff.email == "new@a.example.org" and staff.role == "admin"
    assert staff.password_hash.startswith("$argon2id$")
    assert StaffClient(app.test_client()).login("new@a.example.org",
                                                "long-enough-pw").status_code == 302
    again = runner.invoke(main, ["staff", "create", "--clinic", str(clinic_a.id), "--email",
                                 "new@a.example.org", "--password", "long-enough-pw"])
    assert again.exit_code != 0 and "already has an account" in again.output
    short = runner.invoke(main, ["staff", "create", "--clinic", str(clinic_a.id), "--email",
                                 "x@a.example.org", "--password", "short"])
    assert short.exit_code != 0 and "at least 10 characters" in short.output


def test_cli_staff_create_prompts_for_the_password(app, runner, db, clinic_a):
    result = runner.invoke(main, ["staff", "create", "--clinic", str(clinic_a.id), "--email",
                                  "p@a.example.org"], input="prompted-pass\nprompted-pass\n")
    assert result.exit_code == 0, result.output
    assert StaffClient(app.test_client()).login("p@a.example.org",
                                                "prompted-pass").status_code == 302


def test_cli_demo_seed_is_idempotent_and_its_login_works(app, runner, db):
    first = runner.invoke(main, ["demo", "seed"])
    second = runner.invoke(main, ["demo", "seed"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "demo@example.org" in first.output and "(created)" in first.output
    assert "(exists)" in second.output
    (clinic,) = rows(db, Clinic)
    assert (clinic.name, clinic.timezone) == ("Demo Clinic", "America/New_York")
    assert [n.phone_e164 for n in rows(db, ClinicNumber)] == ["+16175550100"]
    password = re.search(r"demo@example.org / (\S+)", first.output).group(1)
    assert StaffClient(app.test_client()).login("demo@example.org", password).status_code == 302
    assert len(rows(db, Staff)) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_cli_demo_seed_refuses_in_production(make_app, database_url):
    app = make_app(**production())
    result = app.test_cli_runner().invoke(main, ["demo", "seed"])
    assert result.exit_code != 0 and "development only" in result.output


def _self_care() -> dict[str, str]:
    from tests.support.answers import SELF_CARE_EN

    return dict(SELF_CARE_EN)


def test_the_alert_queue_and_the_patient_list_are_audited_as_reads(client, web, db):
    """They show patients' names, alerts and what they wrote: each listed patient's record was
    read, so each gets an audit row (the poll only when it sends the list again)."""
    emergency_by_sms(client)
    patient = only_patient(db)
    web.get("/dashboard/")
    (queue,) = rows(db, AuditLog, AuditLog.action == "alert_queue_viewed")
    assert (queue.actor_type, queue.patient_id) == ("staff", patient.id)
    signature = web.get("/dashboard/alerts.json").get_json()["signature"]
    assert len(rows(db, AuditLog, AuditLog.action == "alert_queue_viewed")) == 2
    web.get(f"/dashboard/alerts.json?since={signature}")  # unchanged: no list sent, no read
    assert len(rows(db, AuditLog, AuditLog.action == "alert_queue_viewed")) == 2
    web.get("/dashboard/patients")
    (listed,) = rows(db, AuditLog, AuditLog.action == "patient_list_viewed")
    assert listed.patient_id == patient.id
