"""Test helpers for the Twilio webhooks: a patient's phone that signs requests as Twilio does
(`RequestValidator.compute_signature` on PUBLIC_BASE_URL) and reads the TwiML reply as XML."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from flows.loader import get_flow
from service.store import Database
from service.store.models import (
    Alert,
    AuditLog,
    CheckIn,
    Episode,
    FollowUp,
    Message,
    Outbox,
    Patient,
    WebhookReceipt,
)

AUTH_TOKEN = "test-twilio-auth-token"
ACCOUNT_SID = "AC" + "0" * 32
# What Twilio sees; the test client talks to http://localhost, as an app behind a proxy does.
PUBLIC_BASE_URL = "https://triage.example.org"

SMS_CONFIG = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "PUBLIC_BASE_URL": PUBLIC_BASE_URL}

# Answers that give each level. Keys are answer fields; values are what the patient types.
SELF_CARE_EN = {
    "chest_symptoms": "no", "limb_weakness": "no", "bowel_bladder": "no",
    "cancer_history": "no", "numbness_tingling": "no", "weight_loss": "no",
    "fever_chills": "no", "night_sweats": "no", "age_years": "45", "duration_days": "2 weeks",
    "injury_before": "no", "pain_score": "3", "constant": "no", "relieved_by_rest": "yes",
    "progressive": "no", "treatment_no_relief": "no", "night_pain": "no",
}  # fmt: skip
SELF_CARE_ES = {
    **{field: "no" for field in SELF_CARE_EN},
    "age_years": "45", "duration_days": "2 semanas", "pain_score": "3", "relieved_by_rest": "sí",
}  # fmt: skip
FOLLOWUP_CLEAR_EN = {
    "status": "2", "pain_score": "2", "limb_weakness": "no", "bowel_bladder": "no",
    "numbness_tingling": "no", "chest_symptoms": "no", "weight_loss": "no",
    "fever_chills": "no", "night_sweats": "no", "night_pain": "no",
}  # fmt: skip


def new_sid(prefix: str = "SM") -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + uuid.uuid4().hex


def sign(url: str, form: Mapping[str, str], token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, dict(form))


def twiml_messages(response) -> list[str]:
    """The texts of a TwiML <Response> of <Message>s; fails on anything else."""
    assert response.status_code == 200, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.get_data())
    assert root.tag == "Response", root.tag
    texts = []
    for child in root:
        assert child.tag == "Message", ET.tostring(root)
        assert len(child) == 0, ET.tostring(child)  # plain text, no <Media> or <Body> children
        texts.append(child.text or "")
    return texts


def intake_answers(answers: Mapping[str, str], *, skip: Sequence[str] = (),
                   stop_after: str | None = None) -> list[str]:
    """The patient's replies to the intake questions, in the flow's own order."""
    return _answers("intake", answers, skip, stop_after)


def followup_answers(answers: Mapping[str, str], *, stop_after: str | None = None) -> list[str]:
    return _answers("followup", answers, (), stop_after)


def _answers(flow_id, answers, skip, stop_after) -> list[str]:
    replies = []
    for node in get_flow(flow_id).questions:
        if node.field in skip:
            continue
        replies.append(answers[node.field])
        if node.field == stop_after:
            break
    return replies


class Phone:
    """A patient's phone texting a clinic's Twilio number through the webhook."""

    def __init__(self, client, number: str, clinic_number: str, *,
                 base_url: str = PUBLIC_BASE_URL, token: str = AUTH_TOKEN) -> None:
        self.client, self.number, self.clinic_number = client, number, clinic_number
        self.base_url, self.token = base_url, token
        self.last_sid: str | None = None

    def form(self, body: str | None, *, sid: str | None = None, **fields: str) -> dict[str, str]:
        form = {
            "MessageSid": sid or new_sid(), "AccountSid": ACCOUNT_SID, "From": self.number,
            "To": self.clinic_number, "NumMedia": "0", "NumSegments": "1",
            "SmsStatus": "received", "ApiVersion": "2010-04-01",
        }
        if body is not None:
            form["Body"] = body
        form.update(fields)
        return form

    def post(self, form: Mapping[str, str], *, path: str = "/twilio/sms",
             signature: str | None = None, headers: Mapping[str, str] | None = None):
        if signature is None:
            signature = sign(self.base_url + path, form, self.token)
        return self.client.post(path, data=dict(form),
                                headers={"X-Twilio-Signature": signature, **(headers or {})})

    def send(self, body: str | None, *, sid: str | None = None, **fields: str):
        """Posts one inbound text; returns the raw response."""
        form = self.form(body, sid=sid, **fields)
        self.last_sid = form["MessageSid"]
        return self.post(form)

    def text(self, body: str | None, *, sid: str | None = None, **fields: str) -> list[str]:
        """Texts the clinic; returns the reply texts."""
        return twiml_messages(self.send(body, sid=sid, **fields))

    def conversation(self, bodies: Sequence[str]) -> list[list[str]]:
        return [self.text(body) for body in bodies]

    def status(self, message_sid: str, status: str, *, error_code: str | None = None):
        form = {"MessageSid": message_sid, "MessageStatus": status, "AccountSid": ACCOUNT_SID,
                "To": self.number, "From": self.clinic_number, "ApiVersion": "2010-04-01"}
        if error_code:
            form["ErrorCode"] = error_code
        return self.post(form, path="/twilio/status")


COUNTED = {
    "patients": Patient, "episodes": Episode, "checkins": CheckIn, "messages": Message,
    "outbox": Outbox, "alerts": Alert, "followups": FollowUp, "receipts": WebhookReceipt,
    "audit": AuditLog,
}


def counts(db: Database) -> dict[str, int]:
    """Rows per table: what "no second effect" is measured with."""
    with db.transaction() as session:
        return {name: session.scalar(sa.select(sa.func.count()).select_from(model))
                for name, model in COUNTED.items()}


def rows(db: Database, model, *where, order_by=None) -> list:
    """Detached rows of `model` matching `where`, in id order."""
    with db.transaction() as session:
        query = sa.select(model).where(*where).order_by(order_by if order_by is not None
                                                        else model.__mapper__.primary_key[0])
        return list(session.scalars(query))
