"""API test helpers: tokens, an authenticated client, and patients driven through real
conversations with the same use case the SMS webhook calls."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from flows import engine
from flows.loader import get_flow
from service.accounts import api_tokens
from service.conversations import checkins, inbound
from service.store import Database
from service.store.models import CheckIn, Clinic, FollowUp, Patient

API = "/api/v1"
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 10:00 in New York: inside allowed hours

# What a patient types, per answer field; anything not listed is answered "no".
SELF_CARE = {"age_years": "45", "duration_days": "2 weeks", "pain_score": "3",
             "relieved_by_rest": "yes"}
SOON_NIGHT_PAIN = {**SELF_CARE, "night_pain": "yes"}
EMERGENCY_WEAKNESS = {"limb_weakness": "yes"}
FOLLOWUP_SAME = {"status": "3", "pain_score": "4"}
FOLLOWUP_GONE = {"status": "1", "pain_score": "0"}

_phones = itertools.count(2000)


def new_phone() -> str:
    return f"+1617555{next(_phones):04d}"


@dataclass
class Api:
    """The Flask test client with a bearer token."""

    client: Any
    token: str | None

    def _headers(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        out = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        out.update(headers or {})
        return out

    def get(self, path: str, headers=None, **kw):
        return self.client.get(API + path, headers=self._headers(headers), **kw)

    def post(self, path: str, headers=None, **kw):
        return self.client.post(API + path, headers=self._headers(headers), **kw)

    def delete(self, path: str, headers=None, **kw):
        return self.client.delete(API + path, headers=self._headers(headers), **kw)


def error_of(response, status: int) -> dict[str, str]:
    """The JSON error of a response, after checking its status and shape."""
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def clinic(make_clinic) -> Clinic:
    return make_clinic()


@pytest.fixture
def make_token(db: Database) -> Callable[..., str]:
    def make(clinic_id: int, *, read_only: bool = False, name: str = "test system") -> str:
        with db.transaction() as session:
            _row, token = api_tokens.create_token(session, clinic_id=clinic_id, name=name,
                                                  read_only=read_only, now=NOW)
        return token

    return make


@pytest.fixture
def api(client, clinic, make_token) -> Api:
    return Api(client, make_token(clinic.id))


@pytest.fixture
def enroll(api: Api) -> Callable[..., dict]:
    """enroll(**fields) -> the patient as the API returns it (201 checked)."""

    def make(**fields: Any) -> dict:
        fields.setdefault("phone", new_phone())
        response = api.post("/patients", json=fields)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    return make


class Patients:
    """Drives a patient's side of the conversation through inbound.handle_inbound_sms."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._sids = itertools.count(1)

    def text(self, clinic: Clinic, phone: str, body: str, now: datetime = NOW) -> list[str]:
        with self.db.transaction() as session:
            result = inbound.handle_inbound_sms(
                session, to=clinic.numbers[0].phone_e164, from_=phone, body=body,
                sid=f"SM{next(self._sids):032x}", now=now)
        return result.replies

    def answer(self, clinic: Clinic, phone: str, answers: Mapping[str, str],
               now: datetime = NOW, max_turns: int = 40) -> None:
        """Answers the active check-in's questions until it ends."""
        for _ in range(max_turns):
            field = self.current_field(clinic, phone)
            if field is None:
                return
            self.text(clinic, phone, answers.get(field, "no"), now)
        raise AssertionError("the check-in did not end")

    def current_field(self, clinic: Clinic, phone: str) -> str | None:
        with self.db.transaction() as session:
            checkin = session.execute(
                sa.select(CheckIn).join(Patient, CheckIn.patient_id == Patient.id).where(
                    Patient.clinic_id == clinic.id, Patient.phone_e164 == phone,
                    CheckIn.status == "active")).scalar_one_or_none()
            if checkin is None:
                return None
            node = engine.current_question(get_flow(checkin.flow_id, checkin.flow_version),
                                           checkin.state)
            return node.field if node is not None else None

    def complete_intake(self, clinic: Clinic, phone: str, answers: Mapping[str, str],
                        now: datetime = NOW) -> None:
        """Consent (YES) and a whole intake."""
        self.text(clinic, phone, "YES", now)
        self.answer(clinic, phone, answers, now)

    def run_followup(self, clinic: Clinic, patient_id: int, kind: str,
                     answers: Mapping[str, str]) -> datetime:
        """Starts the episode's `kind` follow-up when due and answers it; returns that time."""
        with self.db.transaction() as session:
            followup = session.execute(sa.select(FollowUp).where(
                FollowUp.patient_id == patient_id, FollowUp.kind == kind,
                FollowUp.status == "scheduled")).scalar_one()
            when = followup.due_at
            assert checkins.start_followup(session, followup, when) == "started"
            phone = followup.patient.phone_e164
        self.answer(clinic, phone, answers, when)
        return when


@pytest.fixture
def patients(db: Database) -> Patients:
    return Patients(db)
