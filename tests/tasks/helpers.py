"""Helpers for the task tests: run tasks through the real worker and wait for everything they
queued, text the clinic through the signed webhook, and read rows back."""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from flows.loader import get_flow

WEBHOOK_TOKEN = "test-twilio-auth-token"
PUBLIC_BASE_URL = "https://triage.example.org"
TASK_TIMEOUT = 60

# The order the beat's jobs are run in by `run_beat` (the real beat runs them side by side).
BEAT_ORDER = ("tasks.replay_spool", "tasks.dispatch_due_followups", "tasks.tick_due_checkins",
              "tasks.oncall_due", "tasks.send_due_outbox")

SELF_CARE = {
    "chest_symptoms": "no", "limb_weakness": "no", "bowel_bladder": "no",
    "cancer_history": "no", "numbness_tingling": "no", "weight_loss": "no",
    "fever_chills": "no", "night_sweats": "no", "age_years": "45", "duration_days": "2 weeks",
    "injury_before": "no", "pain_score": "4", "constant": "no", "relieved_by_rest": "yes",
    "progressive": "no", "treatment_no_relief": "no", "night_pain": "no",
}  # fmt: skip
FOLLOWUP_NO_FLAGS = {
    "limb_weakness": "no", "bowel_bladder": "no", "numbness_tingling": "no",
    "chest_symptoms": "no", "weight_loss": "no", "fever_chills": "no", "night_sweats": "no",
    "night_pain": "no",
}  # fmt: skip


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


def intake_replies(answers: Mapping[str, str]) -> list[str]:
    return [answers[node.field] for node in get_flow("intake").questions]


def followup_replies(answers: Mapping[str, str]) -> list[str]:
    """Replies in the follow-up flow's order; stops at the first field not given."""
    replies = []
    for node in get_flow("followup").questions:
        if node.field not in answers:
            break
        replies.append(answers[node.field])
    return replies


class Phone:
    """A patient's phone texting the clinic's Twilio number through the signed webhook."""

    def __init__(self, client, number: str, clinic_number: str) -> None:
        self.client, self.number, self.clinic_number = client, number, clinic_number

    def _post(self, path: str, form: dict[str, str]):
        signature = RequestValidator(WEBHOOK_TOKEN).compute_signature(PUBLIC_BASE_URL + path,
                                                                      form)
        response = self.client.post(path, data=form, headers={"X-Twilio-Signature": signature})
        assert response.status_code in (200, 204), response.get_data(as_text=True)
        return response

    def text(self, body: str) -> list[str]:
        form = {"MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": "AC" + "0" * 32,
                "From": self.number, "To": self.clinic_number, "Body": body,
                "NumMedia": "0", "ApiVersion": "2010-04-01"}
        root = ET.fromstring(self._post("/twilio/sms", form).get_data())
        assert root.tag == "Response"
        return [child.text or "" for child in root if child.tag == "Message"]

    def conversation(self, bodies: Sequence[str]) -> list[list[str]]:
        return [self.text(body) for body in bodies]

    def status(self, message_sid: str, status: str, error_code: int | None = None):
        form = {"MessageSid": message_sid, "MessageStatus": status,
                "AccountSid": "AC" + "0" * 32, "To": self.number, "From": self.clinic_number}
        if error_code:
            form["ErrorCode"] = str(error_code)
        return self._post("/twilio/status", form)


def rows(db, model, *where, order_by=None) -> list:
    with db.transaction() as session:
        query = sa.select(model).where(*where).order_by(
            order_by if order_by is not None else model.__mapper__.primary_key[0])
        return list(session.scalars(query))


def one(db, model, *where):
    found = rows(db, model, *where)
    assert len(found) == 1, found
    return found[0]
