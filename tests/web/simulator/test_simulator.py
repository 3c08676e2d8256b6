"""The web simulator page: loads, and completes a check-in through the same use case as SMS."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
import sqlalchemy as sa

from service.store.models import Alert, CheckIn, Outbox
from tests.conftest import production

PATIENT = "+16175550199"


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(v for k, v in attrs if k == "id")


@pytest.fixture
def clinic(make_clinic):
    return make_clinic(name="Elm Clinic")


def send(client, clinic, body):
    number = clinic.numbers[0].phone_e164
    r = client.post("/simulator/api/send", json={"from": PATIENT, "to": number, "body": body})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["replies"]


def test_page_loads_with_the_phone_and_the_clinic_number(client, clinic):
    r = client.get("/simulator/")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    parser = _Ids()
    parser.feed(page)
    assert {"thread", "compose", "body", "from", "to"} <= parser.ids
    assert clinic.numbers[0].phone_e164 in page
    assert client.get("/simulator/static/phone.js").status_code == 200


def test_a_whole_check_in_through_the_simulator(client, clinic, db):
    replies = send(client, clinic, "PAIN")
    assert "not a diagnosis" in replies[0]
    assert replies[1].startswith("Do you have chest pain")
    answers = ["no"] * 8 + ["35", "2 weeks", "no", "4", "no", "yes", "no", "no", "no"]
    for text in answers:
        replies = send(client, clinic, text)
    assert "no warning signs" in replies[-1]
    thread = client.get("/simulator/api/messages", query_string={
        "from": PATIENT, "to": clinic.numbers[0].phone_e164}).get_json()
    bodies = [m["body"] for m in thread["messages"]]
    assert bodies[0] == "PAIN" and "no warning signs" in bodies[-1]
    with db.transaction() as session:
        checkin = session.execute(sa.select(CheckIn)).scalar_one()
        assert (checkin.status, checkin.level, checkin.reasons) == ("completed", "self_care",
                                                                     ["MECHANICAL"])
        assert session.execute(sa.select(sa.func.count(Alert.id))).scalar() == 0


def test_an_emergency_answer_in_the_simulator_raises_an_alert(client, clinic, db):
    send(client, clinic, "PAIN")
    replies = send(client, clinic, "yes")
    assert "Call 911" in replies[-1]
    with db.transaction() as session:
        alert = session.execute(sa.select(Alert)).scalar_one()
        assert (alert.level, alert.reasons) == ("emergency", ["CHEST", "INCOMPLETE"])
        assert session.execute(sa.select(sa.func.count(Outbox.id))).scalar() == 0


def test_bad_numbers_get_a_clear_error(client, clinic):
    r = client.post("/simulator/api/send", json={"from": "12", "to": "x", "body": "hi"})
    assert r.status_code == 400
    assert "phone number" in r.get_json()["error"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_off_in_production(make_app):
    app = make_app(**production())
    assert app.test_client().get("/simulator/").status_code == 404
