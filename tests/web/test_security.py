"""Fail closed in production: configuration, dry-run, staff sessions, sign-in, no 500s, logs,
export audit and security headers, on the real app (PostgreSQL where production needs it)."""

from __future__ import annotations

import io
import logging
import re
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service import create_app
from service.accounts import api_tokens
from service.accounts.staff import ADDRESS_MAX_FAILURES, MAX_FAILED_LOGINS, set_password
from service.cli import main
from service.config import PRODUCTION_REQUIRED, ConfigError
from service.conversations import consent
from service.logs import PhoneMaskingFilter
from service.messaging import outbox
from service.messaging.senders import DryRunSender, TwilioSender, sender_from_config
from service.store import get_db
from service.store.models import (
    AuditLog,
    Call,
    Clinic,
    Episode,
    Message,
    Outbox,
    Patient,
    Staff,
)
from tests.conftest import PRODUCTION, production
from tests.support.phones import WEBHOOK_CONFIG, Phone, new_sid, sign
from tests.support.twilio import ACCOUNT_SID
from tests.web.dashboard.helpers import PASSWORD, StaffClient, csrf_token, make_staff

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


# ---- configuration: production refuses to start without what it needs --------------------


@POSTGRES_ONLY
@pytest.mark.parametrize("missing", PRODUCTION_REQUIRED)
def test_production_refuses_to_start_without_each_variable(app_config, missing):
    config = {**app_config, **production()}
    del config[missing]
    with pytest.raises(ConfigError, match=f"^{missing} must be set when ENV=production"):
        create_app(config)


@POSTGRES_ONLY
@pytest.mark.parametrize(("name", "value"), [("DATABASE_URL", "sqlite:///var/x.db"),
                                             ("PUBLIC_BASE_URL", "http://triage.example")])
def test_production_refuses_sqlite_and_plain_http(app_config, name, value):
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        create_app({**app_config, **production(), name: value})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_env_no_start_and_no_simulator(app_config):
    """A server that forgets ENV does not come up as a development service with the simulator
    open (ENV has no default); ENV=development must be said."""
    config = dict(app_config)
    del config["ENV"], config["SIMULATOR_ENABLED"]
    with pytest.raises(ConfigError, match="^ENV must be set"):
        create_app(config)


@POSTGRES_ONLY
def test_production_app_with_everything_set_has_no_simulator(make_app):
    client = make_app(**production()).test_client()
    assert client.get("/simulator/").status_code == 404
    assert client.get("/simulator/api/messages?from=%2B16175550142&to=%2B16175550100") \
        .status_code == 404
    health = client.get("/healthz")
    assert health.get_json()["status"] == "ok"


@POSTGRES_ONLY
def test_production_without_sid_is_refused_not_silently_dry_run(app_config):
    """The hole that was found: a token but no account SID used the dry-run sender."""
    config = {**app_config, **production()}
    del config["TWILIO_ACCOUNT_SID"]
    with pytest.raises(ConfigError, match="^TWILIO_ACCOUNT_SID"):
        create_app(config)
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID"):
        sender_from_config({"ENV": "production", "TWILIO_AUTH_TOKEN": "t"})


@POSTGRES_ONLY
def test_dry_run_in_production_is_degraded_and_marks_nothing_delivered(make_app, make_clinic):
    app = make_app(**production(DRY_RUN=True, TWILIO_ACCOUNT_SID=None,
                                TWILIO_AUTH_TOKEN=None))
    health = app.test_client().get("/healthz")
    assert health.status_code == 200
    assert health.get_json()["status"] == "degraded: dry-run"
    assert health.get_json()["sender"] == "dry-run"

    sender = sender_from_config(app.config)
    assert isinstance(sender, DryRunSender)
    clinic = make_clinic()  # (through the development app on the same database)
    db = get_db(app)
    with db.transaction() as session:
        row = outbox.enqueue(session, clinic=session.get(Clinic, clinic.id), body="Urgent alert",
                             kind="oncall", now=NOW, to="+16175550177")
    outcome = outbox.send_one(db, row.id, sender, NOW, on_failed=consent.after_failed_send)
    assert outcome.detail.startswith("DR")  # the row is done with: it is not sent again
    with db.transaction() as session:
        (message,) = session.execute(sa.select(Message)).scalars().all()
        assert message.status == DryRunSender.NOT_SENT != "delivered"
        assert session.get(Outbox, row.id).twilio_sid == outcome.detail


