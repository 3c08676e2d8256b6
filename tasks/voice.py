"""Voice tasks: the follow-up's 48-hour no-reply step (reminder calls) and placing due calls.

Thin like the other tasks: ids in, one service function each (`service.voice.calls`); every
call attempt is a row first, so a lost task only delays a call until the next beat.
Beat entries (tasks.celery_app.BEAT_JOBS), with "tasks.voice" among the app's imports:
    "request-reminder-calls": "tasks.request_reminder_calls",
    "place-due-calls": "tasks.place_due_calls",
"""

from __future__ import annotations

import logging

from celery import shared_task

from service.voice import calls
from service.voice.callers import caller_from_config
from tasks.jobs import RETRY

log = logging.getLogger("tasks")


def _caller(rt):
    # A runtime may carry its own caller (a TwilioCaller on a fake transport in tests).
    return getattr(rt, "caller", None) or caller_from_config(rt.config)


@shared_task(bind=True, name="tasks.request_reminder_calls")
def request_reminder_calls(self) -> int:
    """Beat: writes a reminder call for each follow-up texted 48 hours ago without a reply."""
    rt = self.app.triage
    with rt.db.transaction() as session:
        ids = calls.request_due_reminder_calls(session, rt.now())
    if ids:
        log.info("request_reminder_calls calls=%d", len(ids))
    return len(ids)


@shared_task(bind=True, name="tasks.place_due_calls")
def place_due_calls(self) -> int:
    """Beat: queues one task per call attempt that is due (in the patient's allowed hours)."""
    rt = self.app.triage
    with rt.db.transaction() as session:
        ids = calls.due_call_ids(session, rt.now())
    for call_id in ids:
        self.app.send_task("tasks.place_call", args=(call_id,))
    return len(ids)


@shared_task(bind=True, name="tasks.place_call", **RETRY)
def place_call(self, call_id: int) -> str:
    rt = self.app.triage
    outcome = calls.place_call(rt.db, call_id, _caller(rt), rt.now())
    log.log(logging.WARNING if outcome == "failed" else logging.INFO,
            "place_call call_id=%s outcome=%s", call_id, outcome)
    return outcome
