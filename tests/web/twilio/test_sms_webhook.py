"""SMS check-ins over the Twilio webhook, end to end through Flask with real signatures, on
SQLite and PostgreSQL: conversations, levels, consent, opt-out, duplicates, concurrency, the
spool, bad input, signatures and status callbacks (issue 4; CLINICAL.md §4, §6, §7)."""

from __future__ import annotations

import json
import os
import threading
import time
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from unittest.mock import ANY
from zoneinfo import ZoneInfo

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from flows import engine
from flows.loader import get_flow
from service.conversations import checkins, consent, inbound
from service.messaging import outbox
from service.messaging.senders import DryRunSender, TwilioSender
from service.messaging.spool import DEAD_KEY, REDIS_KEY
from service.store import Database
from service.store.models import (
    Alert,
    CheckIn,
    Clinic,
    Episode,
    FollowUp,
    Message,
    Outbox,
    Patient,
)
from tests.support.answers import (
    FOLLOWUP_CLEAR_EN,
    SELF_CARE_EN,
    SELF_CARE_ES,
    followup_answers,
    intake_answers,
)
from tests.support.db import counts, rows
from tests.support.phones import (
    PUBLIC_BASE_URL,
    WEBHOOK_CONFIG,
    Phone,
    new_sid,
    sign,
    twiml_messages,
)
from tests.support.sending import send_one
from tests.support.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

BOSTON = ZoneInfo("America/New_York")  # the patients' numbers are Boston's (617)
PATIENT = "+16175550142"
OTHER_PATIENT = "+16175550143"
# Monday 3 March 2025, 10:00 in Boston: inside quiet hours everywhere in the US.
DAYTIME = datetime(2025, 3, 3, 15, 0, tzinfo=UTC)
# A database of the shared Redis nobody else uses (the task tests use 11); only the spool key is
# touched, never flushed.
PRIVATE_REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('TEST_SPOOL_REDIS_DB', '14'))}"


@pytest.fixture
def app_config(app_config, database_url):
    # Naming database_url keeps this override parametrized over both backends.
    return {**app_config, **WEBHOOK_CONFIG}


@pytest.fixture
def clinic(make_clinic) -> Clinic:
    return make_clinic(name="Back Clinic")


@pytest.fixture
def clinic_number(clinic) -> str:
    return clinic.numbers[0].phone_e164


@pytest.fixture
def phone(client, clinic_number) -> Phone:
    return Phone(client, PATIENT, clinic_number)


@pytest.fixture
def clock(time_machine):
    """Frozen at DAYTIME; move it with clock.move_to(...)."""
    time_machine.move_to(DAYTIME, tick=False)
    return time_machine


# ---- texts the patient should see (from the flow definitions, rendered for the clinic) -----


def ask(flow_id: str, field: str, lang: str = "en") -> str:
    node = next(n for n in get_flow(flow_id).questions if n.field == field)
    return node.text[lang]


def intro(flow_id: str, clinic: Clinic, lang: str = "en") -> str:
    flow = get_flow(flow_id)
    values = {"clinic": clinic.name, "emergency": clinic.emergency_number,
              "clinic_phone": clinic.phone}
    return engine.render(flow.nodes[flow.start].text[lang], values, lang)


def say(key: str, clinic: Clinic, lang: str = "en", **extra) -> str:
    return checkins.text_for(key, clinic, lang, **extra)


def the_patient(db, phone_number: str = PATIENT) -> Patient:
    (patient,) = rows(db, Patient, Patient.phone_e164 == phone_number)
    return patient


def enroll(db, clinic: Clinic, *, now: datetime = DAYTIME, number: str = PATIENT,
           **kw) -> Patient:
    with db.transaction() as session:
        return consent.enroll_patient(session, session.get(Clinic, clinic.id), phone=number,
                                       now=now, **kw)


def complete_intake(phone: Phone, answers=SELF_CARE_EN, *, start: str = "PAIN", **kw) -> list[str]:
    """Texts the start word and every answer; returns the last reply."""
    phone.text(start)
    replies = []
    for body in intake_answers(answers, **kw):
        replies = phone.text(body)
    return replies


# ---- whole conversations ------------------------------------------------------------------


def test_english_intake_from_first_text_to_self_care_advice(phone, clinic, db, clock):
    intake = get_flow("intake")
    questions = [node.field for node in intake.questions]

    assert phone.text("PAIN") == [intro("intake", clinic), ask("intake", questions[0])]
    answers = intake_answers(SELF_CARE_EN)
    for i, body in enumerate(answers[:-1]):
        assert phone.text(body) == [ask("intake", questions[i + 1])], body
    advice = phone.text(answers[-1])

    assert advice == [say("advice.self_care", clinic, date="Monday, March 31")]
    patient = the_patient(db)
    assert (patient.consent, patient.language, patient.opted_out) == ("given", "en", False)
    (checkin,) = rows(db, CheckIn)
    assert (checkin.kind, checkin.status, checkin.level) == ("intake", "completed", "self_care")
    assert checkin.reasons == ["MECHANICAL"]
    assert checkin.answers["pain_score"] == 3 and checkin.answers["duration_days"] == 14
    (episode,) = rows(db, Episode)
    assert (episode.status, episode.baseline_pain_score, episode.intake_level) == (
        "open", 3, "self_care")
    followups = rows(db, FollowUp)
    # Day 28 and day 42 at 10:00 in Boston, as the intake was: EDT by then, so 14:00 UTC.
    assert [(f.kind, f.due_at, f.status) for f in followups] == [
        ("first", datetime(2025, 3, 31, 14, 0, tzinfo=UTC), "scheduled"),
        ("final", datetime(2025, 4, 14, 14, 0, tzinfo=UTC), "scheduled"),
    ]
    assert rows(db, Alert) == []
    messages = rows(db, Message)
    assert [m.body for m in messages if m.direction == "in"] == ["PAIN", *answers]
    assert all(m.twilio_sid and m.status == "received" for m in messages if m.direction == "in")
    replies_sent = [m.body for m in messages if m.direction == "out"]
    assert len(replies_sent) == 2 + len(answers) and replies_sent[-1] == advice[0]
    assert rows(db, Outbox) == []  # replies go back as TwiML, not through the outbox


def test_spanish_intake_from_dolor_to_self_care_advice(phone, clinic, db, clock):
    assert phone.text("DOLOR") == [intro("intake", clinic, "es"),
                                   ask("intake", "chest_symptoms", "es")]
    last = []
    for body in intake_answers(SELF_CARE_ES):
        last = phone.text(body)
    assert last == [say("advice.self_care", clinic, "es", date="lunes 31 de marzo")]
    assert "Sin signos de alarma" in last[0] and "si cambia, avise" in last[0]
    assert the_patient(db).language == "es"
    (checkin,) = rows(db, CheckIn)
    assert (checkin.language, checkin.level, checkin.answers["relieved_by_rest"]) == (
        "es", "self_care", True)


def test_switching_to_spanish_mid_intake_asks_the_same_question_in_spanish(phone, db):
    phone.text("PAIN")
    phone.text("no")
    assert phone.text("ESPAÑOL") == [ask("intake", "limb_weakness", "es")]
    assert phone.text("no") == [ask("intake", "bowel_bladder", "es")]
    assert the_patient(db).language == "es"


