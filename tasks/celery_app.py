"""The Celery app: `make_celery(config)`, and `app` for `celery -A tasks.celery_app worker|beat`.

`app` is built on first use from the environment (service.config), so importing this module
connects to nothing. Broker: Redis from REDIS_URL, else kombu's filesystem transport under
var/broker (no server needed). No result backend: tasks record their effects in the database.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from celery import Celery, signals

from service import clock, taskqueue
from service.config import load_config
from service.logs import PhoneMaskingFilter, configure_logging
from tasks.runtime import Runtime

log = logging.getLogger(__name__)

# The beat's jobs, all run every BEAT_INTERVAL_SECONDS (default: every minute).
BEAT_JOBS = {
    "dispatch-due-followups": "tasks.dispatch_due_followups",
    "send-due-outbox": "tasks.send_due_outbox",
    "tick-due-checkins": "tasks.tick_due_checkins",
    "replay-inbound-spool": "tasks.replay_spool",
    "oncall-repeats": "tasks.oncall_due",
    "request-reminder-calls": "tasks.request_reminder_calls",  # tasks/voice.py
    "place-due-calls": "tasks.place_due_calls",
}
TASK_MODULES = ("tasks.jobs", "tasks.voice")


def beat_schedule(interval: float) -> dict[str, dict[str, Any]]:
    # A beat message that waited longer than one interval is dropped: the next one does its work.
    return {name: {"task": task, "schedule": interval,
                   "options": {"expires": max(interval, 10.0)}}
            for name, task in BEAT_JOBS.items()}


def make_celery(config: Mapping[str, Any] | None = None, *, sender=None,
                **overrides: Any) -> Celery:
    """A Celery app for `config` (default: the environment); `sender` replaces the configured
    one (tests pass a TwilioSender on a fake HTTP client); `overrides` are Celery settings."""
    config = dict(load_config() if config is None else config)
    app = Celery("triage")
    app.conf.update(
        taskqueue.broker_settings(config),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        enable_utc=True,
        timezone="UTC",
        broker_connection_retry_on_startup=True,
        task_time_limit=300,
        task_soft_time_limit=240,
        worker_hijack_root_logger=True,
        beat_schedule=beat_schedule(float(config.get("BEAT_INTERVAL_SECONDS") or 60.0)),
        imports=TASK_MODULES,
    )
    app.conf.update(overrides)
    app.triage = Runtime(config, sender=sender)
    import tasks.jobs  # noqa: F401  (registers the shared tasks)
    import tasks.voice  # noqa: F401

    return app


_app: Celery | None = None


def __getattr__(name: str) -> Celery:
    # `celery -A tasks.celery_app` looks up `app` (then `celery`): built here on first use.
    global _app
    if name in ("app", "celery"):
        if _app is None:
            _app = make_celery()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _mask_phones(logger=None, loglevel=None, **_kwargs) -> None:
    """Celery's own handlers get the phone-number mask too."""
    for handler in (logger.handlers if logger is not None else []):
        if not any(isinstance(f, PhoneMaskingFilter) for f in handler.filters):
            handler.addFilter(PhoneMaskingFilter())
    configure_logging(logging.getLevelName(loglevel) if isinstance(loglevel, int)
                      else (loglevel or "INFO"))
    # The Twilio library logs request parameters (the patient's number) at INFO.
    logging.getLogger("twilio").setLevel(logging.WARNING)


@signals.worker_ready.connect
@signals.beat_init.connect
def _announce_clock(**_kwargs) -> None:
    if clock.is_moved():
        log.warning("the clock is moved by %s/%s: now is %s", clock.FAKE_NOW, clock.OFFSET_DAYS,
                    clock.now().isoformat(timespec="seconds"))
