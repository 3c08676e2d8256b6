"""Fail closed in production: configuration, dry-run, staff sessions, sign-in, no 500s, logs,
export audit and security headers, on the real app (PostgreSQL where production needs it)."""

from __future__ import annotations

import re
import statistics
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service import create_app
from service.accounts.staff import ADDRESS_MAX_FAILURES, MAX_FAILED_LOGINS, set_password
from service.cli import main
from service.config import PRODUCTION_REQUIRED, ConfigError
from service.conversations import consent
from service.messaging import outbox
from service.messaging.senders import DryRunSender, TwilioSender, sender_from_config
from service.store import get_db
from service.store.models import AuditLog, Clinic, Message, Outbox, Staff
from tests.conftest import PRODUCTION, production
from tests.service.dashboard_helpers import PASSWORD, StaffClient, make_staff
from tests.service.sms_helpers import new_sid, sign

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