# Each level of CLINICAL.md §2, reached over SMS. Overrides of the self-care answers; the
# emergency answers end the intake at once.
LEVELS = [
    # Ended at once: the questions not asked are "not answered", listed for the clinician.
    pytest.param({"chest_symptoms": "YES"}, "chest_symptoms", "emergency",
                 ["CHEST", "INCOMPLETE"], "advice.emergency", "triage",
                 ["cancer_history", "weight_loss", "fever_chills", "night_sweats",
                  "limb_weakness", "numbness_tingling", "bowel_bladder"], id="emergency-chest"),
    pytest.param({"limb_weakness": "yes"}, "limb_weakness", "emergency", ["NEURO", "INCOMPLETE"],
                 "advice.emergency", "triage", ["cancer_history", "weight_loss", "fever_chills",
                                                "night_sweats", "numbness_tingling",
                                                "bowel_bladder"], id="emergency-weakness"),
    pytest.param({"cancer_history": "Yes"}, None, "urgent", ["CANCER_HISTORY"],
                 "advice.urgent", "triage", [], id="urgent-cancer-history"),
    pytest.param({"fever_chills": "yes"}, None, "urgent", ["SYSTEMIC"],
                 "advice.urgent", "triage", [], id="urgent-fever"),
    pytest.param({"night_pain": "yes"}, None, "soon", ["CONCERNING", "F_NIGHT"],
                 "advice.soon", "triage", [], id="soon-night-pain"),
    pytest.param({"weight_loss": "not sure"}, None, "soon", ["INCOMPLETE"],
                 "advice.incomplete", "incomplete", ["weight_loss"], id="soon-incomplete"),
    pytest.param({}, None, "self_care", ["MECHANICAL"], "advice.self_care", None, [],
                 id="self-care"),
]


@pytest.mark.parametrize("overrides, stops_at, level, reasons, advice, alert_kind, missing",
                         LEVELS)
def test_every_level_is_reached_over_sms_with_its_alert_and_follow_ups(
        phone, clinic, db, clock, overrides, stops_at, level, reasons, advice, alert_kind,
        missing):
    last = complete_intake(phone, {**SELF_CARE_EN, **overrides}, stop_after=stops_at)

    date_text = "Monday, March 31" if advice == "advice.self_care" else ""
    assert last == [say(advice, clinic, date=date_text)]
    assert clinic.emergency_number in last[0]  # every advice names the emergency number
    (checkin,) = rows(db, CheckIn)
    assert (checkin.status, checkin.level, checkin.reasons, checkin.missing) == (
        "completed", level, reasons, missing)
    (episode,) = rows(db, Episode)
    assert (episode.status, episode.intake_level) == ("open", level)
    alerts = rows(db, Alert)
    if alert_kind is None:
        assert alerts == []
    else:
        (alert,) = alerts
        assert (alert.kind, alert.level, alert.reasons, alert.missing, alert.status) == (
            alert_kind, level, reasons, missing, "open")
        assert (alert.checkin_id, alert.episode_id) == (checkin.id, episode.id)
    followups = rows(db, FollowUp)
    if level == "emergency":
        assert followups == []  # staff own emergency episodes; no automatic follow-up
    else:
        # 28 and 42 calendar days later at the same local time of day (a daylight-saving
        # change falls in between).
        done = checkin.completed_at.astimezone(BOSTON)
        assert [(f.kind, f.due_at.astimezone(BOSTON)) for f in followups] == [
            ("first", datetime.combine(done.date() + timedelta(days=28), done.time(), BOSTON)),
            ("final", datetime.combine(done.date() + timedelta(days=42), done.time(), BOSTON))]


def test_three_unclear_replies_record_not_answered_and_the_intake_goes_on(phone, clinic, db):
    phone.text("PAIN")
    for body in intake_answers(SELF_CARE_EN, stop_after="fever_chills"):
        phone.text(body)
    assert phone.text("maybe?") == [ask("intake", "night_sweats")]  # same words again
    assert phone.text("🤷") == [say("fallback.yes_no", clinic)]
    assert phone.text("what") == [ask("intake", "age_years")]  # not answered; moves on
    for body in intake_answers(SELF_CARE_EN)[8:]:
        last = phone.text(body)
    assert last == [say("advice.incomplete", clinic)]
    (checkin,) = rows(db, CheckIn)
    assert checkin.answers["night_sweats"] is None and checkin.missing == ["night_sweats"]
    (alert,) = rows(db, Alert)
    assert (alert.kind, alert.level, alert.missing) == ("incomplete", "soon", ["night_sweats"])


def test_follow_ups_are_moved_into_the_patients_waking_hours(client, clinic, clinic_number, db,
                                                             clock):
    # 05:30 UTC is 21:30 the evening before in Los Angeles (00:30 in Boston, the clinic's zone).
    night = datetime(2025, 3, 3, 5, 30, tzinfo=UTC)
    clock.move_to(night, tick=False)
    enroll(db, clinic, now=night, timezone="America/Los_Angeles", date_of_birth=date(1980, 5, 17))
    (consent,) = rows(db, Outbox)
    assert consent.not_before == datetime(2025, 3, 3, 16, 0, tzinfo=UTC)  # 08:00 PST

    phone = Phone(client, PATIENT, clinic_number)
    assert phone.text("YES")[1] == ask("intake", "chest_symptoms")  # replies go at any hour
    for body in intake_answers(SELF_CARE_EN, skip=["age_years"]):
        phone.text(body)

    # Day 28 at 05:30 UTC is 22:30 PDT: moved to 08:00 PDT the next morning.
    assert [(f.kind, f.due_at) for f in rows(db, FollowUp)] == [
        ("first", datetime(2025, 3, 31, 15, 0, tzinfo=UTC)),
        ("final", datetime(2025, 4, 14, 15, 0, tzinfo=UTC)),
    ]
    (checkin,) = rows(db, CheckIn)
    assert checkin.answers["age_years"] == 44  # from the date of birth; not asked


def test_the_advice_names_the_date_the_follow_up_will_really_come(client, clinic, clinic_number,
                                                                  db, clock):
    night = datetime(2025, 3, 3, 5, 30, tzinfo=UTC)
    clock.move_to(night, tick=False)
    enroll(db, clinic, now=night, timezone="America/Los_Angeles", date_of_birth=date(1980, 5, 17))
    phone = Phone(client, PATIENT, clinic_number)
    phone.text("YES")
    for body in intake_answers(SELF_CARE_EN, skip=["age_years"]):
        last = phone.text(body)
    assert "Monday, March 31" in last[0]


# ---- consent (CLINICAL.md §7) ---------------------------------------------------------------


def test_enrolled_patient_gets_no_health_question_before_yes(phone, clinic, db, clock):
    enroll(db, clinic)
    (consent,) = rows(db, Outbox)
    assert (consent.kind, consent.status, consent.to_number) == ("consent", "pending", PATIENT)
    assert consent.body == say("consent", clinic)
    assert "YES" in consent.body and clinic.name in consent.body and "911" in consent.body

    assert phone.text("my back hurts a lot, worse at night") == [say("consent.waiting", clinic)]
    assert phone.text("no") == [say("consent.waiting", clinic)]
    assert rows(db, CheckIn) == []
    assert the_patient(db).consent == "pending"
    (alert,) = rows(db, Alert)  # what they wrote before consenting still reached the clinic
    assert (alert.kind, alert.summary) == ("patient_message", "my back hurts a lot, worse at night")

    assert phone.text("YES") == [intro("intake", clinic), ask("intake", "chest_symptoms")]
    patient = the_patient(db)
    assert (patient.consent, patient.consented_at) == ("given", DAYTIME)
    assert len(rows(db, Outbox)) == 1  # nothing but the consent text went through the outbox
    questions = {node.text["en"] for node in get_flow("intake").questions}
    before_yes = [m.body for m in rows(db, Message, Message.direction == "out")][:2]
    assert not questions & set(before_yes)


