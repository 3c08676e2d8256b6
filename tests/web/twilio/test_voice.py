"""Voice check-ins over /twilio/voice: TwiML read as XML, golden calls by keypad and by speech
in both languages, no input and garbage, a call finished by SMS, status callbacks, reminder
calls on a fake Twilio transport, and the signature check."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from flows.loader import get_flow
from service import clock
from service.conversations import checkins
from service.store.models import (
    Alert,
    Call,
    CheckIn,
    Episode,
    FollowUp,
    Message,
    Outbox,
    Patient,
)
from service.voice import calls as voice_calls
from service.voice import simulated as voice_sim
from service.voice.callers import TwilioCaller
from tests.support.phones import PUBLIC_BASE_URL, WEBHOOK_CONFIG
from tests.support.twilio import ACCOUNT_SID, AUTH_TOKEN, CALLS_URL, FakeTwilio
from tests.web.twilio.voice_helpers import CLINIC_LINE, Twiml, VoicePhone, text_sms

PATIENT = "+16175550142"
NOW = "2026-03-02T15:00:00+00:00"  # a Monday, 10:00 in Boston


@pytest.fixture
def app_config(app_config, database_url):
    # database_url is named so that its SQLite and PostgreSQL params reach this override.
    return {**app_config, **WEBHOOK_CONFIG}


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    """The entry points' clock (service.clock) stands still at NOW, so dates named are fixed."""
    monkeypatch.setenv(clock.FAKE_NOW, NOW)


@pytest.fixture
def clinic(make_clinic):
    return make_clinic(name="Elm Clinic", phone=CLINIC_LINE)


@pytest.fixture
def phone(client, clinic):
    return VoicePhone(client, PATIENT, clinic.numbers[0].phone_e164)


def test_a_call_opens_with_the_language_menu(phone):
    twiml = phone.dial()

    assert twiml.verbs == ["Gather", "Redirect"]
    gather = twiml.gather
    assert gather.get("input") == "dtmf speech"
    assert gather.get("action") == f"{PUBLIC_BASE_URL}/twilio/voice/lang?n=1"
    assert gather.get("numDigits") == "1"
    assert "español" in gather.get("hints")
    assert [(s.get("language"), s.text) for s in twiml.says] == [
        ("en-US", "Elm Clinic. In an emergency, hang up and call 9 1 1. For English, press 1."),
        ("es-MX", "En una emergencia, cuelgue y llame al 9 1 1. Para español, oprima 2.")]
    assert twiml.redirect == f"{PUBLIC_BASE_URL}/twilio/voice/silence?n=1"


# ---- golden calls -------------------------------------------------------------------------
# Each file under voice_golden/ holds a call's steps (dial, press, say, silent, hang_up) and the
# exact words heard, how the call listened next, and the check-in's outcome as stored. Set
# UPDATE_GOLDEN=1 to rewrite the expectations, then review the diff.

GOLDEN = Path(__file__).parent / "voice_golden"
CASES = sorted(GOLDEN.glob("*.yaml"))


def _open_episode(db, clinic, number: str, *, baseline: int, language: str = "en") -> None:
    """A patient whose intake (self-care, pain `baseline`) opened an episode 4 weeks ago."""
    with db.transaction() as session:
        patient = Patient(clinic_id=clinic.id, phone_e164=number, language=language,
                          consent="given", consented_at=clock.now(), created_at=clock.now())
        session.add(patient)
        session.flush()
        session.add(Episode(clinic_id=clinic.id, patient_id=patient.id, status="open",
                            opened_at=clock.now() - timedelta(days=28),
                            baseline_pain_score=baseline, intake_level="self_care",
                            last_level="self_care"))


def _outcome(db, number: str) -> dict:
    with db.transaction() as session:
        patient = session.execute(sa.select(Patient).where(Patient.phone_e164 == number)).scalar_one()
        checkin = session.execute(sa.select(CheckIn).where(CheckIn.patient_id == patient.id)
                                  .order_by(CheckIn.id.desc())).scalars().first()
        alerts = session.execute(sa.select(Alert.kind, Alert.level).where(
            Alert.patient_id == patient.id).order_by(Alert.id)).all()
        followups = session.execute(sa.select(FollowUp.kind, FollowUp.due_at).where(
            FollowUp.patient_id == patient.id, FollowUp.status == "scheduled")
            .order_by(FollowUp.due_at)).all()
        texts = session.execute(sa.select(Outbox.body).where(Outbox.patient_id == patient.id)
                                .order_by(Outbox.id)).scalars().all()
        return {
            "checkin": {"kind": checkin.kind, "channel": checkin.channel,
                        "status": checkin.status, "language": checkin.language,
                        "level": checkin.level, "reasons": list(checkin.reasons),
                        "missing": list(checkin.missing), "answers": dict(checkin.answers)},
            "alerts": [f"{kind} {level}" for kind, level in alerts],
            "followups": [f"{kind} {due.isoformat()}" for kind, due in followups],
            "texts": list(texts),
        }


