"""Helpers for the task tests: run tasks through the real worker and wait for everything they
queued, and the answers of their patients. The phone, the answers and reading rows back are
tests.support's."""

from __future__ import annotations

import time

from tests.support.answers import SELF_CARE_EN

TASK_TIMEOUT = 60

# The order the beat's jobs are run in by `run_beat` (the real beat runs them side by side).
BEAT_ORDER = ("tasks.replay_spool", "tasks.dispatch_due_followups", "tasks.tick_due_checkins",
              "tasks.oncall_due", "tasks.send_due_outbox")

# Intake pain 4: the baseline the follow-up outcomes are compared with.
SELF_CARE = {**SELF_CARE_EN, "pain_score": "4"}


def drain(result, timeout: float = TASK_TIMEOUT):
    """Waits for a task and, recursively, for every task it queued; returns its value."""
    value = result.get(timeout=timeout, propagate=True)
    for child in result.children or []:
        drain(child, timeout)
    return value


def run_task(app, name: str, *args, timeout: float = TASK_TIMEOUT):
    return drain(app.send_task(name, args=args), timeout)


def run_beat(app) -> dict[str, object]:
    """One round of the beat's jobs through the worker, each waited for with its children."""
    return {name: run_task(app, name) for name in BEAT_ORDER}


def wait_for(predicate, *, timeout: float = TASK_TIMEOUT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