def test_spanish_enrolled_patient_consents_with_si(phone, clinic, db):
    enroll(db, clinic, language="es")
    assert rows(db, Outbox)[0].body == say("consent", clinic, "es")
    assert phone.text("hola") == [say("consent.waiting", clinic, "es")]
    assert phone.text("Sí") == [intro("intake", clinic, "es"),
                                ask("intake", "chest_symptoms", "es")]


def test_texting_the_start_keyword_is_consent(phone, clinic, db):
    enroll(db, clinic)
    assert phone.text("pain") == [intro("intake", clinic), ask("intake", "chest_symptoms")]
    assert the_patient(db).consent == "given"


# ---- opt-out, opt-in, help (CLINICAL.md §7) ------------------------------------------------

# (Twilio's own handling on?, what the patient texts, OptOutType Twilio adds, confirmations
# Twilio sends itself). Exactly one confirmation must reach the patient in every row.
OPT_OUTS = [
    pytest.param(False, "STOP", None, 0, id="ours-STOP"),
    pytest.param(False, "stop please", None, 0, id="ours-stop-please"),
    pytest.param(False, "please stop texting me", None, 0, id="ours-plain-request"),
    pytest.param(False, "ALTO", None, 0, id="ours-ALTO"),
    pytest.param(True, "STOP", "STOP", 1, id="twilio-STOP-with-OptOutType"),
    pytest.param(True, "Stop", None, 1, id="twilio-STOP-without-OptOutType"),
    pytest.param(True, "unsubscribe", "STOP", 1, id="twilio-unsubscribe"),
    pytest.param(True, "please stop texting me", None, 0, id="twilio-plain-request"),
    pytest.param(True, "Basta", None, 0, id="twilio-spanish-word-twilio-ignores"),
]


@pytest.mark.parametrize("twilio_handling, text, opt_out_type, twilio_confirms", OPT_OUTS)
def test_opt_out_sends_exactly_one_confirmation_then_silence(
        client, make_clinic, db, twilio_handling, text, opt_out_type, twilio_confirms):
    clinic = make_clinic(name="Back Clinic", twilio_optout_handling=twilio_handling)
    phone = Phone(client, PATIENT, clinic.numbers[0].phone_e164)
    complete_intake(phone)
    patient_id = the_patient(db).id
    with db.transaction() as session:
        queued = outbox.enqueue(session, clinic=session.get(Clinic, clinic.id), body="later",
                                kind="reminder", now=DAYTIME + timedelta(days=3),
                                patient=session.get(Patient, patient_id))
    fields = {"OptOutType": opt_out_type} if opt_out_type else {}

    ours = phone.text(text, **fields)

    assert len(ours) + twilio_confirms == 1
    if ours:
        assert ours == [say("optout.confirm", clinic)]
    patient = the_patient(db)
    assert patient.opted_out and patient.opted_out_at is not None
    assert {f.status for f in rows(db, FollowUp)} == {"cancelled"}
    assert rows(db, Outbox, Outbox.id == queued.id)[0].status == "cancelled"
    before = counts(db)
    for later in ("hello?", "yes", "STOP", "please stop texting me"):
        assert phone.text(later) == [], later
    # HELP is answered even now (carrier rules, CLINICAL.md §7).
    assert phone.text("HELP") == [say("help", clinic)]
    after = counts(db)
    assert after["messages"] == before["messages"] + 6  # the texts are kept; one reply
    assert after["checkins"] == before["checkins"] and after["outbox"] == before["outbox"]


def test_stop_during_a_conversation_ends_it_and_tells_the_clinic_what_was_answered(phone, db):
    phone.text("PAIN")
    phone.text("no")
    assert len(phone.text("STOP")) == 1
    (checkin,) = rows(db, CheckIn)
    assert checkin.status == "cancelled" and checkin.answers["chest_symptoms"] is False
    (alert,) = rows(db, Alert)
    assert (alert.kind, alert.level) == ("incomplete", "soon")
    assert "opted out" in alert.summary


def test_stop_from_an_unknown_number_is_remembered(phone, clinic, db):
    assert phone.text("STOP") == [say("optout.confirm", clinic)]
    assert the_patient(db).opted_out
    assert phone.text("PAIN") == []
    assert rows(db, CheckIn) == []


# (Twilio's handling on?, text, OptOutType, do we confirm?)
OPT_INS = [
    pytest.param(False, "START", None, True, id="ours-START"),
    pytest.param(False, "unstop", None, True, id="ours-UNSTOP"),
    pytest.param(True, "START", "START", False, id="twilio-START-with-OptOutType"),
    pytest.param(True, "start", None, False, id="twilio-START-without-OptOutType"),
    pytest.param(True, "YES", "START", False, id="twilio-YES-is-its-opt-in-word"),
]


@pytest.mark.parametrize("twilio_handling, text, opt_out_type, we_confirm", OPT_INS)
def test_opt_in_after_opt_out_sends_one_confirmation_and_texts_work_again(
        client, make_clinic, db, twilio_handling, text, opt_out_type, we_confirm):
    clinic = make_clinic(name="Back Clinic", twilio_optout_handling=twilio_handling)
    phone = Phone(client, PATIENT, clinic.numbers[0].phone_e164)
    phone.text("PAIN")
    phone.text("STOP", **({"OptOutType": "STOP"} if twilio_handling else {}))
    fields = {"OptOutType": opt_out_type} if opt_out_type else {}

    replies = phone.text(text, **fields)

    assert replies == ([say("optin.confirm", clinic)] if we_confirm else [])
    assert not the_patient(db).opted_out
    assert phone.text("PAIN") == [intro("intake", clinic), ask("intake", "chest_symptoms")]


@pytest.mark.parametrize("twilio_handling", [False, True])
@pytest.mark.parametrize("word", ["HELP", "info", "Ayuda"])
def test_help_names_clinic_phone_emergency_number_and_how_to_stop(client, make_clinic, db,
                                                                  twilio_handling, word):
    clinic = make_clinic(name="Back Clinic", twilio_optout_handling=twilio_handling,
                         phone="+16175550199")
    phone = Phone(client, PATIENT, clinic.numbers[0].phone_e164)
    lang = "es" if word == "Ayuda" else "en"
    assert phone.text(word) == [say("help", clinic, lang)]
    for part in ("Back Clinic", "+16175550199", "911", "ALTO" if lang == "es" else "STOP"):
        assert part in say("help", clinic, lang)
    phone.text("PAIN")
    phone.text("no")
    # Help mid-conversation (in the patient's language) does not move the conversation on.
    assert phone.text(word) == [say("help", clinic, "en")]
    assert phone.text("no") == [ask("intake", "bowel_bladder")]


# ---- unsolicited messages, overlapping conversations (CLINICAL.md §6) ----------------------


def test_unsolicited_text_starts_an_early_follow_up_and_alerts_the_clinic(phone, clinic, db,
                                                                          clock):
    complete_intake(phone)
    (episode,) = rows(db, Episode)

    replies = phone.text("My back got worse since Sunday 😟")

    # Minutes after the intake: the opening does not say "a few weeks ago" (CLINICAL.md §6).
    assert replies == [say("followup.intro.recent", clinic), ask("followup", "status")]
    (alert,) = rows(db, Alert)
    assert (alert.kind, alert.level, alert.episode_id) == ("patient_message", "info", episode.id)
    assert alert.summary == "My back got worse since Sunday 😟"
    followup = rows(db, CheckIn, CheckIn.status == "active")[0]
    assert (followup.kind, followup.episode_id) == ("followup", episode.id)

    # Worse, and still worse than the intake: advice to be examined, and an alert.
    for body in followup_answers({**FOLLOWUP_CLEAR_EN, "status": "worse", "pain_score": "6"}):
        last = phone.text(body)
    assert last == [say("advice.worsening", clinic)]
    alerts = rows(db, Alert, Alert.kind == "followup")
    assert [(a.level, a.reasons[0]) for a in alerts] == [("soon", "WORSENING")]