@POSTGRES_ONLY
def test_dry_run_with_credentials_still_sends_nothing(make_app):
    dry = make_app(**production(DRY_RUN=True))
    assert isinstance(sender_from_config(dry.config), DryRunSender)
    assert isinstance(sender_from_config(make_app(**production()).config), TwilioSender)


@POSTGRES_ONLY
def test_a_signature_made_for_another_host_is_refused_in_production(make_app, make_clinic):
    """PUBLIC_BASE_URL is required in production, so the URL Twilio signed is ours, never
    whatever Host the request names."""
    make_clinic()
    client = make_app(**production()).test_client()
    form = {"MessageSid": new_sid(), "From": "+16175550142", "To": "+16175550100",
            "Body": "PAIN", "AccountSid": PRODUCTION["TWILIO_ACCOUNT_SID"]}
    forged = sign("http://evil.example/twilio/sms", form, PRODUCTION["TWILIO_AUTH_TOKEN"])
    response = client.post("/twilio/sms", data=form, headers={"X-Twilio-Signature": forged,
                                                              "Host": "evil.example"})
    assert response.status_code == 403


# ---- staff sessions: ended on the server, everywhere ----------------------------------------


@pytest.fixture
def clinic_a(make_clinic):
    return make_clinic(name="Clinic A", numbers=["+16175550110"])


@pytest.fixture
def staff_a(db, clinic_a):
    make_staff(db, clinic_a.id, "clin@a.example.org")
    return "clin@a.example.org"