def run_golden(case: dict, phone: VoicePhone, db) -> dict:
    transcript = []
    for step in case["steps"]:
        action, value = next(iter(step.items())) if isinstance(step, dict) else (step, None)
        if action == "hang_up":
            phone.hang_up()
            transcript.append({"hang_up": True})
            continue
        twiml = {"dial": lambda _: phone.dial(), "press": phone.press, "say": phone.say,
                 "silent": lambda _: phone.silent()}[action](value)
        transcript.append({action: value, "out": twiml.texts, "then": twiml.describe()}
                          if value is not None else
                          {action: True, "out": twiml.texts, "then": twiml.describe()})
    return {"transcript": transcript, "outcome": _outcome(db, phone.number)}


def test_there_are_golden_calls_for_every_level_by_keys_and_by_speech_in_both_languages():
    cases = [yaml.safe_load(p.read_text("utf-8")) for p in CASES]
    seen = {(c["lang"], c["by"], c["expect"]["outcome"]["checkin"]["level"]) for c in cases
            if "expect" in c}
    for level in ("emergency", "urgent", "soon", "self_care"):
        assert {by for _, by, lvl in seen if lvl == level} >= {"keys", "speech"}, level
    assert {lang for lang, _, _ in seen} == {"en", "es"}


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_call(path: Path, phone, clinic, db):
    case = yaml.safe_load(path.read_text("utf-8"))
    if case.get("episode"):
        _open_episode(db, clinic, phone.number, **case["episode"])
    got = run_golden(case, phone, db)
    if os.environ.get("UPDATE_GOLDEN"):
        case["expect"] = got
        path.write_text(yaml.safe_dump(case, allow_unicode=True, sort_keys=False, width=100),
                        "utf-8")
        return
    assert "expect" in case, f"{path.name} has no expectations; run with UPDATE_GOLDEN=1"
    assert got == case["expect"]


# ---- helpers ------------------------------------------------------------------------------

YES_NO_BEFORE_AGE = ["2"] * 8  # the eight red-flag questions of the intake, all "no"


def _walk(phone: VoicePhone, keys: list[str]) -> Twiml:
    twiml = phone.last
    for key in keys:
        twiml = phone.press(key)
    return twiml


def _checkin(db, number: str = PATIENT) -> CheckIn:
    with db.transaction() as session:
        return session.execute(sa.select(CheckIn).join(Patient).where(
            Patient.phone_e164 == number).order_by(CheckIn.id.desc())).scalars().first()


def _rows(db, model, *where) -> list:
    with db.transaction() as session:
        return list(session.execute(sa.select(model).where(*where).order_by(model.id)).scalars())


def _question(flow_id: str, field: str, channel: str, lang: str = "en") -> str:
    node = next(n for n in get_flow(flow_id).questions if n.field == field)
    return node.text_for(lang, channel)


# ---- TwiML --------------------------------------------------------------------------------


@pytest.mark.parametrize("key, tag, voice, hints", [
    ("1", "en-US", "Polly.Joanna", "yes, no, not sure"),
    ("2", "es-MX", "Polly.Mia", "sí, no, no sé"),
])
def test_the_chosen_language_hears_the_disclaimer_then_the_first_question(phone, key, tag,
                                                                          voice, hints):
    phone.dial()
    twiml = phone.press(key)

    assert twiml.verbs == ["Say", "Say", "Gather", "Redirect"]
    intro = twiml.says[0]
    assert (intro.get("language"), intro.get("voice")) == (tag, voice)
    assert "9 1 1" in intro.text and "diagn" in intro.text  # the emergency number, no diagnosis
    gather = twiml.gather
    assert gather.get("input") == "dtmf speech"
    assert gather.get("action") == f"{PUBLIC_BASE_URL}/twilio/voice/answer?n=2"
    assert (gather.get("language"), gather.get("hints")) == (tag, hints)
    assert gather.get("numDigits") == "1" and gather.get("finishOnKey") is None
    assert gather.get("speechTimeout") == "auto"
    lang = "en" if key == "1" else "es"
    assert [s.text for s in gather.iter("Say")] == [_question("intake", "chest_symptoms", "voice",
                                                              lang)]
    assert all(s.get("language") == tag for s in twiml.says)
    assert twiml.redirect == f"{PUBLIC_BASE_URL}/twilio/voice/silence?n=2"