def test_follow_up_that_resolves_closes_the_episode_and_a_later_text_starts_an_intake(
        phone, clinic, db):
    complete_intake(phone)
    phone.text("hi, it's much better")
    for body in followup_answers({**FOLLOWUP_CLEAR_EN, "status": "1", "pain_score": "0"}):
        last = phone.text(body)
    assert last == [say("advice.resolved", clinic)]
    (episode,) = rows(db, Episode)
    assert (episode.status, episode.closed_reason) == ("closed", "resolved")
    assert {f.status for f in rows(db, FollowUp)} == {"cancelled"}

    assert phone.text("it came back") == [intro("intake", clinic), ask("intake", "chest_symptoms")]
    message_alerts = rows(db, Alert, Alert.kind == "patient_message")
    assert len(message_alerts) == 2 and message_alerts[-1].episode_id is None


def test_start_keyword_during_a_conversation_continues_it(phone, db):
    phone.text("PAIN")
    phone.text("no")
    phone.text("no")
    assert phone.text("PAIN") == [ask("intake", "bowel_bladder")]
    assert phone.text("back") == [ask("intake", "bowel_bladder")]
    (checkin,) = rows(db, CheckIn)
    assert checkin.status == "active"
    assert {k: v for k, v in checkin.answers.items() if v is not None} == {
        "chest_symptoms": False, "limb_weakness": False}
    assert phone.text("no") == [ask("intake", "cancer_history")]


def test_a_new_completed_intake_closes_the_previous_episode_and_cancels_its_follow_ups(
        phone, db):
    complete_intake(phone)
    (first,) = rows(db, Episode)

    phone.text("PAIN")  # a new intake while the first episode is open
    assert rows(db, Episode)[0].status == "open"  # closed only once the new intake completes
    for body in intake_answers({**SELF_CARE_EN, "cancer_history": "yes"}):
        phone.text(body)

    old, new = rows(db, Episode)
    assert (old.id, old.status, old.closed_reason) == (first.id, "closed", "new intake")
    assert (new.status, new.intake_level) == ("open", "urgent")
    by_episode = {(f.episode_id, f.kind): f.status for f in rows(db, FollowUp)}
    assert by_episode == {(old.id, "first"): "cancelled", (old.id, "final"): "cancelled",
                          (new.id, "first"): "scheduled", (new.id, "final"): "scheduled"}


# ---- duplicates -------------------------------------------------------------------------------


@pytest.mark.parametrize("moment", ["first-text", "mid-answer", "last-answer", "stop",
                                    "unknown-number", "opted-out"])
def test_duplicate_message_sid_gets_the_same_reply_and_changes_nothing(phone, db, moment):
    answers = intake_answers(SELF_CARE_EN)
    if moment == "first-text":
        form = phone.form("PAIN")
    elif moment == "mid-answer":
        phone.conversation(["PAIN", *answers[:3]])
        form = phone.form(answers[3])
    elif moment == "last-answer":
        phone.conversation(["PAIN", *answers[:-1]])
        form = phone.form(answers[-1])
    elif moment == "stop":
        phone.conversation(["PAIN", *answers[:3]])
        form = phone.form("STOP")
    elif moment == "unknown-number":
        form = phone.form("hello?")
    else:
        phone.conversation(["STOP"])
        form = phone.form("anyone there?")

    first = phone.post(form)
    before = counts(db)
    again = phone.post(form)
    third = phone.post(form)

    assert first.status_code == 200
    assert again.get_data() == first.get_data() == third.get_data()
    assert counts(db) == before


# ---- concurrency (PostgreSQL: row locks, separate connections) -------------------------------

POSTGRES_ONLY = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)


class PatientLock:
    """Holds the patient's row lock from another connection, as a slow request would."""

    def __init__(self, database_url: str, patient_id: int) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self.conn = psycopg.connect(url.render_as_string(hide_password=False))
        self.conn.execute("SELECT id FROM patients WHERE id = %s FOR UPDATE", (patient_id,))

    def waiting(self) -> int:
        with psycopg.connect(self.conn.info.dsn, autocommit=True) as other:
            return other.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'").fetchone()[0]

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.waiting() < n:
            assert time.monotonic() < deadline, f"fewer than {n} requests queued on the lock"
            time.sleep(0.02)

    def release(self) -> None:
        self.conn.commit()
        self.conn.close()


def post_in_threads(app, forms, clinic_number):
    """Posts each form from its own thread (own test client, own DB connection)."""
    results: list = [None] * len(forms)
    errors: list = []

    def run(i, form):
        try:
            results[i] = Phone(app.test_client(), form["From"], clinic_number).post(form)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(forms)]
    for t in threads:
        t.start()
    return threads, results, errors


@POSTGRES_ONLY
def test_two_texts_from_one_patient_at_once_are_processed_one_after_the_other(
        app, phone, clinic_number, db, database_url):
    phone.text("PAIN")
    lock = PatientLock(database_url, the_patient(db).id)
    forms = [phone.form("no"), phone.form("no")]
    threads, results, errors = post_in_threads(app, forms, clinic_number)
    lock.wait_for(2)  # both requests are inside the use case, queued on the patient row
    lock.release()
    for t in threads:
        t.join(10)
    assert not errors
    replies = sorted(twiml_messages(r)[0] for r in results)
    # Serialized: each answer moved the intake on by one question. Interleaved, both would
    # have answered the first question and got the same reply.
    assert replies == sorted([ask("intake", "limb_weakness"), ask("intake", "bowel_bladder")])
    (checkin,) = rows(db, CheckIn)
    assert checkin.state["node"] == "bowel_bladder"
    assert (checkin.answers["chest_symptoms"], checkin.answers["limb_weakness"]) == (False, False)


def first_holds_its_transaction_while_second_runs(db, database_url, first, second) -> dict:
    """Runs `first(session)` in a transaction held open until `second(other)` (on a Database
    of its own) is seen waiting for it; returns both results as {"first": .., "second": ..}."""
    other = Database(database_url)
    entered, release, second_done = threading.Event(), threading.Event(), threading.Event()
    results: dict = {}

    def run_first():
        with db.transaction() as session:
            results["first"] = first(session)
            entered.set()
            release.wait(10)

    def run_second():
        entered.wait(10)
        results["second"] = second(other)
        second_done.set()

    threads = [threading.Thread(target=run_first), threading.Thread(target=run_second)]
    try:
        for t in threads:
            t.start()
        assert entered.wait(10)
        assert not second_done.wait(0.5)  # blocked on the patient row, not interleaving
        release.set()
        for t in threads:
            t.join(10)
    finally:
        release.set()
        other.dispose()
    return results