def _session_cookie(client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def _replay(app, cookie: str, path: str = "/dashboard/"):
    """Another browser that holds a copy of the cookie."""
    thief = app.test_client()
    thief.set_cookie("session", cookie)
    return thief.get(path)


def test_a_cookie_replayed_after_logout_gets_the_login_page(app, client, staff_a):
    web = StaffClient(client)
    web.login(staff_a)
    copied = _session_cookie(client)
    assert _replay(app, copied).status_code == 200  # the copy works while signed in

    assert web.post("/dashboard/logout").status_code == 302
    for path in ("/dashboard/", "/dashboard/patients", "/dashboard/exports"):
        replayed = _replay(app, copied, path)
        assert replayed.status_code == 302
        assert replayed.headers["Location"].startswith("/dashboard/login")
    assert _replay(app, copied, "/dashboard/alerts.json").status_code == 401


def test_the_cookie_rotates_at_sign_in(app, client, staff_a):
    client.get("/dashboard/login")
    before = _session_cookie(client)
    StaffClient(client).login(staff_a)
    assert _session_cookie(client) != before
    # A cookie planted before sign-in (session fixation) opens nothing afterwards.
    assert _replay(app, before).status_code == 302


def test_sign_out_everywhere_ends_the_other_browsers(app, db, staff_a):
    office, home = StaffClient(app.test_client()), StaffClient(app.test_client())
    office.login(staff_a)
    home.login(staff_a)
    assert "Sign out everywhere" in home.get("/dashboard/").get_data(as_text=True)

    assert home.post("/dashboard/logout/everywhere").status_code == 302
    assert office.get("/dashboard/").status_code == 302
    assert home.get("/dashboard/").status_code == 302
    with db.transaction() as session:
        (row,) = session.execute(sa.select(AuditLog).where(
            AuditLog.action == "staff_signed_out_everywhere")).scalars().all()
        assert row.detail["sessions"] == 2


def test_a_plain_logout_ends_only_its_own_session(app, staff_a):
    office, home = StaffClient(app.test_client()), StaffClient(app.test_client())
    office.login(staff_a)
    home.login(staff_a)
    home.post("/dashboard/logout")
    assert office.get("/dashboard/").status_code == 200


def test_an_admin_signs_someone_out_everywhere_from_the_command_line(app, runner, staff_a):
    web = StaffClient(app.test_client())
    web.login(staff_a)
    result = runner.invoke(main, ["staff", "sign-out", "--email", staff_a])
    assert result.exit_code == 0 and "1 session(s)" in result.output
    assert web.get("/dashboard/").status_code == 302
    unknown = runner.invoke(main, ["staff", "sign-out", "--email", "nobody@a.example.org"])
    assert unknown.exit_code != 0 and "no staff account" in unknown.output


def test_a_password_change_ends_every_session(app, db, staff_a):
    web = StaffClient(app.test_client())
    web.login(staff_a)
    with db.transaction() as session:
        staff = session.scalar(sa.select(Staff).where(Staff.email == staff_a))
        set_password(session, staff, "another-password-2", datetime.now(UTC))
    assert web.get("/dashboard/").status_code == 302


def _at(monkeypatch, minutes: float) -> None:
    monkeypatch.setenv("TRIAGE_FAKE_NOW", (NOW + timedelta(minutes=minutes)).isoformat())


def test_an_idle_session_ends_after_30_minutes_and_the_poll_does_not_keep_it(
        monkeypatch, client, staff_a):
    web = StaffClient(client)
    _at(monkeypatch, 0)
    web.login(staff_a)
    _at(monkeypatch, 20)
    assert web.get("/dashboard/").status_code == 200  # use: the 30 minutes start again
    _at(monkeypatch, 45)
    assert web.get("/dashboard/").status_code == 200
    _at(monkeypatch, 70)
    assert web.get("/dashboard/alerts.json").status_code == 200  # a poll, not use
    _at(monkeypatch, 75.5)  # 30.5 minutes after the last use, 5.5 after the poll
    assert web.get("/dashboard/alerts.json").status_code == 401
    assert web.get("/dashboard/").status_code == 302  # and it stays over


def test_the_idle_timeout_is_configurable(monkeypatch, make_app, staff_a):
    web = StaffClient(make_app(STAFF_IDLE_MINUTES=5).test_client())
    _at(monkeypatch, 0)
    web.login(staff_a)
    _at(monkeypatch, 4)
    assert web.get("/dashboard/").status_code == 200
    _at(monkeypatch, 9.5)
    assert web.get("/dashboard/").status_code == 302


# ---- sign-in that tells nobody which emails exist ------------------------------------------


def _error_of(response) -> str:
    match = re.search(r'role="alert">(.*?)<', response.get_data(as_text=True), re.S)
    assert match, response.get_data(as_text=True)
    return match.group(1).strip()


def _timed_login(web: StaffClient, email: str, password: str):
    started = time.perf_counter()
    response = web.login(email, password)
    return response, time.perf_counter() - started


def test_unknown_and_locked_emails_are_indistinguishable(client, staff_a):
    web = StaffClient(client)
    for _ in range(MAX_FAILED_LOGINS):
        web.login(staff_a, "wrong-password-1")
    locked = [_timed_login(web, staff_a, PASSWORD) for _ in range(5)]  # even the right one
    unknown = [_timed_login(web, "nobody@a.example.org", PASSWORD) for _ in range(5)]
    assert {r.status_code for r, _ in locked} == {r.status_code for r, _ in unknown} == {401}
    assert {_error_of(r) for r, _ in locked} == {_error_of(r) for r, _ in unknown}
    # Both verify one argon2 hash: without the dummy one a locked account answered ~10x sooner.
    locked_s, unknown_s = (statistics.median(t for _, t in runs) for runs in (locked, unknown))
    assert 1 / 3 < locked_s / unknown_s < 3, (locked_s, unknown_s)


def test_behind_trusted_proxies_the_address_limit_counts_the_client(make_app, staff_a):
    app = make_app(TRUSTED_PROXIES=1)
    web = StaffClient(app.test_client())
    proxy = {"REMOTE_ADDR": "10.0.0.1"}

    def login(client_address: str, email: str, password: str = "wrong-password-1"):
        return web.login(email, password, environ_base={
            **proxy, "HTTP_X_FORWARDED_FOR": f"1.2.3.4, {client_address}"})

    for n in range(ADDRESS_MAX_FAILURES):
        login("203.0.113.9", f"guess{n}@a.example.org")
    assert login("203.0.113.9", staff_a, PASSWORD).status_code == 429
    # Another client behind the same proxy is not locked out with the guesser.
    assert login("198.51.100.7", staff_a, PASSWORD).status_code == 302


def test_without_trusted_proxies_a_forwarded_for_header_is_not_believed(client, staff_a):
    web = StaffClient(client)
    for n in range(ADDRESS_MAX_FAILURES):
        web.login(f"guess{n}@a.example.org", "wrong-password-1", environ_base={
            "REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": f"198.51.100.{n}"})
    refused = web.login(staff_a, environ_base={"REMOTE_ADDR": "203.0.113.9",
                                               "HTTP_X_FORWARDED_FOR": "198.51.100.250"})
    assert refused.status_code == 429


# ---- no 500 for any input ---------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/dashboard/%0A//evil.example", "/dashboard/%0D%0ASet-Cookie:x",
                                    "//evil.example/dashboard", "/dashboard//evil.example",
                                    "/dashboard/%5C%5Cevil.example", "/dashboard%09/x"])
