"""The Celery app's settings and beat schedule, the movable clock, the layering rule (service
never imports tasks), `triage followups` and what /healthz says about the backlog."""

from __future__ import annotations

import ast
import importlib
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from service import clock as service_clock
from service import taskqueue
from service.cli import main
from service.config import ConfigError, load_config
from service.store.models import FollowUp
from tests.support.answers import intake_answers
from tests.support.phones import Phone
from tests.tasks.helpers import SELF_CARE

ROOT = Path(__file__).resolve().parents[2]


def test_celery_app_settings_and_beat_schedule(tmp_path):
    from tasks.celery_app import BEAT_JOBS, make_celery

    app = make_celery(load_config({"BROKER_DIR": str(tmp_path / "b")}, environ={"ENV": "development"}))
    conf = app.conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost,
            conf.worker_prefetch_multiplier, conf.task_ignore_result) == (True, True, 1, True)
    assert conf.broker_url == "filesystem://localhost//"
    options = conf.broker_transport_options
    assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path / "b/queue")
    assert (tmp_path / "b/queue").is_dir() and (tmp_path / "b/control").is_dir()
    assert {entry["task"] for entry in conf.beat_schedule.values()} == set(BEAT_JOBS.values())
    assert {entry["schedule"] for entry in conf.beat_schedule.values()} == {60.0}
    assert set(BEAT_JOBS.values()) <= set(app.tasks)
    # No countdown or ETA longer than a few minutes: only the retry backoff, capped at 5 min.
    assert {app.tasks[name].retry_backoff_max for name in app.tasks
            if name.startswith("tasks.") and getattr(app.tasks[name], "autoretry_for", ())
            } == {300}


def test_redis_broker_settings_carry_the_key_prefix():
    settings = taskqueue.broker_settings(load_config(
        {"REDIS_URL": "redis://127.0.0.1:6379/11", "REDIS_KEY_PREFIX": "x:"},
        environ={"ENV": "development"}))
    assert settings["broker_url"] == "redis://127.0.0.1:6379/11"
    assert settings["broker_transport_options"]["global_keyprefix"] == "x:"


def test_the_module_level_app_is_built_on_first_use(monkeypatch, tmp_path):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path / "broker"))
    monkeypatch.setenv("ENV", "development")
    sys.modules.pop("tasks.celery_app", None)
    module = importlib.import_module("tasks.celery_app")
    assert module._app is None  # importing connects to nothing and builds nothing
    assert module.app is module.celery is module._app
    assert module.app.conf.broker_transport_options["data_folder_in"].startswith(str(tmp_path))


def test_service_never_imports_tasks():
    offenders = []
    for path in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "tasks"]
    assert offenders == []


def test_config_of_sending_and_oncall():
    config = load_config(environ={"ENV": "development"})
    assert (config["SEND_RATE_PER_SECOND"], config["ONCALL_MAX_REPEATS"],
            config["SEND_MAX_ATTEMPTS"], config["BEAT_INTERVAL_SECONDS"]) == (1.0, 4, 6, 60.0)
    config = load_config(environ={"ENV": "development", "SEND_RATE_PER_SECOND": "2.5",
                                  "ONCALL_MAX_REPEATS": "0"})
    assert (config["SEND_RATE_PER_SECOND"], config["ONCALL_MAX_REPEATS"]) == (2.5, 0)
    with pytest.raises(ConfigError, match="SEND_RATE_PER_SECOND"):
        load_config(environ={"ENV": "development", "SEND_RATE_PER_SECOND": "fast"})
    with pytest.raises(ConfigError, match="ONCALL_MAX_REPEATS"):
        load_config(environ={"ENV": "development", "ONCALL_MAX_REPEATS": "-1"})
    assert load_config(environ={"ENV": "production", "SECRET_KEY": "k", "DRY_RUN": "1",
                                "PUBLIC_BASE_URL": "https://t.example", "REDIS_URL": "redis://r",
                                "DATABASE_URL": "postgresql://db/t",
                                "TWILIO_API_BASE": "http://x"})["TWILIO_API_BASE"] is None


def test_the_clock_moves_only_outside_production(monkeypatch):
    monkeypatch.setenv("TRIAGE_FAKE_NOW", "2026-04-01T12:00:00+00:00")
    assert service_clock.now() == datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    monkeypatch.delenv("TRIAGE_FAKE_NOW")
    monkeypatch.setenv("TRIAGE_CLOCK_OFFSET_DAYS", "29")
    moved = service_clock.now() - datetime.now(UTC)
    assert timedelta(days=29) - timedelta(seconds=5) < moved <= timedelta(days=29)
    monkeypatch.setenv("ENV", "production")
    assert abs(service_clock.now() - datetime.now(UTC)) < timedelta(seconds=5)
    assert service_clock.is_moved() is False


@pytest.fixture
def clinic(make_clinic):
    return make_clinic(name="Ops Clinic", numbers=["+16175550108"])


@pytest.mark.postgres
def test_triage_followups_and_healthz_report_the_backlog(app, client, clinic, clock, db):
    clock.set(datetime(2026, 5, 4, 14, 0, tzinfo=UTC))
    Phone(client, "+16175550155", clinic.numbers[0].phone_e164).conversation(
        ["PAIN", *intake_answers(SELF_CARE)])
    assert client.get("/healthz").get_json() == {"database": "ok", "broker": "ok",
                                                 "oldest_due_seconds": 0, "spool_dead": 0,
                                                 "status": "ok"}

    clock.set(datetime(2026, 6, 1, 15, 30, tzinfo=UTC))  # day 28 plus 90 minutes
    body = client.get("/healthz").get_json()
    assert body["oldest_due_seconds"] == 5400 and body["status"] == "ok"
    result = app.test_cli_runner().invoke(main, ["followups"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("due 1\tpending 1\tfailed 0\toldest_due_seconds 5400")
    assert lines[1] == "id\tpatient\tepisode\tkind\tstatus\tdue_at\tattempts"
    assert lines[2].split("\t")[3:6] == ["first", "scheduled", "2026-06-01T14:00+00:00"]
    assert "+1617" not in result.output

    with db.transaction() as session:
        session.execute(sa.update(FollowUp).where(FollowUp.kind == "first")
                        .values(status="paused"))
    result = app.test_cli_runner().invoke(main, ["followups", "--show", "failed"])
    assert result.output.splitlines()[0].startswith("due 0\tpending 1\tfailed 1")
    assert result.output.splitlines()[2].split("\t")[3:5] == ["first", "paused"]


def test_healthz_reports_an_unreachable_broker_without_failing(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["broker"] == "error"