def test_two_answers_in_one_unit_of_work_each_move_the_intake_on(phone, clinic_number, db):
    """The answer's check-in UPDATE is written with the text (one statement on PostgreSQL):
    a second text in the same transaction reads the check-in as the first left it, and the
    commit keeps both answers."""
    phone.text("PAIN")

    def two_answers(session):
        replies = []
        for body in ("no", "no"):
            result = inbound.handle_inbound_sms(session, to=clinic_number, from_=PATIENT,
                                                body=body, sid=new_sid(), now=datetime.now(UTC))
            replies.append(result.replies)
            assert result.checkin.state["node"] == engine_node(result.replies)
        return replies

    assert db.run(two_answers) == [[ask("intake", "limb_weakness")],
                                   [ask("intake", "bowel_bladder")]]
    (checkin,) = rows(db, CheckIn)
    assert checkin.state["node"] == "bowel_bladder"
    assert checkin.answers["chest_symptoms"] is False
    assert checkin.answers["limb_weakness"] is False


def engine_node(replies: list[str]) -> str:
    """The intake question a reply asks."""
    (reply,) = replies
    return next(field for field in ("limb_weakness", "bowel_bladder")
                if reply == ask("intake", field))


@POSTGRES_ONLY
def test_use_case_waits_for_another_transaction_on_the_same_patient(phone, clinic_number, db,
                                                                   database_url):
    phone.text("PAIN")

    def answer_no(session):
        return inbound.handle_inbound_sms(session, to=clinic_number, from_=PATIENT, body="no",
                                           sid=new_sid(), now=datetime.now(UTC)).replies

    replies = first_holds_its_transaction_while_second_runs(
        db, database_url, answer_no, lambda other: other.run(answer_no))
    assert replies == {"first": [ask("intake", "limb_weakness")],
                       "second": [ask("intake", "bowel_bladder")]}


@POSTGRES_ONLY
@pytest.mark.parametrize("body", ["no", "STOP"])
def test_a_duplicate_that_waited_on_the_first_delivery_is_run_again_and_has_no_effect(
        phone, clinic_number, db, database_url, body):
    """The duplicate's lock statement reads the receipts before it waits, so it misses the
    first delivery's; the unique SID rolls it back and Database.run runs it again."""
    phone.text("PAIN")
    sid = new_sid()

    def deliver(session):
        return inbound.handle_inbound_sms(session, to=clinic_number, from_=PATIENT, body=body,
                                           sid=sid, now=datetime.now(UTC))

    before = counts(db)
    results = first_holds_its_transaction_while_second_runs(
        db, database_url, deliver, lambda other: other.run(deliver))
    first_result, second_result = results["first"], results["second"]
    assert not first_result.duplicate and second_result.duplicate
    assert second_result.replies == first_result.replies
    after = counts(db)
    assert after["receipts"] == before["receipts"] + 1
    assert after["messages"] == before["messages"] + 1 + len(first_result.replies)
    if body == "no":  # answered once: the intake moved on by one question, not two
        (checkin,) = rows(db, CheckIn)
        assert checkin.state["node"] == "limb_weakness"


@POSTGRES_ONLY
@pytest.mark.parametrize("known_patient", [True, False], ids=["in-conversation", "new-number"])
def test_three_concurrent_deliveries_of_one_message_sid_have_one_effect(
        app, phone, clinic_number, db, database_url, known_patient):
    lock = None
    if known_patient:
        phone.text("PAIN")
        lock = PatientLock(database_url, the_patient(db).id)
    before = counts(db)
    form = phone.form("no" if known_patient else "PAIN")
    threads, results, errors = post_in_threads(app, [form] * 3, clinic_number)
    if lock is not None:
        lock.wait_for(3)
        lock.release()
    for t in threads:
        t.join(10)
    assert not errors
    assert len({r.get_data() for r in results}) == 1
    assert twiml_messages(results[0])  # a real reply, the same for all three
    after = counts(db)
    assert after["receipts"] == before["receipts"] + 1
    assert after["messages"] - before["messages"] == 1 + len(twiml_messages(results[0]))
    assert after["checkins"] == max(before["checkins"], 1)


# ---- the spool: the database is away --------------------------------------------------------


@pytest.fixture
def dead_database_url(database_url, tmp_path) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'no-such-dir' / 'triage.db'}"
    return "postgresql://postgres@127.0.0.1:1/triage"  # nothing listens on port 1


# What a test on the private Redis database leaves: the spool, and the replay task the webhook
# queues for a sender whose texts are spooled (no worker listens there).
PRIVATE_REDIS_KEYS = (REDIS_KEY, "celery", "_kombu.binding.celery",
                      "_kombu.binding_permanent.celery")


@pytest.fixture
def private_redis():
    client = redis.Redis.from_url(PRIVATE_REDIS_URL)
    client.delete(*PRIVATE_REDIS_KEYS)
    yield client
    client.delete(*PRIVATE_REDIS_KEYS)
    client.close()


def queued_task_names(client) -> list[str]:
    return [json.loads(raw)["headers"]["task"] for raw in client.lrange("celery", 0, -1)]


def test_the_worker_is_woken_only_by_a_text_that_leaves_it_work(make_app, clinic_number, db,
                                                                 private_redis):
    app = make_app(REDIS_URL=PRIVATE_REDIS_URL)
    phone = Phone(app.test_client(), PATIENT, clinic_number)
    assert twiml_messages(phone.send("PAIN"))[-1] == ask("intake", "chest_symptoms")
    assert twiml_messages(phone.send("no")) == [ask("intake", "limb_weakness")]
    phone.send("no", sid=phone.last_sid)  # a duplicate delivery
    assert queued_task_names(private_redis) == []  # replies went in the TwiML; nothing queued

    phone.send("yes")  # new weakness: an emergency, whose alert pages the on-call clinician
    (alert,) = rows(db, Alert)
    assert alert.level == "emergency"
    assert queued_task_names(private_redis) == ["tasks.send_now"]


def spooled_in_file(app) -> list[dict]:
    path = app.extensions["spool"].path
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("where", ["file", "redis", "file-when-redis-is-down"])
def test_spooled_texts_are_replayed_in_order_once_the_database_is_back(
        make_app, clinic, clinic_number, db, dead_database_url, where, request):
    redis_url = {"file": None, "redis": PRIVATE_REDIS_URL,
                 "file-when-redis-is-down": "redis://127.0.0.1:1/0"}[where]
    spool_redis = request.getfixturevalue("private_redis") if where == "redis" else None
    down = make_app(DATABASE_URL=dead_database_url, REDIS_URL=redis_url)
    phone = Phone(down.test_client(), PATIENT, clinic_number)
    holding = inbound.text_for_holding()

    sids = []
    for body in ("PAIN", "no", "no"):
        response = phone.send(body)
        assert twiml_messages(response) == [holding]
        sids.append(phone.last_sid)

    if spool_redis is not None:
        spooled = [json.loads(raw) for raw in spool_redis.lrange(REDIS_KEY, 0, -1)]
        assert spooled_in_file(down) == []
    else:
        spooled = spooled_in_file(down)
    assert [(r["sid"], r["body"], r["from"], r["to"]) for r in spooled] == [
        (sid, body, PATIENT, clinic_number) for sid, body in zip(sids, ("PAIN", "no", "no"),
                                                                 strict=True)]
    assert counts(db)["messages"] == 0  # nothing reached the database

    up = make_app(REDIS_URL=redis_url)
    now = datetime.now(UTC)
    spool = up.extensions["spool"]
    assert spool.pending() == 3
    assert spool.replay(lambda record: inbound.replay_spooled(db, record, now)) == 3
    assert spool.pending() == 0

    (checkin,) = rows(db, CheckIn)
    assert checkin.answers["chest_symptoms"] is False and checkin.answers["limb_weakness"] is False
    expected = [intro("intake", clinic), ask("intake", "chest_symptoms"),
                ask("intake", "limb_weakness"), ask("intake", "bowel_bladder")]
    queued = rows(db, Outbox)
    assert [(o.body, o.to_number, o.status, o.not_before) for o in queued] == [
        (text, PATIENT, "pending", now) for text in expected]
    assert [m.body for m in rows(db, Message, Message.direction == "in")] == ["PAIN", "no", "no"]
    assert rows(db, Message, Message.direction == "out") == []  # recorded when really sent

    for row in queued:
        assert send_one(db, row.id, DryRunSender(), now).status == "sent"
    assert [m.body for m in rows(db, Message, Message.direction == "out")] == expected

    before = counts(db)
    assert spool.replay(lambda record: inbound.replay_spooled(db, record, now)) == 0
    assert counts(db) == before