def test_numbers_end_with_pound_and_are_read_back_so_1_is_never_taken_for_10(phone, db):
    phone.dial()
    phone.press("1")
    twiml = _walk(phone, YES_NO_BEFORE_AGE + ["45", "1", "14", "1", "2"])
    gather = twiml.gather
    assert twiml.texts == [_question("intake", "pain_score", "voice")]
    assert gather.get("finishOnKey") == "#" and gather.get("numDigits") is None
    assert "ten" in gather.get("hints").split(", ")

    twiml = phone.press("1")  # a "1" sent by a pause before the "0"
    assert twiml.texts == ["You pressed 1. Press 1 if that is right, or 2 to try again."]
    assert twiml.step() == "confirm" and twiml.gather.get("numDigits") == "1"
    assert "pain_score" not in _checkin(db).answers

    twiml = phone.press("2")  # not right: the question again
    assert twiml.texts == [_question("intake", "pain_score", "voice")] and twiml.step() == "answer"
    twiml = phone.press("10")
    assert twiml.texts == ["You pressed 1 0. Press 1 if that is right, or 2 to try again."]
    twiml = phone.press("1")
    assert twiml.texts == [_question("intake", "constant", "voice")]
    assert _checkin(db).answers["pain_score"] == 10


def test_a_spoken_number_is_read_back_and_a_spoken_yes_confirms_it(phone, db):
    phone.dial()
    phone.press("1")
    _walk(phone, YES_NO_BEFORE_AGE)
    twiml = phone.say("I am fifty two.")
    assert twiml.texts == ["I heard: 52. Press 1 if that is right, or 2 to try again."]
    phone.say("Yes.")
    twiml = phone.say("About three weeks.")
    assert twiml.texts == ["I heard: About three weeks. Press 1 if that is right, or 2 to try "
                           "again."]
    phone.say("Yes")
    assert (_checkin(db).answers["age_years"], _checkin(db).answers["duration_days"]) == (52, 21)


def test_a_number_out_of_range_is_asked_again_without_a_read_back(phone, db):
    phone.dial()
    phone.press("1")
    _walk(phone, YES_NO_BEFORE_AGE + ["45", "1", "14", "1", "2"])

    twiml = phone.press("42")

    assert twiml.texts == [_question("intake", "pain_score", "voice")] and twiml.step() == "answer"


def test_garbage_is_asked_again_then_the_spoken_fallback_then_recorded_as_not_answered(phone, db):
    phone.dial()
    phone.press("1")

    assert phone.press("7").texts == [_question("intake", "chest_symptoms", "voice")]
    assert phone.say("Banana bread.").texts == [
        "Please press 1 for yes, or 2 for no. You can also say yes or no."]
    twiml = phone.press("9")

    assert twiml.texts == [_question("intake", "limb_weakness", "voice")]
    checkin = _checkin(db)
    assert checkin.answers == {"chest_symptoms": None} and checkin.status == "active"
    heard = _rows(db, Message, Message.direction == "in", Message.channel == "voice")
    assert [m.body for m in heard] == ["1", "7", "Banana bread.", "9"]


def test_a_stale_or_repeated_request_is_never_taken_as_an_answer(phone, db, client):
    phone.dial()
    current = phone.press("1")
    stale = f"{PUBLIC_BASE_URL}/twilio/voice/answer?n=1"

    again = Twiml(phone.post(stale, phone.form(Digits="1")))
    repeated = Twiml(phone.post(f"{PUBLIC_BASE_URL}/twilio/voice", phone.form()))

    assert again.xml == current.xml and repeated.xml == current.xml
    assert _checkin(db).answers == {}


# ---- no input, offers, and finishing by text ----------------------------------------------


def test_no_input_twice_offers_text_or_the_clinic(phone):
    phone.dial()
    phone.press("1")
    twiml = phone.silent()
    assert twiml.texts == ["Sorry, I did not hear you.",
                           _question("intake", "chest_symptoms", "voice")]

    twiml = phone.silent()

    assert twiml.verbs == ["Gather", "Redirect"] and twiml.step() == "offer"
    assert twiml.texts == ["We did not hear an answer.", "To finish by text message, press 1.",
                           "To talk to Elm Clinic, press 2.", "Or you can hang up now."]
    assert twiml.gather.get("hints") == "text, clinic"


def test_pressing_2_at_the_offer_connects_the_caller_to_the_clinic(phone):
    phone.dial()
    phone.press("1")
    phone.silent()
    phone.silent()

    twiml = phone.press("2")

    assert twiml.verbs == ["Say", "Dial", "Hangup"]
    assert twiml.dial == CLINIC_LINE
    assert twiml.texts == ["Please hold. We are calling Elm Clinic for you."]


def test_pressing_1_at_the_offer_texts_the_question_and_the_check_in_finishes_by_sms(
        phone, db, client, clinic):
    phone.dial()
    phone.press("1")
    phone.press("2")  # chest: no, on the call
    phone.silent()
    phone.silent()

    twiml = phone.press("1")

    assert twiml.verbs == ["Say", "Hangup"]
    assert twiml.texts == ["We will text you the next question now. Reply to it to finish. "
                           "Goodbye."]
    texts = _rows(db, Outbox)
    assert [t.body for t in texts] == [
        "Elm Clinic: Your phone check-in is not done. To finish by text, answer the question "
        "below. Reply STOP to end.", _question("intake", "limb_weakness", "sms")]
    assert all(t.not_before == clock.now() for t in texts)  # asked for: at once
    phone.hang_up()
    assert len(_rows(db, Outbox)) == 2  # the end of the call adds nothing

    replies = [text_sms(client, PATIENT, phone.clinic_number, body) for body in
               ["no"] * 7 + ["45", "2 weeks", "no", "3", "no", "yes", "no", "no", "no"]]

    assert replies[0] == [_question("intake", "bowel_bladder", "sms")]
    checkin = _checkin(db)
    assert (checkin.status, checkin.channel, checkin.level) == ("completed", "sms", "self_care")
    assert checkin.answers["chest_symptoms"] is False  # answered on the call, kept


