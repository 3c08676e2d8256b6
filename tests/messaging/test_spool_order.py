"""After an outage, a patient's new texts queue behind their spooled ones: the conversation gets
the answers in the order they were sent (found by tests/e2e/test_faults.py, issue 7)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy.engine import make_url

from service.conversations import inbound
from service.store.models import CheckIn, Message, Outbox, Patient
from tests.support.db import rows
from tests.support.phones import WEBHOOK_CONFIG, Phone, twiml_messages
from tests.web.dashboard.helpers import StaffClient, make_staff

PATIENT = "+16175550152"
OTHER_PATIENT = "+16175550153"


@pytest.fixture
def app_config(app_config, database_url):
    return {**app_config, **WEBHOOK_CONFIG}


@pytest.fixture
def dead_database_url(database_url, tmp_path) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'no-such-dir' / 'triage.db'}"
    return "postgresql://postgres@127.0.0.1:1/triage"  # nothing listens on port 1


def db_found_away_long_ago(app) -> None:
    """As if DB_AWAY_FOR_S had passed since the web last found the database away (until then
    every web process of the machine spools at once)."""
    marker = app.extensions["db_away"].marker
    if marker.exists():
        os.utime(marker, (time.time() - 60, time.time() - 60))


def test_texts_after_the_outage_wait_behind_the_spooled_ones(make_app, make_clinic, db,
                                                             dead_database_url, tmp_path):
    clinic = make_clinic()
    number = clinic.numbers[0].phone_e164
    spool_dir = str(tmp_path / "spool")
    down = make_app(DATABASE_URL=dead_database_url, SPOOL_DIR=spool_dir)
    up = make_app(SPOOL_DIR=spool_dir)
    holding = inbound.text_for_holding()

    assert twiml_messages(Phone(down.test_client(), PATIENT, number).send("PAIN")) == [holding]
    db_found_away_long_ago(down)
    # The database is back, but the spool was not replayed yet.
    patient = Phone(up.test_client(), PATIENT, number)
    assert twiml_messages(patient.send("no")) == [holding]
    other = Phone(up.test_client(), OTHER_PATIENT, number)
    assert twiml_messages(other.send("PAIN")) != [holding]  # nobody else waits

    spool = up.extensions["spool"]
    assert spool.holds(PATIENT) and not spool.holds(OTHER_PATIENT)
    assert [m.body for m in rows(db, Message, Message.direction == "in")] == ["PAIN"]
    assert spool.replay(lambda record: inbound.replay_spooled(db, record, datetime.now(UTC))) == 2
    assert not spool.holds(PATIENT)
    mine = rows(db, Message, Message.direction == "in", Message.from_number == PATIENT,
                order_by=Message.id)
    assert [m.body for m in mine] == ["PAIN", "no"]
    # Once the spool is empty the patient's texts are answered at once again.
    assert twiml_messages(patient.send("no")) != [holding]



# ---- one order across Redis and the file; deployments apart; no reply after an opt-out -------
# (issue 14)

SHARED_REDIS = f"redis://127.0.0.1:6379/{int(os.environ.get('TEST_SPOOL_REDIS_DB', '14'))}"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def prefix():
    """A deployment's own key prefix on the shared Redis; its keys are gone afterwards."""
    name = f"test-{uuid.uuid4().hex[:8]}:"
    yield name
    client = redis.Redis.from_url(SHARED_REDIS)
    keys = list(client.scan_iter(f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


def up_and_down(make_app, dead_database_url, tmp_path, prefix, redis_url):
    """One deployment's web app twice, sharing its spool: with its database, and while the
    database is away."""
    common = {"SPOOL_DIR": str(tmp_path / "spool"), "REDIS_KEY_PREFIX": prefix,
              "REDIS_URL": redis_url}
    return make_app(**common), make_app(DATABASE_URL=dead_database_url, **common)


def replay(app, db) -> int:
    """What tasks.replay_spool does: each spooled text replayed, the spool told what it did
    to its sender's opt-out."""
    spool = app.extensions["spool"]
    return spool.replay(
        lambda record: inbound.replay_spooled(db, record, datetime.now(UTC), spool=spool))


def test_redis_unreachable_between_two_texts_keeps_their_order(
        make_app, make_clinic, db, dead_database_url, tmp_path, prefix):
    clinic = make_clinic()
    number = clinic.numbers[0].phone_e164
    spool_dir = str(tmp_path / "spool")
    common = {"SPOOL_DIR": spool_dir, "REDIS_KEY_PREFIX": prefix}
    with_redis = make_app(DATABASE_URL=dead_database_url, REDIS_URL=SHARED_REDIS, **common)
    without_redis = make_app(DATABASE_URL=dead_database_url, REDIS_URL=UNREACHABLE_REDIS,
                             **common)
    holding = inbound.text_for_holding()
    phone = Phone(with_redis.test_client(), PATIENT, number)
    assert twiml_messages(phone.send("PAIN")) == [holding]
    assert twiml_messages(phone.send("no")) == [holding]  # chest symptoms: no
    # Redis is now unreachable: the third text (new weakness: yes) goes to the file.
    later = Phone(without_redis.test_client(), PATIENT, number)
    assert twiml_messages(later.send("yes")) == [holding]
    client = redis.Redis.from_url(SHARED_REDIS)
    assert client.llen(f"{prefix}triage:spool:inbound") == 2
    assert len(without_redis.extensions["spool"].path.read_text().splitlines()) == 1

    # While Redis is away it may hold earlier texts: the file is not replayed ahead of them,
    # and a sender's new text waits behind them even with the database back.
    up_without_redis = make_app(REDIS_URL=UNREACHABLE_REDIS, **common)
    assert replay(up_without_redis, db) == 0
    assert up_without_redis.extensions["spool"].holds(PATIENT)
    assert rows(db, Message) == []

    up = make_app(REDIS_URL=SHARED_REDIS, **common)
    assert replay(up, db) == 3
    (checkin,) = rows(db, CheckIn)
    assert checkin.answers["chest_symptoms"] is False
    assert checkin.answers["limb_weakness"] is True  # the emergency flag, in its place
    assert [m.body for m in rows(db, Message, Message.direction == "in",
                                 order_by=Message.id)] == ["PAIN", "no", "yes"]
    assert up.extensions["spool"].pending() == 0
    assert not up.extensions["spool"].redis_marker.exists()
    assert not up_without_redis.extensions["spool"].holds(PATIENT)  # known empty again
    client.close()


def test_a_replay_never_takes_another_deployments_texts(make_app, make_clinic, db,
                                                        dead_database_url, tmp_path, prefix):
    clinic = make_clinic()
    number = clinic.numbers[0].phone_e164
    spool_dir = str(tmp_path / "spool")  # one machine, one SPOOL_DIR, one Redis
    a_down = make_app(DATABASE_URL=dead_database_url, REDIS_URL=SHARED_REDIS,
                      REDIS_KEY_PREFIX=prefix, SPOOL_DIR=spool_dir)
    b_down = make_app(DATABASE_URL=dead_database_url, REDIS_URL=UNREACHABLE_REDIS,
                      REDIS_KEY_PREFIX=prefix + "b:", SPOOL_DIR=spool_dir)
    Phone(a_down.test_client(), PATIENT, number).send("PAIN")  # to Redis, under A's prefix
    Phone(b_down.test_client(), OTHER_PATIENT, number).send("PAIN")  # to B's file

    b = make_app(REDIS_URL=SHARED_REDIS, REDIS_KEY_PREFIX=prefix + "b:", SPOOL_DIR=spool_dir)
    assert replay(b, db) == 1
    assert [m.from_number for m in rows(db, Message, Message.direction == "in")] == [
        OTHER_PATIENT]
    a = make_app(REDIS_URL=SHARED_REDIS, REDIS_KEY_PREFIX=prefix, SPOOL_DIR=spool_dir)
    assert a.extensions["spool"].pending() == 1  # A's text is still A's
    assert replay(a, db) == 1
    assert {m.from_number for m in rows(db, Message, Message.direction == "in")} == {
        PATIENT, OTHER_PATIENT}


@pytest.mark.parametrize("redis_url", [None, SHARED_REDIS])
def test_no_holding_reply_to_an_opted_out_patient_during_an_outage(
        make_app, make_clinic, db, dead_database_url, tmp_path, prefix, redis_url):
    clinic = make_clinic()
    number = clinic.numbers[0].phone_e164
    up, down = up_and_down(make_app, dead_database_url, tmp_path, prefix, redis_url)
    holding = inbound.text_for_holding()
    Phone(up.test_client(), PATIENT, number).send("PAIN")
    assert twiml_messages(Phone(up.test_client(), PATIENT, number).send("STOP")) != []

    # The database is away: the opted-out patient's texts are spooled and get no reply.
    assert twiml_messages(Phone(down.test_client(), PATIENT, number).send("hello?")) == []
    # An opt-out sent during the outage gets no holding reply either (its one confirmation
    # comes with the replay).
    assert twiml_messages(Phone(down.test_client(), OTHER_PATIENT, number).send("stop")) == []
    assert down.extensions["spool"].pending() == 2
    db_found_away_long_ago(down)
    assert replay(up, db) == 2
    confirm = [o for o in rows(db, Outbox) if o.to_number == OTHER_PATIENT]
    assert len(confirm) == 1 and confirm[0].kind == "optout_confirm"

    # Back in: the holding reply is theirs again.
    twiml_messages(Phone(up.test_client(), PATIENT, number).send("START"))
    assert twiml_messages(Phone(down.test_client(), PATIENT, number).send("hi")) == [holding]


@pytest.mark.parametrize("redis_url", [None, SHARED_REDIS])
def test_after_a_stop_sent_during_an_outage_the_next_texts_get_no_holding_reply_either(
        make_app, make_clinic, db, dead_database_url, tmp_path, prefix, redis_url):
    """CLINICAL.md §7: one confirmation at most, then silence until START. The STOP and what
    follows it are all spooled: nothing but the replay's one confirmation reaches them."""
    clinic = make_clinic()
    number = clinic.numbers[0].phone_e164
    up, down = up_and_down(make_app, dead_database_url, tmp_path, prefix, redis_url)
    Phone(up.test_client(), PATIENT, number).send("PAIN")

    texting = Phone(down.test_client(), PATIENT, number)
    assert twiml_messages(texting.send("stop texting me")) == []
    assert twiml_messages(texting.send("did that work?")) == []
    assert twiml_messages(texting.send("hello??")) == []
    db_found_away_long_ago(down)
    assert replay(up, db) == 3
    sent = [o.kind for o in rows(db, Outbox) if o.to_number == PATIENT]
    assert sent.count("optout_confirm") == 1 and "reply" not in sent


@pytest.mark.parametrize("redis_url", [None, SHARED_REDIS])
def test_a_start_replayed_after_an_outage_gives_the_holding_reply_back(
        make_app, make_clinic, db, dead_database_url, tmp_path, prefix, redis_url):
    clinic = make_clinic()
    number = clinic.numbers[0].phone_e164
    up, down = up_and_down(make_app, dead_database_url, tmp_path, prefix, redis_url)
    Phone(up.test_client(), PATIENT, number).send("PAIN")
    Phone(up.test_client(), PATIENT, number).send("STOP")

    # Opted back in while the database was away: the replay records it, and the spool hears.
    assert twiml_messages(Phone(down.test_client(), PATIENT, number).send("START")) == []
    db_found_away_long_ago(down)
    assert replay(up, db) == 1
    assert rows(db, Patient, Patient.phone_e164 == PATIENT)[0].opted_out is False
    # The next outage: their texts are answered with the holding reply again.
    assert twiml_messages(Phone(down.test_client(), PATIENT, number).send("hi")) == [
        inbound.text_for_holding()]


def test_a_patient_opted_out_by_staff_gets_no_holding_reply_during_an_outage(
        make_app, make_clinic, db, dead_database_url, tmp_path, prefix):
    clinic = make_clinic(numbers=["+16175550160", "+16175550161"])
    up, down = up_and_down(make_app, dead_database_url, tmp_path, prefix, SHARED_REDIS)
    Phone(up.test_client(), PATIENT, "+16175550160").send("PAIN")
    patient = rows(db, Patient, Patient.phone_e164 == PATIENT)[0]
    make_staff(db, clinic.id, "nurse@clinic.example.org")
    web = StaffClient(up.test_client())
    assert web.login("nurse@clinic.example.org").status_code == 302
    # The patient asked the clinic by phone to stop.
    assert web.post(f"/dashboard/patients/{patient.id}/opt-out").status_code == 302

    for number in ("+16175550160", "+16175550161"):  # whichever of the clinic's numbers
        assert twiml_messages(Phone(down.test_client(), PATIENT, number).send("hi")) == []


def test_a_hanging_database_turns_into_the_spool_within_seconds(make_app, make_clinic, db,
                                                                database_url, tmp_path):
    """A database that stops answering (it does not refuse): the webhook's wait is bounded,
    the text is spooled and answered well within Twilio's 15 s, and the next ones at once."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a TCP path that stops relaying is a PostgreSQL fault")
    from tests.e2e.harness import TcpProxy

    clinic = make_clinic()
    number = clinic.numbers[0].phone_e164
    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    try:
        url = make_url(database_url).set(port=proxy.port).render_as_string(hide_password=False)
        app = make_app(DATABASE_URL=url)
        phone = Phone(app.test_client(), PATIENT, number)
        assert twiml_messages(phone.send("PAIN")) != [inbound.text_for_holding()]
        proxy.pause()
        took = []
        for body in ("no", "no", "no"):
            started = time.monotonic()
            assert twiml_messages(phone.send(body)) == [inbound.text_for_holding()]
            took.append(time.monotonic() - started)
        assert took[0] < 10  # a statement cut after 4 s, a new connection given up after 3 s
        assert max(took[1:]) < 1  # the database is known to be away: straight to the spool
        assert app.extensions["spool"].pending() == 3
    finally:
        proxy.resume()
        proxy.stop()
    assert replay(make_app(), db) == 3
    (checkin,) = rows(db, CheckIn)
    assert [checkin.answers.get(f) for f in ("chest_symptoms", "limb_weakness",
                                             "bowel_bladder")] == [False, False, False]