@pytest.mark.parametrize("where", ["file", "redis"])
def test_a_spooled_record_that_cannot_be_processed_goes_to_the_dead_letters_and_the_rest_go_on(
        make_app, clinic_number, db, dead_database_url, where, request):
    redis_url = PRIVATE_REDIS_URL if where == "redis" else None
    spool_redis = request.getfixturevalue("private_redis") if where == "redis" else None
    if spool_redis is not None:
        spool_redis.delete(DEAD_KEY)
        request.addfinalizer(lambda: spool_redis.delete(DEAD_KEY))
    app = make_app(REDIS_URL=redis_url)
    spool = app.extensions["spool"]
    good = {"sid": new_sid(), "to": clinic_number, "from": PATIENT, "body": "PAIN"}
    broken = {"sid": new_sid(), "from": PATIENT, "body": "no"}  # no "To": nothing can use it
    later = {"sid": new_sid(), "to": clinic_number, "from": PATIENT, "body": "no"}
    for record in (good, broken, later):
        spool.push(record)

    # The database still away: the replay stops at once and keeps everything, in order.
    dead_db = Database(dead_database_url)
    with pytest.raises(OperationalError):
        spool.replay(lambda record: inbound.replay_spooled(dead_db, record, DAYTIME))
    dead_db.dispose()
    assert (spool.pending(), spool.dead_count()) == (3, 0)

    assert spool.replay(lambda record: inbound.replay_spooled(db, record, DAYTIME)) == 2
    assert spool.pending() == 0
    (dead,) = spool.dead()
    assert (dead["record"], dead["error"]) == ({**broken, "spooled_ns": ANY}, "KeyError")
    assert [m.body for m in rows(db, Message, Message.direction == "in")] == ["PAIN", "no"]
    assert rows(db, CheckIn)[0].answers["chest_symptoms"] is False  # the later text went on
    assert app.test_client().get("/healthz").get_json()["spool_dead"] == 1


def test_a_spooled_record_replayed_twice_has_one_effect(clinic, clinic_number, db):
    record = {"sid": new_sid(), "to": clinic_number, "from": PATIENT, "body": "PAIN",
              "opt_out_type": None, "received_at": DAYTIME.isoformat()}
    inbound.replay_spooled(db, record, DAYTIME)
    before = counts(db)
    inbound.replay_spooled(db, record, DAYTIME)
    assert counts(db) == before
    assert len(rows(db, Outbox)) == 2


def test_a_spooled_stop_still_gets_its_one_confirmation_out(clinic, clinic_number, db):
    inbound.replay_spooled(db, {"sid": new_sid(), "to": clinic_number, "from": PATIENT,
                                 "body": "PAIN"}, DAYTIME)
    inbound.replay_spooled(db, {"sid": new_sid(), "to": clinic_number, "from": PATIENT,
                                 "body": "STOP"}, DAYTIME)
    outcomes = {o.body: send_one(db, o.id, DryRunSender(), DAYTIME).status
                for o in rows(db, Outbox)}
    # The check-in texts were cancelled by the opt-out; its confirmation still goes out.
    assert outcomes[say("optout.confirm", clinic)] == "sent"
    assert [m.body for m in rows(db, Message, Message.direction == "out")] == [
        say("optout.confirm", clinic)]


# ---- bad input: a clear answer, never a 500 --------------------------------------------------


@pytest.mark.parametrize("missing", ["MessageSid", "From", "To"])
def test_missing_fields_get_a_clear_400(phone, db, missing):
    form = phone.form("PAIN")
    del form[missing]
    response = phone.post(form)
    assert response.status_code == 400
    assert missing in response.get_data(as_text=True)
    assert counts(db)["messages"] == 0


LONG_TEXT = ("My upper back has hurt for weeks, mostly between the shoulder blades. " * 30)[:1600]
ODD_BODIES = [
    pytest.param({"Body": ""}, id="empty-body"),
    pytest.param({}, id="no-body-field"),
    pytest.param({"NumMedia": "1", "MediaUrl0": "https://api.twilio.com/2010-04-01/Accounts/"
                  "AC/Messages/MM/Media/ME", "MediaContentType0": "image/jpeg"}, id="mms-no-text"),
    pytest.param({"Body": LONG_TEXT, "NumSegments": "11"}, id="1600-chars"),
    pytest.param({"Body": "🙂👍🔥" * 100}, id="emoji"),
    pytest.param({"Body": "Болит спина уже неделю"}, id="cyrillic"),
    pytest.param({"Body": "背中が痛いです"}, id="japanese"),
    pytest.param({"Body": "ظهري يؤلمني"}, id="arabic"),
    pytest.param({"Body": "a\x00b"}, id="nul-character"),
    pytest.param({"Body": "\u202e\u200b\ufeff"}, id="invisible-characters"),
]


@pytest.mark.parametrize("fields", ODD_BODIES)
@pytest.mark.parametrize("who", ["unknown-number", "in-conversation", "enrolled-idle"])
def test_odd_bodies_get_a_clear_reply_never_a_500(phone, clinic, db, fields, who):
    if who == "in-conversation":
        phone.text("PAIN")
    elif who == "enrolled-idle":
        complete_intake(phone)
    form = phone.form(None, **fields)

    replies = twiml_messages(phone.post(form))

    if who == "unknown-number":
        assert replies == [say("unknown_number", clinic)]
    elif who == "in-conversation":
        assert replies == [ask("intake", "chest_symptoms")]  # unclear: asked again
    else:
        assert replies == [say("followup.intro.recent", clinic), ask("followup", "status")]
        (alert,) = rows(db, Alert, Alert.kind == "patient_message")
        assert alert.summary == (fields.get("Body") or "").replace("\x00", "").strip()
    if who != "unknown-number":
        (inbound,) = rows(db, Message, Message.twilio_sid == form["MessageSid"])
        assert inbound.body == (fields.get("Body") or "").replace("\x00", "").strip()


def test_answers_with_emoji_around_them_are_understood(phone):
    phone.text("PAIN")
    assert phone.text("No 👍") == [ask("intake", "limb_weakness")]


@pytest.mark.parametrize("to", ["+16175559999", "not-a-number", "+1555", "12345"])
def test_text_to_a_number_no_clinic_owns_gets_empty_twiml(phone, db, to):
    form = phone.form("PAIN", To=to)
    assert twiml_messages(phone.post(form)) == []
    assert counts(db)["messages"] == counts(db)["patients"] == 0


@pytest.mark.parametrize("sender", ["+15551234567", "12", "abc", "+1617555014212345678",
                                    "client:anonymous"])
def test_text_from_a_malformed_number_gets_empty_twiml(phone, db, sender):
    form = phone.form("PAIN", From=sender)
    assert twiml_messages(phone.post(form)) == []
    assert counts(db)["patients"] == 0


# ---- signatures ---------------------------------------------------------------------------


def test_missing_signature_is_403(phone, db):
    response = phone.client.post("/twilio/sms", data=phone.form("PAIN"))
    assert response.status_code == 403
    assert counts(db)["messages"] == 0