def test_a_call_hung_up_midway_goes_on_by_text_from_the_next_question(phone, db, client):
    phone.dial()
    phone.press("1")
    _walk(phone, ["2", "2", "2"])

    phone.hang_up()

    checkin = _checkin(db)
    assert (checkin.status, checkin.channel) == ("active", "sms")
    assert [t.body for t in _rows(db, Outbox)][1:] == [_question("intake", "cancer_history", "sms")]
    call = _rows(db, Call)[0]
    assert (call.status, call.stage, call.duration_s) == ("completed", "ended", 61)
    replies = [text_sms(client, PATIENT, phone.clinic_number, body) for body in
               ["yes"] + ["no"] * 4 + ["45", "2 weeks", "no", "3", "no", "yes", "no", "no", "no"]]
    checkin = _checkin(db)
    assert (checkin.status, checkin.level, checkin.reasons[0]) == ("completed", "urgent",
                                                                 "CANCER_HISTORY")
    assert [a.kind for a in _rows(db, Alert)] == ["triage"]
    assert replies[-1] and "Call Elm Clinic today" in replies[-1][0]


def test_a_text_sent_during_the_call_gets_the_question_in_writing_not_taken_as_an_answer(
        phone, db, client):
    phone.dial()
    phone.press("1")
    phone.press("2")

    replies = text_sms(client, PATIENT, phone.clinic_number, "yes")

    assert replies == [_question("intake", "limb_weakness", "sms")]
    checkin = _checkin(db)
    assert checkin.answers == {"chest_symptoms": False} and checkin.channel == "sms"


def test_an_unfinished_call_that_is_not_finished_by_text_times_out_incomplete_with_its_alert(
        phone, db):
    phone.dial()
    phone.press("1")
    _walk(phone, ["2", "2"])
    phone.hang_up()
    checkin_id = _checkin(db).id
    asked = clock.now()

    with db.transaction() as session:
        assert checkins.tick_checkin(session, checkin_id, asked + timedelta(hours=24))
    with db.transaction() as session:
        assert checkins.tick_checkin(session, checkin_id, asked + timedelta(hours=72))

    checkin = _checkin(db)
    assert (checkin.status, checkin.level, checkin.reasons[0]) == ("timed_out", "soon",
                                                                 "INCOMPLETE")
    assert "cancer_history" in checkin.missing
    assert [(a.kind, a.level) for a in _rows(db, Alert)] == [("incomplete", "soon")]
    bodies = [t.body for t in _rows(db, Outbox)]
    assert bodies[-1].startswith("Thank you. We did not get all your answers")  # SMS advice
    assert all("Press 1" not in body for body in bodies)  # no spoken wording by text


# ---- outcomes -----------------------------------------------------------------------------


def test_an_emergency_is_saved_before_the_advice_is_heard_and_the_advice_can_be_heard_again(
        phone, db):
    phone.dial()
    phone.press("1")

    twiml = phone.press("1")  # chest pain: yes

    assert twiml.verbs == ["Say", "Gather", "Redirect"]  # the advice cannot be cut by a key
    assert twiml.says[0].text.startswith("Your answers may mean a serious problem. Hang up now "
                                         "and call 9 1 1")
    assert twiml.step() == "advice"
    # Already committed: a caller who hangs up now loses nothing.
    checkin = _checkin(db)
    assert (checkin.status, checkin.level) == ("completed", "emergency")
    assert [(a.kind, a.level) for a in _rows(db, Alert)] == [("triage", "emergency")]

    again = phone.press("1")
    assert again.says[0].text == twiml.says[0].text and again.step() == "advice"
    phone.hang_up()
    assert _rows(db, Outbox) == []  # nothing left to finish by text


def test_silence_after_the_advice_says_goodbye(phone):
    phone.dial()
    phone.press("1")
    phone.press("1")

    twiml = phone.silent()

    assert twiml.verbs == ["Say", "Hangup"] and twiml.texts == ["Thank you. Goodbye."]