def test_sign_in_with_a_hostile_next_stays_in_the_dashboard(client, staff_a, target):
    web = StaffClient(client)
    page = client.get(f"/dashboard/login?next={target}")
    assert page.status_code == 200
    response = client.post(f"/dashboard/login?next={target}", data={
        "csrf_token": csrf_token(page.get_data(as_text=True)), "email": staff_a,
        "password": PASSWORD})
    assert response.status_code == 302
    assert response.headers["Location"] == "/dashboard/"
    assert web.get("/dashboard/").status_code == 200


def test_sign_in_still_goes_to_a_dashboard_page_asked_for(client, staff_a):
    response = StaffClient(client).login(staff_a, next_="/dashboard/patients?q=smith")
    assert response.headers["Location"] == "/dashboard/patients?q=smith"


@pytest.mark.parametrize("raw", [
    '{"phone": "+16175550142", "name": "\\ud800"}',
    '{"phone": "\\udfff"}',
    '{"\\ud800": 1, "phone": "+16175550142"}',
    "[" * 5000 + "]" * 5000,
    '{"phone": "+16175550142", "name": ' + '{"a": ' * 5000 + "1" + "}" * 5001,
    '{"phone": "+16175550142", "name": ' + "[" * 40 + "]" * 40 + "}",
])
def test_api_json_nothing_can_store_is_a_400_not_a_500(client, db, make_clinic, raw):
    clinic = make_clinic()
    with db.transaction() as session:
        _row, token = api_tokens.create_token(session, clinic_id=clinic.id, name="ehr",
                                              read_only=False, now=NOW)
    response = client.post("/api/v1/patients", data=raw, content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "bad_request"
    with db.transaction() as session:
        assert session.execute(sa.select(Patient)).first() is None


@pytest.mark.parametrize("call_sid", ["CA" + "0" * 31 + "\x00", "CA" + "0" * 33, "CA" + "0" * 298,
                                      "CA 123", "\x00"])
@pytest.mark.parametrize("path", ["/twilio/voice", "/twilio/voice/answer?n=1", "/twilio/status"])
def test_voice_parameters_twilio_never_sends_are_a_400(make_app, make_clinic, call_sid, path):
    make_clinic(numbers=["+16175550100"])
    app = make_app(**WEBHOOK_CONFIG)
    form = {"CallSid": call_sid, "From": "+16175550142", "To": "+16175550100",
            "AccountSid": ACCOUNT_SID, "CallStatus": "completed", "Digits": "1"}
    response = app.test_client().post(path, data=form, headers={
        "X-Twilio-Signature": sign(WEBHOOK_CONFIG["PUBLIC_BASE_URL"] + path, form)})
    assert response.status_code == 400
    assert "CallSid" in response.get_data(as_text=True)
    with get_db(app).transaction() as session:
        assert session.execute(sa.select(Call)).first() is None


@pytest.mark.parametrize(("name", "value"), [("From", "+1617555014" + "2" * 30),
                                             ("To", "+1617\x00"), ("Digits", "1" * 40),
                                             ("SpeechResult", "yes\x00")])
def test_other_voice_parameters_are_checked_too(make_app, make_clinic, name, value):
    make_clinic(numbers=["+16175550100"])
    app = make_app(**WEBHOOK_CONFIG)
    form = {"CallSid": new_sid("CA"), "From": "+16175550142", "To": "+16175550100", name: value}
    response = app.test_client().post("/twilio/voice", data=form, headers={
        "X-Twilio-Signature": sign(WEBHOOK_CONFIG["PUBLIC_BASE_URL"] + "/twilio/voice", form)})
    assert response.status_code == 400
    assert name in response.get_data(as_text=True)


# ---- logs: no full number, no answer ---------------------------------------------------------

PATIENT = "+16175550142"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What a production log handler writes (ours: PhoneMaskingFilter), from INFO up."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(PhoneMaskingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield out
    root.removeHandler(handler)


def test_a_failed_statement_does_not_carry_its_parameters(db):
    with pytest.raises(sa.exc.DBAPIError) as failed, db.engine.connect() as connection:
        connection.execute(sa.text("SELECT no_such_column FROM patients WHERE phone_e164 = :p"),
                           {"p": PATIENT})
    assert PATIENT not in str(failed.value)
    assert "parameters hidden" in str(failed.value)


def test_tracebacks_and_national_formats_are_masked(log_lines):
    log = logging.getLogger("service.test_security")
    log.warning("patient called from (617) 555-0142 and 617.555.0143")
    try:
        raise ValueError(f"bad row {{'from_number': '{PATIENT}'}} or 617-555-0144")
    except ValueError:
        log.exception("it failed")
    text = log_lines.getvalue()
    for full in (PATIENT, "(617) 555-0142", "617.555.0143", "617-555-0144"):
        assert full not in text
    assert "(***) ***-0142" in text and "+1******0142" in text and "***-***-0144" in text
    assert "Traceback" in text and "ValueError" in text
    # Not a number: SIDs, ids and times are left as they are.
    log.warning("outbox 1234567 sent as SM6175550142ffff at 2026-03-02 15:00:00")
    assert "outbox 1234567 sent as SM6175550142ffff at 2026-03-02 15:00:00" in \
        log_lines.getvalue()


def test_a_check_in_and_hostile_requests_log_no_number_nor_answer(make_app, make_clinic,
                                                                   log_lines):
    """The webhook paths at INFO, a 400 and a 500-that-was (a 300-character CallSid): the log
    holds neither the patient's number in any format nor what they answered."""
    make_clinic(numbers=["+16175550100"])
    app = make_app(**WEBHOOK_CONFIG, LOG_LEVEL="INFO")
    client = app.test_client()
    phone = Phone(client, PATIENT, "+16175550100")
    answers = ["PAIN", "YES", "no", "no", "no", "no", "no", "no", "no", "no",
               "my neighbour Rosalind says 61", "three weeks"]
    for answer in answers:
        assert phone.send(answer).status_code == 200
    form = {"CallSid": "CA" + "9" * 298, "From": PATIENT, "To": "+16175550100"}
    assert client.post("/twilio/voice", data=form, headers={
        "X-Twilio-Signature": sign(WEBHOOK_CONFIG["PUBLIC_BASE_URL"] + "/twilio/voice", form)}
    ).status_code == 400
    text = log_lines.getvalue()
    assert "inbound sms" in text  # the webhook did log, at INFO
    for secret in (PATIENT, "6175550142", "555-0142", "Rosalind", "three weeks"):
        assert secret not in text, secret


# ---- every export is a read of each patient in it ------------------------------------------


def test_the_csv_export_audits_one_read_per_patient(db, client, clinic_a, staff_a):
    now = datetime.now(UTC)
    with db.transaction() as session:
        clinic = session.get(Clinic, clinic_a.id)
        ids = []
        for number in ("+16175550161", "+16175550162"):
            patient = consent.enroll_patient(session, clinic, phone=number, now=now)
            session.add_all([Episode(clinic_id=clinic.id, patient_id=patient.id,
                                     status="closed", opened_at=now - timedelta(hours=h))
                             for h in (1, 2)])  # two episodes, still one read of the patient
            ids.append(patient.id)
    web = StaffClient(client)
    web.login(staff_a)
    today = now.date()
    response = web.get(f"/dashboard/exports/episodes.csv?start={today - timedelta(days=1)}"
                       f"&end={today + timedelta(days=1)}")
    assert response.status_code == 200
    with db.transaction() as session:
        exported = session.execute(sa.select(AuditLog).where(
            AuditLog.action == "episodes_exported")).scalars().all()
        assert sorted(row.patient_id for row in exported) == sorted(ids)
        assert {row.actor_type for row in exported} == {"staff"}
        assert all(row.detail["rows"] == 4 for row in exported)


# ---- security headers and HSTS -----------------------------------------------------------

HEADED_PATHS = ["/healthz", "/dashboard/login", "/api/v1/openapi.json", "/api/v1/patients",
                "/twilio/sms", "/no/such/page"]


@POSTGRES_ONLY
def test_every_production_response_carries_hsts_and_the_security_headers(make_app):
    client = make_app(**production()).test_client()
    for path in HEADED_PATHS:
        response = client.post(path) if path == "/twilio/sms" else client.get(path)
        headers = response.headers
        assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains", path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["Referrer-Policy"] == "same-origin", path
        assert "camera=()" in headers["Permissions-Policy"], path
    login = client.get("/dashboard/login").headers
    assert "frame-ancestors 'none'" in login["Content-Security-Policy"]
    assert login["Cache-Control"] == "no-store"


def test_no_hsts_on_a_laptop_over_plain_http(client):
    response = client.get("/healthz")
    assert "Strict-Transport-Security" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"