@pytest.mark.parametrize("how", ["other-token", "tampered-body", "url-the-app-sees",
                                 "spoofed-host", "status-endpoint"])
def test_bad_signature_is_403(phone, db, how):
    form = phone.form("PAIN")
    path = "/twilio/status" if how == "status-endpoint" else "/twilio/sms"
    headers = {}
    if how == "other-token":
        signature = sign(PUBLIC_BASE_URL + path, form, "another-token")
    elif how == "tampered-body":
        signature = sign(PUBLIC_BASE_URL + path, form)
        form = {**form, "Body": "STOP"}
    elif how == "url-the-app-sees":
        signature = sign("http://localhost" + path, form)
    elif how == "spoofed-host":
        signature = sign("https://evil.example" + path, form)
        headers = {"Host": "evil.example", "X-Forwarded-Proto": "https"}
    else:
        signature = "bm90IGEgc2lnbmF0dXJl"
    assert phone.post(form, path=path, signature=signature, headers=headers).status_code == 403
    assert counts(db)["messages"] == 0


def test_without_public_base_url_the_signature_is_on_the_url_the_app_sees(make_app, clinic,
                                                                         clinic_number):
    app = make_app(PUBLIC_BASE_URL=None)
    local = Phone(app.test_client(), PATIENT, clinic_number, base_url="http://localhost")
    assert local.text("PAIN")[0] == intro("intake", clinic)
    proxied = Phone(app.test_client(), PATIENT, clinic_number)
    assert proxied.send("no").status_code == 403


def test_public_base_url_with_a_query_string_is_signed_with_it(phone):
    form = phone.form("PAIN")
    signature = sign(PUBLIC_BASE_URL + "/twilio/sms?clinic=1", form)
    response = phone.client.post("/twilio/sms?clinic=1", data=form,
                                 headers={"X-Twilio-Signature": signature})
    assert twiml_messages(response)


def test_no_auth_token_configured_refuses_every_webhook(make_app, clinic_number):
    app = make_app(TWILIO_AUTH_TOKEN=None)
    assert Phone(app.test_client(), PATIENT, clinic_number).send("PAIN").status_code == 403


# ---- delivery status callbacks ----------------------------------------------------------------


@pytest.fixture
def sent_consent(phone, clinic, db):
    """The consent text, sent through the real Twilio client on a fake HTTP client."""
    enroll(db, clinic)
    (row,) = rows(db, Outbox)
    fake = FakeTwilio()
    sender = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, http_client=fake.http_client())
    result = send_one(db, row.id, sender, datetime.now(UTC),
                             status_callback=PUBLIC_BASE_URL + "/twilio/status")
    assert result.status == "sent"
    return result.detail


def message_status(db, sid: str) -> tuple:
    (message,) = rows(db, Message, Message.twilio_sid == sid)
    return message.status, message.error_code


def test_status_callbacks_move_forward_only_and_are_idempotent(phone, db, sent_consent):
    sid = sent_consent
    assert message_status(db, sid) == ("queued", None)
    for status, expected in [("sent", "sent"), ("sent", "sent"), ("delivered", "delivered"),
                             ("sent", "delivered"), ("queued", "delivered"),
                             ("delivered", "delivered")]:
        response = phone.status(sid, status)
        assert response.status_code == 204
        assert message_status(db, sid) == (expected, None), status
    assert len(rows(db, Message, Message.direction == "out")) == 1


def test_a_late_sent_after_delivered_changes_nothing(phone, db, sent_consent):
    phone.status(sent_consent, "delivered")
    (before,) = rows(db, Message, Message.twilio_sid == sent_consent)
    phone.status(sent_consent, "sent")
    (after,) = rows(db, Message, Message.twilio_sid == sent_consent)
    assert (after.status, after.updated_at) == ("delivered", before.updated_at)


def test_failed_status_keeps_the_error_code(phone, db, sent_consent):
    phone.status(sent_consent, "sent")
    phone.status(sent_consent, "undelivered", error_code="30003")
    assert message_status(db, sent_consent) == ("undelivered", 30003)


@pytest.mark.parametrize("form_change", [{"MessageStatus": "bogus"}, {"ErrorCode": "x1"},
                                         {"MessageSid": "SMunknown"}])
def test_odd_status_callbacks_are_accepted_and_harmless(phone, db, sent_consent, form_change):
    form = {"MessageSid": sent_consent, "MessageStatus": "sent", **form_change}
    response = phone.post(form, path="/twilio/status")
    assert response.status_code == 204
    assert len(rows(db, Message)) == 1


@pytest.mark.parametrize("missing", ["MessageSid", "MessageStatus"])
def test_status_callback_without_sid_or_status_is_400(phone, db, missing):
    form = {"MessageSid": new_sid(), "MessageStatus": "sent"}
    del form[missing]
    response = phone.post(form, path="/twilio/status")
    assert response.status_code == 400 and missing in response.get_data(as_text=True)


def test_a_status_callback_that_beats_the_send_record_is_not_lost(phone, clinic, db):
    enroll(db, clinic)
    (row,) = rows(db, Outbox)
    # Twilio's "delivered" callback reaches the webhook before the create's answer returns.
    fake = FakeTwilio(callback_statuses=("delivered",))
    fake.callbacks_to(phone.client, PUBLIC_BASE_URL)
    sender = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, http_client=fake.http_client())
    sid = send_one(db, row.id, sender, datetime.now(UTC),
                   status_callback=PUBLIC_BASE_URL + "/twilio/status").detail
    assert [(c["sid"], c["answer"]) for c in fake.callbacks()] == [(sid, 204)]
    assert message_status(db, sid) == ("delivered", None)


def test_an_abandoned_new_intake_does_not_replace_the_open_episode(phone, clinic, db):
    """Only a completed intake closes the previous episode (CLINICAL.md §6): one that times out
    is filed under the open episode, whose follow-ups stay due, and the clinic is told."""
    complete_intake(phone)
    (episode,) = rows(db, Episode)
    phone.text("PAIN")
    phone.text("no")
    (active,) = rows(db, CheckIn, CheckIn.status == "active")
    timeout_at = datetime.fromisoformat(active.state["timeout_at"])
    with db.transaction() as session:
        assert checkins.tick_checkin(session, active.id, timeout_at + timedelta(seconds=1))
    (still,) = rows(db, Episode)
    assert (still.id, still.status) == (episode.id, "open")
    assert {f.status for f in rows(db, FollowUp)} == {"scheduled"}
    abandoned = rows(db, CheckIn, CheckIn.id == active.id)[0]
    assert (abandoned.status, abandoned.episode_id, abandoned.level) == ("timed_out", episode.id,
                                                                         "soon")
    (alert,) = rows(db, Alert, Alert.kind == "incomplete")
    assert alert.episode_id == episode.id


def test_an_early_check_with_no_check_left_after_it_is_the_final_one(phone, clinic, db):
    """With no scheduled check to come, "better" with pain left is PERSISTENT, not a promise of
    a later check that does not exist."""
    complete_intake(phone)
    with db.transaction() as session:
        for followup in session.query(FollowUp):
            followup.status = "done"
    phone.text("still sore")
    for body in followup_answers({**FOLLOWUP_CLEAR_EN, "status": "better", "pain_score": "4"}):
        last = phone.text(body)
    assert last == [say("advice.persistent", clinic)]
    (check,) = rows(db, CheckIn, CheckIn.kind == "followup")
    assert (check.final_check, check.level, check.reasons) == (True, "soon", ["PERSISTENT"])