def test_saying_stop_ends_calls_and_texts(phone, db, app):
    phone.dial()
    phone.press("1")

    twiml = phone.say("Stop calling me.")

    assert twiml.verbs == ["Say", "Hangup"]
    assert twiml.texts[0].startswith("You will get no more calls or texts from us.")
    patient = _rows(db, Patient)[0]
    assert patient.opted_out and not patient.calls_allowed
    assert _checkin(db).status == "cancelled"
    # While the database is away, their texts get no holding reply either.
    assert app.extensions["spool"].opted_out(phone.clinic_number, PATIENT)


def test_a_check_in_begun_by_text_continues_on_a_call(phone, db, client):
    text_sms(client, PATIENT, phone.clinic_number, "PAIN")
    text_sms(client, PATIENT, phone.clinic_number, "no")

    phone.dial()
    twiml = phone.press("2")  # and in Spanish

    assert twiml.texts[-1] == _question("intake", "limb_weakness", "voice", "es")
    assert twiml.gather.get("language") == "es-MX"
    checkin = _checkin(db)
    assert (checkin.channel, checkin.language, checkin.answers) == ("voice", "es",
                                                                    {"chest_symptoms": False})


# ---- callers and callbacks ----------------------------------------------------------------


def test_a_hidden_number_hears_how_to_reach_the_clinic(client, clinic, db):
    phone = VoicePhone(client, "anonymous", clinic.numbers[0].phone_e164)

    twiml = phone.dial()

    assert twiml.verbs == ["Say", "Say", "Hangup"]
    assert [say.get("language") for say in twiml.says] == ["en-US", "es-MX"]
    assert "cannot see your phone number" in twiml.text and "6 1 7, 5 5 5, 9 0 0 0" in twiml.text
    assert _rows(db, Patient) == []


def test_call_status_callbacks_are_recorded_once_and_never_go_backwards(phone, db):
    phone.dial()
    assert phone.status("ringing").status_code == 204  # late: the call is already in progress
    assert _rows(db, Call)[0].status == "in-progress"

    phone.hang_up()
    phone.status("in-progress")
    phone.hang_up()

    call = _rows(db, Call)[0]
    assert (call.status, call.duration_s, call.ended_at) == ("completed", 61, clock.now())
    assert VoicePhone(phone.client, PATIENT, phone.clinic_number).status(
        "completed").status_code == 204  # a call we do not know: nothing to record


@pytest.mark.parametrize("path", ["/twilio/voice", "/twilio/voice/answer?n=1",
                                  "/twilio/voice/silence?n=1", "/twilio/status"])
@pytest.mark.parametrize("signature", ["", "bad-signature"])
def test_a_request_without_a_valid_signature_gets_403(phone, db, path, signature):
    form = phone.form(Digits="1", CallStatus="completed")
    response = phone.client.post(path, data=form, headers={"X-Twilio-Signature": signature})

    assert response.status_code == 403
    assert _rows(db, Call) == [] and _rows(db, Patient) == []


# ---- reminder calls -----------------------------------------------------------------------


@pytest.fixture
def fake_api():
    return FakeTwilio()


@pytest.fixture
def caller(fake_api):
    """The real `twilio` client, on the fake's in-process transport."""
    return TwilioCaller(ACCOUNT_SID, AUTH_TOKEN, base_url=PUBLIC_BASE_URL,
                        http_client=fake_api.http_client())


def _followup_by_text(db, clinic, *, calls_allowed: bool = True) -> int:
    """A patient whose 4-week follow-up was texted at NOW and got no reply; the check-in id."""
    now = clock.now()
    with db.transaction() as session:
        patient = Patient(clinic_id=clinic.id, phone_e164=PATIENT, language="en",
                          consent="given", consented_at=now, calls_allowed=calls_allowed,
                          created_at=now)
        session.add(patient)
        session.flush()
        episode = Episode(clinic_id=clinic.id, patient_id=patient.id, status="open",
                          opened_at=now - timedelta(days=28), baseline_pain_score=4,
                          intake_level="self_care", last_level="self_care")
        session.add(episode)
        session.flush()
        followup = FollowUp(clinic_id=clinic.id, patient_id=patient.id, episode_id=episode.id,
                            kind="first", due_at=now, status="claimed", created_at=now)
        session.add(followup)
        session.flush()
        assert checkins.start_followup(session, followup, now) == "started"
        return followup.checkin_id


def _set_clock(monkeypatch, when: datetime) -> datetime:
    monkeypatch.setenv(clock.FAKE_NOW, when.isoformat())
    return when


def _outbound(phone: VoicePhone, call: Call) -> VoicePhone:
    phone.call_sid, phone.outbound = call.call_sid, True
    return phone


