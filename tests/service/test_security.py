"""Fail closed in production: configuration, dry-run, staff sessions, sign-in, no 500s, logs,
export audit and security headers, on the real app (PostgreSQL where production needs it)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from service import create_app
from service.config import PRODUCTION_REQUIRED, ConfigError
from service.conversations import consent
from service.messaging import outbox
from service.messaging.senders import DryRunSender, TwilioSender, sender_from_config
from service.store import get_db
from service.store.models import Clinic, Message, Outbox
from tests.conftest import PRODUCTION, production
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