def test_start_from_a_patient_who_never_opted_out_starts_a_check_in(phone, clinic, db):
    complete_intake(phone)
    assert phone.text("START") == [intro("intake", clinic), ask("intake", "chest_symptoms")]
    assert rows(db, Alert, Alert.kind == "patient_message") == []


def test_a_body_larger_than_any_webhook_is_refused_unread(client, db):
    """MAX_CONTENT_LENGTH holds on every route: 413 before the body is parsed (issue 14)."""
    huge = b"Body=" + b"x" * (300 * 1024)
    response = client.post("/twilio/sms", data=huge,
                           content_type="application/x-www-form-urlencoded",
                           headers={"X-Twilio-Signature": "not-checked-yet"})
    assert response.status_code == 413
    assert counts(db)["messages"] == 0


# ---- TwiML replies are tracked like outbox texts (issue 14) ---------------------------------


def reply_actions(response) -> list[str]:
    """The `action` URL of each <Message> of a TwiML reply (Twilio posts its status there)."""
    root = ET.fromstring(response.get_data())
    return [m.get("action") for m in root.iter("Message")]


def post_reply_status(phone: Phone, action: str, message_sid: str, status: str, *,
                      error_code: str | None = None):
    """Twilio's status callback for a TwiML <Message>: to its action URL, signed on it."""
    assert action.startswith(PUBLIC_BASE_URL + "/twilio/status?reply=")
    path = action[len(PUBLIC_BASE_URL):]
    form = {"MessageSid": message_sid, "MessageStatus": status, "AccountSid": ACCOUNT_SID,
            "From": phone.clinic_number, "To": phone.number, "ApiVersion": "2010-04-01"}
    if error_code:
        form["ErrorCode"] = error_code
    return phone.client.post(path, data=form,
                             headers={"X-Twilio-Signature": sign(PUBLIC_BASE_URL + path, form)})


def test_each_twiml_reply_gets_its_delivery_recorded_by_its_own_key(client, clinic_number, db):
    phone = Phone(client, PATIENT, clinic_number)
    first = phone.send("PAIN")
    actions = reply_actions(first)
    assert len(actions) == len(twiml_messages(first)) == 2 and len(set(actions)) == 2
    # A duplicate delivery gets the same replies with the same actions (Twilio's retry).
    assert reply_actions(phone.send("PAIN", sid=phone.last_sid)) == actions
    # The second reply's status arrives first, then the first's: each finds its own row.
    sids = [new_sid(), new_sid()]
    for action, sid, status in ((actions[1], sids[1], "delivered"),
                                (actions[0], sids[0], "sent"),
                                (actions[0], sids[0], "delivered"),
                                (actions[0], sids[0], "sent")):  # late: no step back
        assert post_reply_status(phone, action, sid, status).status_code == 204
    replies = rows(db, Message, Message.direction == "out", order_by=Message.id)
    assert [(m.body, m.twilio_sid, m.status) for m in replies] == [
        (intro("intake", rows(db, Clinic)[0]), sids[0], "delivered"),
        (ask("intake", "chest_symptoms"), sids[1], "delivered")]


def test_three_twiml_replies_lost_by_the_carrier_raise_the_delivery_alert(client, clinic_number,
                                                                         db):
    phone = Phone(client, PATIENT, clinic_number)
    actions = reply_actions(phone.send("PAIN")) + reply_actions(phone.send("no"))
    for action in actions[:3]:
        post_reply_status(phone, action, new_sid(), "undelivered", error_code="30003")
    (alert,) = rows(db, Alert)
    assert (alert.kind, alert.level) == ("delivery_failure", "soon")
    assert "30003" in alert.summary


@pytest.mark.parametrize("code", ["21610", "21211", "21614"])
def test_a_twiml_reply_refused_for_the_number_is_handled_as_a_send_would_be(
        client, clinic_number, db, code, make_app, dead_database_url):
    phone = Phone(client, PATIENT, clinic_number)
    (action, _) = reply_actions(phone.send("PAIN"))
    assert post_reply_status(phone, action, new_sid(), "failed",
                             error_code=code).status_code == 204
    (patient,) = rows(db, Patient)
    if code == "21610":  # the patient said STOP to Twilio: opted out, nothing more goes out
        assert patient.opted_out
        assert "invalid_number" not in {a.kind for a in rows(db, Alert)}
        # Nor a holding reply while the database is away (the spool remembers the opt-out).
        down = make_app(DATABASE_URL=dead_database_url)
        assert Phone(down.test_client(), PATIENT, clinic_number).text("hello?") == []
        down.extensions["db_away"].marker.unlink()  # as if 5 s had passed
        assert phone.text("no") == []
    else:
        assert patient.number_invalid
        (alert,) = rows(db, Alert)
        assert alert.kind == "invalid_number"
        # The patient then texts from that number: it takes texts, nothing is held back.
        assert phone.text("no") != []
        (patient,) = rows(db, Patient)
        assert patient.number_invalid is False


def test_a_reply_status_with_an_unknown_key_changes_nothing(client, clinic_number, db):
    phone = Phone(client, PATIENT, clinic_number)
    phone.send("PAIN")
    before = counts(db)
    action = PUBLIC_BASE_URL + "/twilio/status?reply=reply-000000000000000000000000-0"
    assert post_reply_status(phone, action, new_sid(), "delivered").status_code == 204
    assert counts(db) == before
    assert all(m.status == "replied" for m in rows(db, Message, Message.direction == "out"))


@pytest.mark.parametrize("signed_url", [
    PUBLIC_BASE_URL + "/twilio/sms",  # Twilio leaving the fragment out of its signature
    PUBLIC_BASE_URL + "/twilio/sms#rc=5&rp=all",  # or signing the URL as configured
    "https://triage.example.org:443/twilio/sms#rc=5&rp=all",  # with the port
])
def test_a_webhook_url_with_connection_overrides_still_verifies(make_app, clinic_number,
                                                                 signed_url):
    """The number's webhook is `.../twilio/sms#rc=5&rp=all` (Twilio retries a failed request
    up to 5 times): the fragment never reaches us, and the signature verifies either way."""
    app = make_app(TWILIO_URL_OVERRIDES="#rc=5&rp=all")
    phone = Phone(app.test_client(), PATIENT, clinic_number)
    form = phone.form("PAIN")
    assert twiml_messages(phone.post(form, signature=sign(signed_url, form)))
    other = phone.form("PAIN")
    forged = sign(PUBLIC_BASE_URL + "/twilio/sms#rc=1", other)  # another fragment: not ours
    assert phone.post(other, signature=forged).status_code == 403


def test_the_fallback_url_takes_the_same_text_once(client, clinic_number, db):
    """Twilio calls the number's fallback URL when the primary failed (or it thinks so: a
    reply that did not reach it): the text is handled once, and answered the same."""
    phone = Phone(client, PATIENT, clinic_number)
    form = phone.form("PAIN")
    first = twiml_messages(phone.post(form))
    retried = {**form, "ErrorCode": "11200", "ErrorUrl": PUBLIC_BASE_URL + "/twilio/sms"}
    assert twiml_messages(phone.post(retried, path="/twilio/sms/fallback")) == first
    assert counts(db)["receipts"] == 1 and len(rows(db, Message, Message.direction == "in")) == 1
    other = phone.form("no")
    assert phone.post(other, path="/twilio/sms/fallback",
                      signature=sign(PUBLIC_BASE_URL + "/twilio/sms", other)).status_code == 403
    assert twiml_messages(phone.post(other, path="/twilio/sms/fallback")) == [
        ask("intake", "limb_weakness")]