def test_a_followup_with_no_reply_for_48_hours_gets_a_reminder_call(db, clinic, caller, fake_api):
    checkin_id = _followup_by_text(db, clinic)
    start = clock.now()
    with db.transaction() as session:
        assert voice_calls.due_reminder_checkin_ids(session, start + timedelta(hours=47)) == []
        assert voice_calls.due_reminder_checkin_ids(session, start + timedelta(hours=48)) == [
            checkin_id]

    outcome = voice_calls.place_reminder_call(db, _checkin(db), start + timedelta(hours=48),
                                              caller)

    assert outcome == "placed"
    (call,) = _rows(db, Call)
    (request,) = fake_api.posts()
    assert request["url"] == CALLS_URL
    form = request["form"]
    assert (form["To"], form["From"]) == (PATIENT, clinic.numbers[0].phone_e164)
    assert form["Url"] == f"{PUBLIC_BASE_URL}/twilio/voice?call={call.id}"
    assert form["StatusCallback"] == f"{PUBLIC_BASE_URL}/twilio/status?call={call.id}"
    assert (form["Method"], form["MachineDetection"]) == ("POST", "DetectMessageEnd")
    assert (call.status, call.attempt, call.purpose, call.checkin_id) == (
        "queued", 1, "reminder", checkin_id)
    assert call.call_sid and call.call_sid == fake_api.calls()[0]["sid"]
    # One series of reminder calls per check-in.
    assert voice_calls.place_reminder_call(db, _checkin(db), start + timedelta(hours=49),
                                           caller) is None


def test_busy_and_no_answer_are_tried_at_most_twice_more(db, clinic, caller, fake_api, phone,
                                                         monkeypatch):
    _followup_by_text(db, clinic)
    now = clock.now() + timedelta(hours=48)
    assert voice_calls.place_reminder_call(db, _checkin(db), now, caller) == "placed"

    for status in ("busy", "no-answer", "busy"):
        call = _rows(db, Call)[-1]
        now = _set_clock(monkeypatch, now + timedelta(minutes=1))
        response = _outbound(phone, call).status(status, call_id=call.id)
        assert response.status_code == 204
        calls = _rows(db, Call)
        if len(calls) > call.attempt:  # the next attempt, an hour later
            retry = calls[-1]
            assert (retry.status, retry.attempt) == ("pending", call.attempt + 1)
            assert retry.not_before == now + timedelta(hours=1)
            assert voice_calls.place_call(db, retry.id, caller, now) == "skipped"  # not yet
            now = retry.not_before
            assert voice_calls.place_call(db, retry.id, caller, now) == "placed"
    phone.status("busy", call_id=_rows(db, Call)[-1].id)  # repeated callback: no 4th call

    calls = _rows(db, Call)
    assert [(c.attempt, c.status) for c in calls] == [(1, "busy"), (2, "no-answer"), (3, "busy")]
    assert len(fake_api.calls()) == 3


def test_reminder_calls_wait_for_the_allowed_hours(db, clinic, caller, fake_api, phone,
                                                   monkeypatch):
    _followup_by_text(db, clinic)
    late = datetime(2026, 3, 5, 3, 0, tzinfo=UTC)  # Wednesday 22:00 in Boston
    morning = datetime(2026, 3, 5, 13, 0, tzinfo=UTC)  # Thursday 08:00

    assert voice_calls.place_reminder_call(db, _checkin(db), late, caller) == "skipped"
    (call,) = _rows(db, Call)
    assert (call.status, call.not_before) == ("pending", morning) and fake_api.calls() == []
    with db.transaction() as session:
        assert voice_calls.due_call_ids(session, morning - timedelta(minutes=1)) == []
        assert voice_calls.due_call_ids(session, morning) == [call.id]
    assert voice_calls.place_call(db, call.id, caller, morning) == "placed"

    evening = _set_clock(monkeypatch, datetime(2026, 3, 6, 1, 30, tzinfo=UTC))  # Thu 20:30
    _outbound(phone, _rows(db, Call)[0]).status("no-answer")

    retry = _rows(db, Call)[-1]
    assert retry.attempt == 2 and retry.not_before == datetime(2026, 3, 6, 13, 0, tzinfo=UTC)
    assert evening < retry.not_before


def test_an_answering_machine_hears_how_to_reach_us_and_nothing_about_health(
        db, clinic, caller, phone):
    _followup_by_text(db, clinic)
    voice_calls.place_reminder_call(db, _checkin(db), clock.now() + timedelta(hours=48), caller)
    call = _rows(db, Call)[0]

    twiml = _outbound(phone, call).pick_up(call.id, answered_by="machine_end_beep")

    assert twiml.verbs == ["Say", "Hangup"]
    assert twiml.text == ("Hello. This is Elm Clinic, calling for a short check-in. Please call "
                          "us back at 6 1 7, 5 5 5, 9 0 0 0, or reply to our text. Thank you. "
                          "Goodbye.")
    for word in ("pain", "symptom", "cancer", "diagnos", "emergency", "weak"):
        assert word not in twiml.text.lower()
    phone.hang_up()
    calls = _rows(db, Call)
    assert [(c.status, c.answered_by) for c in calls] == [("completed", "machine_end_beep")]
    assert _checkin(db).channel == "sms"


