"""Storage layer and app skeleton: migrations, constraints, unit of work, healthz, CLI."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy import exc

from service import create_app
from service.cli import main
from service.config import ConfigError, load_config
from service.logs import mask_phone
from service.phones import normalize_phone
from service.store import get_db, make_engine, migrate
from service.store.models import (
    Alert,
    AuditLog,
    CheckIn,
    Clinic,
    ClinicNumber,
    Episode,
    FollowUp,
    Patient,
    WebhookReceipt,
)
from service.web.health import add_check

# ---- migrations ---------------------------------------------------------------------------


def test_upgrade_from_empty_matches_models_and_downgrades(empty_database_url):
    migrate.upgrade(empty_database_url)

    assert migrate.current_revision(empty_database_url) == migrate.head_revision()
    assert migrate.schema_diff(empty_database_url) == []

    migrate.downgrade(empty_database_url, "base")
    assert migrate.current_revision(empty_database_url) is None
    engine = make_engine(empty_database_url)
    try:
        assert sa.inspect(engine).get_table_names() == ["alembic_version"]
    finally:
        engine.dispose()

    migrate.upgrade(empty_database_url)
    assert migrate.schema_diff(empty_database_url) == []


def test_0008_gives_texts_pending_at_the_upgrade_the_quiet_hours_of_their_patient(
        empty_database_url):
    """Scheduled texts queued before the upgrade keep quiet hours when they are sent; a reply
    or an on-call text, and a text already sent, stay as they were."""
    migrate.upgrade(empty_database_url, "0007")
    engine = make_engine(empty_database_url)
    now = datetime(2026, 6, 1, 20, 55, tzinfo=UTC)
    try:
        with engine.begin() as connection:
            def insert(table: str, **values) -> int:
                columns = ", ".join(values)
                marks = ", ".join(f":{name}" for name in values)
                return connection.execute(sa.text(
                    f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING id"),
                    values).scalar_one()
            clinic = insert("clinics", name="C", timezone="America/Chicago", phone="+13125550100",
                            emergency_number="911", followup_first_day=28, followup_final_day=42,
                            start_keywords="[]", twilio_optout_handling=False, created_at=now)
            patients = [insert("patients", clinic_id=clinic, phone_e164=phone, timezone=tz,
                               language="en", calls_allowed=False, consent="pending",
                               opted_out=False, number_invalid=False, created_at=now)
                        for phone, tz in (("+13125550101", "America/Denver"),
                                          ("+13125550102", None))]
            texts = [insert("outbox", clinic_id=clinic, patient_id=patient, kind=kind,
                            to_number="+1312555010" + str(n), body="text", status=status,
                            attempts=0, not_before=now, created_at=now)
                     for n, (patient, kind, status) in enumerate((
                         (patients[0], "consent", "pending"), (patients[1], "checkin", "pending"),
                         (patients[0], "reply", "pending"), (None, "oncall", "pending"),
                         (patients[0], "checkin", "sent")), start=1)]
        migrate.upgrade(empty_database_url)
        with engine.connect() as connection:
            quiet = dict(connection.execute(sa.text("SELECT id, quiet_tz FROM outbox")).all())
    finally:
        engine.dispose()
    assert [quiet[text] for text in texts] == ["America/Denver", "America/Chicago", None, None,
                                               None]


def test_schema_diff_sees_a_partial_index_that_lost_its_where(database_url):
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP INDEX ix_followups_due_at_scheduled")
            connection.exec_driver_sql(
                "CREATE INDEX ix_followups_due_at_scheduled ON followups (due_at)"
            )
    finally:
        engine.dispose()

    diff = migrate.schema_diff(database_url)

    assert [d[:3] for d in diff] == [("index_where", "followups", "ix_followups_due_at_scheduled")]


def test_cli_db_upgrade_migrates_the_configured_database(make_app, empty_database_url):
    app = make_app(DATABASE_URL=empty_database_url)

    result = app.test_cli_runner().invoke(main, ["db", "upgrade"])

    assert result.exit_code == 0, result.output
    assert f"is at revision {migrate.head_revision()}" in result.output
    assert migrate.current_revision(empty_database_url) == migrate.head_revision()


# ---- constraints --------------------------------------------------------------------------


def _patient(clinic: Clinic, phone: str = "+16175550142") -> Patient:
    return Patient(clinic_id=clinic.id, phone_e164=phone)


@pytest.mark.parametrize("length", [0, 41])
def test_clinic_name_must_be_1_to_40_characters(db, length):
    with pytest.raises((exc.IntegrityError, exc.DataError)):
        with db.transaction() as session:
            session.add(Clinic(name="x" * length, phone="+16175550100"))


def test_clinic_name_of_40_characters_is_stored(db):
    with db.transaction() as session:
        session.add(Clinic(name="x" * 40, phone="+16175550100"))
    with db.transaction() as session:
        assert session.scalar(sa.select(Clinic.name)) == "x" * 40


@pytest.mark.parametrize(
    ("column", "value"),
    [("followup_first_day", 27), ("followup_first_day", 36), ("followup_final_day", 50)],
)
def test_followup_days_stay_in_the_clinical_window(db, column, value):
    with pytest.raises(exc.IntegrityError):
        with db.transaction() as session:
            session.add(Clinic(name="Clinic", phone="+16175550100", **{column: value}))


def test_clinic_defaults(make_clinic):
    clinic = make_clinic()

    assert clinic.timezone == "America/New_York"
    assert clinic.emergency_number == "911"
    assert clinic.start_keywords == ["PAIN", "BACK", "DOLOR"]
    assert (clinic.followup_first_day, clinic.followup_final_day) == (28, 42)
    assert clinic.twilio_optout_handling is False
    assert clinic.phone == clinic.numbers[0].phone_e164
    assert clinic.created_at.tzinfo is not None


def test_patient_phone_is_unique_per_clinic(db, make_clinic):
    first, second = make_clinic(), make_clinic()
    with db.transaction() as session:
        session.add_all([_patient(first), _patient(second)])

    with pytest.raises(exc.IntegrityError):
        with db.transaction() as session:
            session.add(_patient(first))


def test_a_number_belongs_to_one_clinic(db, make_clinic):
    clinic = make_clinic()
    with pytest.raises(exc.IntegrityError):
        with db.transaction() as session:
            session.add(ClinicNumber(clinic_id=clinic.id, phone_e164=clinic.numbers[0].phone_e164))


def test_foreign_keys_are_enforced(db):
    with pytest.raises(exc.IntegrityError):
        with db.transaction() as session:
            session.add(Patient(clinic_id=999, phone_e164="+16175550142"))


def _checkin(patient: Patient, **kw) -> CheckIn:
    fields = {"kind": "intake", "flow_id": "intake", "flow_version": 1, **kw}
    return CheckIn(clinic_id=patient.clinic_id, patient_id=patient.id, **fields)


def test_a_patient_has_at_most_one_active_checkin(db, make_clinic):
    clinic = make_clinic()
    with db.transaction() as session:
        patient = _patient(clinic)
        session.add(patient)
        session.flush()
        session.add(_checkin(patient))

    with pytest.raises(exc.IntegrityError):
        with db.transaction() as session:
            session.add(_checkin(patient))

    with db.transaction() as session:
        active = session.scalars(
            sa.select(CheckIn).where(CheckIn.patient_id == patient.id, CheckIn.status == "active")
        ).one()
        active.status = "completed"
        session.flush()
        session.add(_checkin(patient))
    with db.transaction() as session:
        statuses = session.scalars(sa.select(CheckIn.status).order_by(CheckIn.id)).all()
    assert statuses == ["completed", "active"]


def test_a_new_episode_can_replace_the_open_one_in_one_transaction(db, make_clinic):
    clinic = make_clinic()
    with db.transaction() as session:
        patient = _patient(clinic)
        session.add(patient)
        session.flush()
        session.add(Episode(clinic_id=clinic.id, patient_id=patient.id))

    with pytest.raises(exc.IntegrityError):
        with db.transaction() as session:
            session.add(Episode(clinic_id=clinic.id, patient_id=patient.id))

    with db.transaction() as session:
        previous = session.scalars(sa.select(Episode)).one()
        previous.status = "closed"
        session.add(Episode(clinic_id=clinic.id, patient_id=patient.id))
    with db.transaction() as session:
        assert session.scalars(sa.select(Episode.status).order_by(Episode.id)).all() == [
            "closed",
            "open",
        ]


def test_a_followup_and_its_checkin_point_at_each_other(db, make_clinic):
    clinic = make_clinic()
    due = datetime(2030, 1, 29, 14, 0, tzinfo=UTC)
    with db.transaction() as session:
        patient = _patient(clinic)
        session.add(patient)
        session.flush()
        episode = Episode(clinic_id=clinic.id, patient_id=patient.id)
        followup = FollowUp(
            clinic_id=clinic.id, patient_id=patient.id, episode=episode, kind="first", due_at=due
        )
        checkin = _checkin(patient, episode=episode, followup=followup, kind="followup")
        followup.checkin = checkin
        session.add_all([episode, followup, checkin])

    with db.transaction() as session:
        followup = session.scalars(sa.select(FollowUp)).one()
        assert followup.checkin.followup_id == followup.id
        assert followup.due_at == due
        assert followup.episode.followups == [followup]


# ---- times and the unit of work -----------------------------------------------------------


def test_times_come_back_timezone_aware_in_utc(db, make_clinic):
    clinic = make_clinic()
    eastern = timezone(timedelta(hours=-5))
    with db.transaction() as session:
        session.add(_patient(clinic))
        session.flush()
        patient = session.scalars(sa.select(Patient)).one()
        patient.consented_at = datetime(2030, 3, 1, 9, 30, tzinfo=eastern)

    with db.transaction() as session:
        consented_at = session.scalars(sa.select(Patient.consented_at)).one()
        later = session.scalars(
            sa.select(Patient.id).where(
                Patient.consented_at > datetime(2030, 3, 1, 14, 29, tzinfo=UTC)
            )
        ).all()

    assert consented_at == datetime(2030, 3, 1, 14, 30, tzinfo=UTC)
    assert consented_at.utcoffset() == timedelta(0)
    assert len(later) == 1


def test_naive_datetimes_are_refused(db, make_clinic):
    clinic = make_clinic()
    with pytest.raises(exc.StatementError, match="naive datetime"):
        with db.transaction() as session:
            session.add(
                Patient(
                    clinic_id=clinic.id,
                    phone_e164="+16175550142",
                    consented_at=datetime(2030, 3, 1, 9, 30),
                )
            )


def test_transaction_rolls_back_on_error(db, make_clinic):
    clinic = make_clinic()
    with pytest.raises(RuntimeError):
        with db.transaction() as session:
            session.add(_patient(clinic))
            session.flush()
            raise RuntimeError("boom")

    with db.transaction() as session:
        assert session.scalars(sa.select(Patient)).all() == []


def _receipts(db) -> int:
    with db.transaction() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(WebhookReceipt))


def test_run_runs_a_use_case_again_after_it_lost_a_race_on_a_unique_key(db):
    now = datetime(2030, 3, 1, 9, 30, tzinfo=UTC)
    with db.transaction() as session:  # the winner of the race
        session.add(WebhookReceipt(sid="SMrace", kind="sms", response_body="[1]", created_at=now))
    calls = []

    def record_once(session, *, sid):
        calls.append(sid)
        # The first run did not see the winner's row (as a snapshot taken before it can miss).
        if len(calls) == 1 or session.get(WebhookReceipt, sid) is None:
            session.add(WebhookReceipt(sid=sid, kind="sms", response_body="[2]",
                                       created_at=now))
            session.flush()
            return "recorded"
        return "seen"

    assert db.run(record_once, sid="SMrace") == "seen"
    assert calls == ["SMrace", "SMrace"] and _receipts(db) == 1


def test_run_gives_up_after_three_lost_races_and_commits_nothing(db):
    now = datetime(2030, 3, 1, 9, 30, tzinfo=UTC)
    with db.transaction() as session:
        session.add(WebhookReceipt(sid="SMrace", kind="sms", response_body="[1]", created_at=now))
    calls = []

    def always_insert(session):
        calls.append(1)
        session.add(WebhookReceipt(sid="SMrace", kind="sms", response_body="[2]", created_at=now))
        session.flush()

    with pytest.raises(exc.IntegrityError):
        db.run(always_insert)
    assert len(calls) == 3 and _receipts(db) == 1


def test_committed_objects_stay_readable_after_the_transaction(db, make_clinic):
    clinic = make_clinic(name="Back Clinic")

    assert clinic.id is not None
    assert clinic.name == "Back Clinic"
    assert [n.phone_e164 for n in clinic.numbers] == ["+16175550100"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_units_of_work_are_serialized(db, make_clinic):
    """Read-then-write from several threads: no "database is locked", no lost update."""
    clinic = make_clinic()
    with db.transaction() as session:
        patient = _patient(clinic)
        session.add(patient)
        session.flush()
        alert = Alert(clinic_id=clinic.id, patient_id=patient.id, kind="triage", level="urgent")
        session.add(alert)
    threads, increments = 4, 25

    def work():
        for _ in range(increments):
            with db.transaction() as session:
                row = session.get(Alert, alert.id)
                row.oncall_sent_count = row.oncall_sent_count + 1

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()

    with db.transaction() as session:
        assert session.get(Alert, alert.id).oncall_sent_count == threads * increments


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()

    assert pragmas == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@db.example/triage",
        "postgres://u:p@db.example/triage",
        "postgresql+psycopg://u:p@db.example/triage",
    ],
)
def test_postgresql_urls_use_psycopg_3(url):
    engine = make_engine(url)  # does not connect

    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
    engine.dispose()


# ---- app: healthz -------------------------------------------------------------------------


def test_healthz_ok(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"database": "ok", "broker": "ok", "oldest_due_seconds": 0,
                                   "spool_dead": 0, "status": "ok"}


def test_healthz_503_when_the_database_is_down(tmp_path):
    app = create_app({"TESTING": True, "ENV": "development",
                      "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/triage"})
    try:
        response = app.test_client().get("/healthz")
    finally:
        get_db(app).dispose()

    assert response.status_code == 503
    assert response.get_json() == {"database": "error", "broker": "ok",
                                   "oldest_due_seconds": "error", "spool_dead": 0,
                                   "status": "error"}


def test_healthz_reports_but_tolerates_a_non_critical_failure(app, client):
    def broken():
        raise ConnectionError("broker down")

    add_check(app, "broker", broken, critical=False)

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"broker": "error", "database": "ok",
                                   "oldest_due_seconds": 0, "spool_dead": 0, "status": "ok"}


# ---- CLI ----------------------------------------------------------------------------------


def test_cli_clinic_create(runner, db):
    result = runner.invoke(
        main,
        [
            "clinic", "create",
            "--name", "Back Clinic",
            "--number", "(617) 555-0100",
            "--number", "+1 617 555 0101",
            "--oncall", "617-555-0199",
            "--timezone", "America/Chicago",
            "--keywords", "pain, back",
            "--twilio-optout",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    clinic_id = int(result.stdout.strip())
    with db.transaction() as session:
        clinic = session.get(Clinic, clinic_id)
        numbers = [n.phone_e164 for n in clinic.numbers]
        audit = session.scalars(sa.select(AuditLog.action)).all()
    assert clinic.name == "Back Clinic"
    assert numbers == ["+16175550100", "+16175550101"]
    assert clinic.phone == "+16175550100"
    assert clinic.oncall_number == "+16175550199"
    assert clinic.timezone == "America/Chicago"
    assert clinic.start_keywords == ["PAIN", "BACK"]
    assert clinic.twilio_optout_handling is True
    assert audit == ["clinic_created"]

    listed = runner.invoke(main, ["clinic", "list"])
    assert listed.exit_code == 0, listed.output
    assert (
        listed.stdout == f"{clinic_id}\tBack Clinic\tAmerica/Chicago\t+16175550100,+16175550101\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--number", "+1 555 123 4567"], "is not a valid phone number"),
        (["--number", "hello"], "is not a phone number"),
        (["--number", "+16175550100", "--name", "x" * 41], "at most 40"),
        (["--number", "+16175550100", "--timezone", "Mars/Olympus"], "unknown timezone"),
        (["--number", "+16175550100", "--keywords", "back pain"], "single word"),
    ],
)
def test_cli_clinic_create_refuses_bad_input_clearly(runner, db, args, message):
    result = runner.invoke(main, ["clinic", "create", "--name", "Back Clinic", *args])

    assert result.exit_code != 0
    assert message in result.output
    with db.transaction() as session:
        assert session.scalars(sa.select(Clinic)).all() == []


def test_cli_clinic_create_refuses_a_number_another_clinic_has(runner, make_clinic):
    make_clinic(numbers=["+16175550100"])

    result = runner.invoke(
        main, ["clinic", "create", "--name", "Other", "--number", "+16175550100"]
    )

    assert result.exit_code != 0
    assert "already belongs to a clinic" in result.output


# ---- configuration, phones, logging -------------------------------------------------------


def test_config_defaults_for_a_laptop(monkeypatch, tmp_path):
    monkeypatch.setattr("service.config.VAR_DIR", tmp_path / "var")

    config = load_config(environ={"ENV": "development"})

    assert config["ENV"] == "development"
    assert config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'var' / 'triage.db'}"
    assert (tmp_path / "var").is_dir()
    assert config["REDIS_URL"] is None
    assert config["BROKER_URL"] == "filesystem://"
    assert config["SIMULATOR_ENABLED"] is True
    assert len(config["SECRET_KEY"]) >= 32
    assert config["SECRET_KEY"] == load_config(environ={"ENV": "development"})["SECRET_KEY"]


def test_config_from_environment_then_overrides():
    environ = {
        "ENV": "production",
        "SECRET_KEY": "s3cret",
        "DATABASE_URL": "postgresql://db/triage",
        "REDIS_URL": "redis://localhost:6379/0",
        "PUBLIC_BASE_URL": "https://triage.example/",
        "TWILIO_ACCOUNT_SID": "AC123",
        "TWILIO_AUTH_TOKEN": "t0ken",
    }

    config = load_config({"TESTING": True, "REDIS_URL": "redis://other:6379/1"}, environ)

    assert config["BROKER_URL"] == "redis://other:6379/1"
    assert config["SIMULATOR_ENABLED"] is False
    assert config["PUBLIC_BASE_URL"] == "https://triage.example"
    assert config["TWILIO_AUTH_TOKEN"] == "t0ken"
    assert config["SESSION_COOKIE_SECURE"] is True
    assert config["TESTING"] is True


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ENV": "production"}, "SECRET_KEY must be set"),
        ({"ENV": "production", "SECRET_KEY": "k", "PUBLIC_BASE_URL": "https://t.example",
          "DATABASE_URL": "postgresql://db/t", "REDIS_URL": "redis://r", "DRY_RUN": "1",
          "SIMULATOR_ENABLED": "1"}, "SIMULATOR"),
        ({"ENV": "staging"}, "ENV must be one of"),
        ({}, "ENV must be set"),
        ({"ENV": "development", "SIMULATOR_ENABLED": "maybe"}, "true or false"),
    ],
)
def test_config_refuses_to_start(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ={"DATABASE_URL": "sqlite://", **environ})


@pytest.mark.parametrize(
    ("typed", "e164"),
    [("(617) 555-0100", "+16175550100"), ("+44 7911 123456", "+447911123456")],
)
def test_normalize_phone(typed, e164):
    assert normalize_phone(typed) == e164


@pytest.mark.parametrize("typed", ["", "123", "not a number", "+1 555 123 4567"])
def test_normalize_phone_refuses(typed):
    with pytest.raises(ValueError):
        normalize_phone(typed)


@pytest.mark.parametrize(
    ("number", "masked"),
    [("+15551234567", "+1******4567"), ("+447911123456", "+4*******3456"), (None, "")],
)
def test_mask_phone(number, masked):
    assert mask_phone(number) == masked
