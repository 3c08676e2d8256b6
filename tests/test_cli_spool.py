"""`triage spool remember-opt-outs`: patients who opted out before the spool heard of every
opt-out get no holding reply while the database is away once it has run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.cli import main
from service.store.models import Patient
from tests.support.phones import WEBHOOK_CONFIG, Phone, twiml_messages

NOW = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)


@pytest.fixture
def app_config(app_config, database_url):
    return {**app_config, **WEBHOOK_CONFIG}


def test_remember_opt_outs_gives_an_earlier_opt_out_no_holding_reply(runner, app, db,
                                                                     make_app, make_clinic,
                                                                     tmp_path):
    clinic = make_clinic(numbers=["+16175550170", "+16175550171"])
    with db.transaction() as session:  # opted out by an earlier version: the spool never knew
        for phone, opted_out in (("+16175550172", True), ("+16175550173", False)):
            session.add(Patient(clinic_id=clinic.id, phone_e164=phone, consent="given",
                                opted_out=opted_out, opted_out_at=NOW if opted_out else None,
                                created_at=NOW))
        session.add(Patient(clinic_id=clinic.id,
                            phone_e164="erased-1", opted_out=True, erased_at=NOW,
                            created_at=NOW))

    result = runner.invoke(main, ["spool", "remember-opt-outs"])

    assert result.exit_code == 0, result.output
    assert "1 opted-out patient(s) known to the spool" in result.output
    down = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'gone' / 'x.db'}",
                    SPOOL_DIR=app.config["SPOOL_DIR"],
                    REDIS_KEY_PREFIX=app.config.get("REDIS_KEY_PREFIX") or "",
                    REDIS_URL=app.config.get("REDIS_URL"))
    for number in ("+16175550170", "+16175550171"):
        assert twiml_messages(Phone(down.test_client(), "+16175550172", number).send("hi")) == []
    assert twiml_messages(Phone(down.test_client(), "+16175550173", "+16175550170")
                          .send("hi")) != []  # not opted out: the holding reply