def test_a_reminder_call_answered_continues_the_followup_by_voice(db, clinic, caller, phone):
    checkin_id = _followup_by_text(db, clinic)
    voice_calls.place_reminder_call(db, _checkin(db), clock.now() + timedelta(hours=48), caller)
    call = _rows(db, Call)[0]

    assert _outbound(phone, call).pick_up(call.id).step() == "lang"
    twiml = phone.press("1")
    assert twiml.texts[0].startswith("Hello. This is Elm Clinic. A few weeks ago you told us")
    assert twiml.texts[-1] == _question("followup", "status", "voice")
    assert twiml.gather.get("hints") == "gone, better, the same, worse"
    twiml = _walk(phone, ["2", "2", "1"] + ["2"] * 8)  # better, pain 2, no red flags

    assert twiml.says[0].text.startswith("Glad your pain is gone.")
    checkin = _checkin(db)
    assert (checkin.id, checkin.status, checkin.channel, checkin.reasons) == (
        checkin_id, "completed", "voice", ["RESOLVED"])
    assert _rows(db, Episode)[0].status == "closed"


def test_no_reminder_call_for_a_patient_who_does_not_take_calls(db, clinic, caller, fake_api):
    _followup_by_text(db, clinic, calls_allowed=False)
    later = clock.now() + timedelta(hours=48)
    with db.transaction() as session:
        assert voice_calls.due_reminder_checkin_ids(session, later) == []

    assert voice_calls.place_reminder_call(db, _checkin(db), later, caller) is None
    assert fake_api.requests() == [] and _rows(db, Call) == []


def test_a_reminder_call_is_dropped_when_the_patient_texted_back_first(db, clinic, caller,
                                                                      fake_api, client):
    _followup_by_text(db, clinic)
    late = datetime(2026, 3, 5, 3, 0, tzinfo=UTC)  # the call waits for the morning
    voice_calls.place_reminder_call(db, _checkin(db), late, caller)
    text_sms(client, PATIENT, clinic.numbers[0].phone_e164, "better")

    call = _rows(db, Call)[0]
    assert voice_calls.place_call(db, call.id, caller, call.not_before) == "cancelled"
    assert fake_api.requests() == []


@pytest.mark.parametrize("error, outcome", [((503, 20003), "retry"), ((400, 21215), "failed")])
def test_twilio_errors_when_placing_a_call(db, clinic, caller, fake_api, error, outcome):
    _followup_by_text(db, clinic)
    status, code = error
    fake_api.fail(status, code=code)
    now = clock.now() + timedelta(hours=48)

    assert voice_calls.place_reminder_call(db, _checkin(db), now, caller) == outcome

    (call,) = _rows(db, Call)
    if outcome == "retry":  # 5xx: the same attempt again a few minutes later
        assert (call.status, call.not_before) == ("pending", now + timedelta(minutes=5))
        assert voice_calls.place_call(db, call.id, caller, call.not_before) == "placed"
        assert [r["answer"] for r in fake_api.posts()] == [503, 201]
        assert _rows(db, Call)[0].call_sid == fake_api.calls()[0]["sid"]
    else:  # refused for good (e.g. no permission to call that country): no retries
        assert (call.status, call.error_code) == ("failed", 21215)
        assert len(_rows(db, Call)) == 1


# ---- the simulator's text walk ------------------------------------------------------------


def test_a_call_can_be_walked_as_text_without_a_phone(db, clinic):
    now = clock.now()
    turn = voice_sim.dial(db, clinic_number=clinic.numbers[0].phone_e164, caller=PATIENT,
                          now=now)
    assert turn.listening["step"] == "lang" and "For English, press 1." in turn.as_text()
    assert turn.as_text().startswith("[en] Elm Clinic. In an emergency, hang up and call 9 1 1.")

    turn = voice_sim.respond(db, call_sid=turn.call_sid, digits="1", now=now)
    assert turn.lines[-1]["text"] == _question("intake", "chest_symptoms", "voice")
    turn = voice_sim.silence(db, call_sid=turn.call_sid, now=now)
    assert turn.lines[0]["text"] == "Sorry, I did not hear you."
    turn = voice_sim.respond(db, call_sid=turn.call_sid, speech="yes", now=now)

    assert turn.lines[0]["text"].startswith("Your answers may mean a serious problem.")
    assert turn.listening["step"] == "advice" and not turn.ended
    turn = voice_sim.respond(db, call_sid=turn.call_sid, digits="3", now=now)
    assert turn.ended and "(the call ends)" in turn.as_text()
    assert _checkin(db).level == "emergency"


def test_the_simulator_page_can_call_and_answer_with_the_keypad(client, clinic, db):
    page = client.get("/simulator/").get_data(as_text=True)
    assert 'id="call"' in page and 'id="keypad"' in page
    number = clinic.numbers[0].phone_e164

    turn = client.post("/simulator/api/call", json={"from": PATIENT, "to": number}).get_json()
    assert turn["listening"]["step"] == "lang"
    turn = client.post("/simulator/api/call/input",
                       json={"call_sid": turn["call_sid"], "digits": "2"}).get_json()
    assert turn["lines"][-1]["text"] == _question("intake", "chest_symptoms", "voice", "es")
    assert turn["listening"]["keys"] == "one key"
    turn = client.post("/simulator/api/call/input",
                       json={"call_sid": turn["call_sid"], "hangup": True}).get_json()
    assert turn["ended"]

    thread = client.get("/simulator/api/messages",
                        query_string={"from": PATIENT, "to": number}).get_json()
    assert {m["channel"] for m in thread["messages"]} == {"voice"}
    # Hung up unfinished: the check-in goes on by text, from the question it was at.
    assert [p["body"] for p in thread["pending"]][1:] == [
        _question("intake", "chest_symptoms", "sms", "es")]
    assert client.post("/simulator/api/call/input",
                       json={"call_sid": "CA123", "digits": "1"}).status_code == 400


def test_with_the_database_away_a_caller_hears_to_call_back_and_the_call_ends(make_app, clinic,
                                                                             tmp_path):
    app = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'missing' / 'triage.db'}")
    phone = VoicePhone(app.test_client(), PATIENT, clinic.numbers[0].phone_e164)

    twiml = phone.dial()

    assert twiml.verbs == ["Say", "Say", "Hangup"]
    assert twiml.texts[0].startswith("Sorry, we cannot take your answers right now.")
    assert "emergency" in twiml.texts[0]


def test_erasing_a_patient_erases_their_calls_too(phone, db):
    from service.records.patients import erase_patient

    phone.dial()
    phone.press("1")
    _walk(phone, YES_NO_BEFORE_AGE + ["45"])  # a number awaiting "1 if right"
    with db.transaction() as session:
        patient = session.execute(sa.select(Patient)).scalar_one()
        erase_patient(session, patient, actor_type="staff", actor_id=1, now=clock.now())

    (call,) = _rows(db, Call)
    assert (call.from_number, call.pending, call.last_reply) == ("", {}, {})
    assert all(m.body == "" for m in _rows(db, Message))


# ---- the clinic's line does not answer (issue 14) -------------------------------------------


def _to_the_clinic(phone) -> Twiml:
    phone.dial()
    phone.press("1")
    phone.silent()
    phone.silent()
    return phone.press("2")


def _dial_ends(phone, twiml: Twiml, status: str) -> Twiml:
    """Twilio posts the <Dial>'s action when the dialled call ends (DialCallStatus)."""
    action = twiml.root.find("Dial").get("action")
    assert action.startswith(PUBLIC_BASE_URL + "/twilio/voice/dialed?n=")
    return phone._follow(action, DialCallStatus=status, DialCallDuration="0")


def test_a_call_the_clinic_answered_ends_when_it_ends(phone):
    assert _dial_ends(phone, _to_the_clinic(phone), "completed").verbs == ["Hangup"]


@pytest.mark.parametrize("status", ["no-answer", "busy", "failed"])
def test_nobody_answering_offers_to_go_on_by_text_instead_of_hanging_up(phone, db, status):
    twiml = _dial_ends(phone, _to_the_clinic(phone), status)

    assert twiml.verbs == ["Gather", "Redirect"] and twiml.step() == "unanswered"
    assert twiml.texts == ["Sorry, no one at Elm Clinic can take your call now.",
                           "To finish by text message, press 1.",
                           "Or stay on the line to leave a message for Elm Clinic."]
    twiml = phone.press("1")
    assert twiml.texts == ["We will text you the next question now. Reply to it to finish. "
                           "Goodbye."]
    assert [t.body for t in _rows(db, Outbox)][-1] == _question("intake", "chest_symptoms",
                                                                "sms")


def test_nobody_answering_lets_the_caller_leave_a_message_for_the_clinic(phone, db):
    _dial_ends(phone, _to_the_clinic(phone), "no-answer")
    twiml = phone.silent()  # they stay on the line

    assert twiml.verbs == ["Say", "Record", "Hangup"]
    assert twiml.texts == ["Please leave your message after the tone. Press the pound key "
                           "when you are done."]
    record = twiml.root.find("Record")
    assert record.get("maxLength") == "120" and record.get("finishOnKey") == "#"
    recording = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"
    twiml = phone._follow(record.get("action"), RecordingUrl=recording,
                          RecordingDuration="14")
    assert twiml.texts == ["Thank you. We will give your message to Elm Clinic. In an "
                           "emergency, call 9 1 1. Goodbye."] and twiml.hangup
    (alert,) = [a for a in _rows(db, Alert) if a.kind == "callback_requested"]
    assert alert.level == "soon" and recording in alert.summary and "14 s" in alert.summary
    # Twilio repeating the recording's request raises nothing more.
    phone._follow(record.get("action"), RecordingUrl=recording, RecordingDuration="14")
    assert len([a for a in _rows(db, Alert) if a.kind == "callback_requested"]) == 1
