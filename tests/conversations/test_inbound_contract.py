"""Inbound texts against CLINICAL.md §6-§7, from a review of the inbound side (2026-12-03):
each of these broke the contract before its fix. Driven through the real signed webhook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.conversations import checkins, consent
from service.records import patients as patient_records
from service.store.models import Alert, CheckIn, Clinic, FollowUp, Patient
from tests.conversations.test_real_world_texts import expect, finish_intake, start_intake
from tests.support.db import rows
from tests.support.phones import WEBHOOK_CONFIG, Phone

PATIENT = "+16175550142"
DAYTIME = datetime(2025, 3, 3, 15, 0, tzinfo=UTC)  # 10:00 in Boston


@pytest.fixture
def app_config(app_config, database_url):
    return {**app_config, **WEBHOOK_CONFIG}


@pytest.fixture
def clinic(make_clinic) -> Clinic:
    return make_clinic(name="Back Clinic")


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(DAYTIME, tick=False)
    return time_machine


@pytest.fixture
def phone(client, clinic, clock) -> Phone:
    return Phone(client, PATIENT, clinic.numbers[0].phone_e164)


def enroll(db, clinic, **kw):
    with db.transaction() as session:
        return consent.enroll_patient(session, session.get(Clinic, clinic.id), phone=PATIENT,
                                      now=DAYTIME, **kw).id


def alerts(db):
    return [(a.kind, a.level, a.summary) for a in rows(db, Alert, order_by=Alert.id)]


# 1. §7 "Consent first" / §6: a YES after a few questions is swallowed by the reply limit.
def test_yes_after_three_questions_before_consent_still_starts_the_check_in(
        phone, clinic, db, clock):
    enroll(db, clinic)
    for n, text in enumerate(["who is this?", "what is this about", "is this Dr Lee's office"]):
        clock.move_to(DAYTIME + timedelta(minutes=1 + n), tick=False)
        assert phone.text(text) == [expect("k:consent.waiting", clinic, "en")]
    clock.move_to(DAYTIME + timedelta(minutes=4), tick=False)

    replies = phone.text("YES")

    (patient,) = rows(db, Patient)
    assert patient.consent == "given", "the patient's YES was dropped"
    assert replies, "no reply at all to YES"


# 2. §6: "An unclear reply is re-asked once with the same words and once with a simpler
#    fallback". The repeat guard silences the same hedge given to a *different* question.
def test_the_same_hedge_to_a_later_question_is_re_asked_not_ignored(phone, clinic, db):
    start_intake(phone, "en")
    assert phone.text("sometimes") == [expect("q:chest_symptoms", clinic, "en")]
    next_question = phone.text("no")  # chest: no -> the next question
    assert len(next_question) == 1

    replies = phone.text("sometimes")  # a new question, first unclear reply

    assert replies == next_question, "the patient gets silence and the flow stalls"


# 3. §7 "Opting back in ... restores the follow-ups that the opt-out cancelled": follow-ups
#    staff had paused were not cancelled by the opt-out's choice; START un-pauses them.
def test_start_does_not_resume_follow_ups_staff_paused(phone, clinic, db):
    finish_intake(phone, "en")
    with db.transaction() as session:
        patient = session.query(Patient).one()
        assert patient_records.pause_followups(session, patient, actor_type="staff",
                                               actor_id=1, now=DAYTIME) == 2
    phone.text("STOP")

    replies = phone.text("START")

    assert {f.status for f in rows(db, FollowUp)} == {"paused"}, \
        "staff's pause was silently undone by STOP + START"
    assert replies == [checkins.text_for("optin.confirm", clinic, "en")]


# 4. §6 "Requests to be contacted at any time ... raise a 'callback requested' alert ...
#    (after an opt-out: the alert, and no reply)"; §7 an opted-out patient's text reporting
#    symptoms "raises a patient-message alert so staff can call".
@pytest.mark.parametrize(("text", "kind"), [
    ("Stop texting me. Call me instead", "callback_requested"),
    ("stop texting me, I can't feel my legs", "patient_message"),
])
def test_an_opt_out_that_asks_for_a_call_or_reports_symptoms_reaches_staff(
        phone, clinic, db, text, kind):
    finish_intake(phone, "en")

    assert phone.text(text) == [expect("k:optout.confirm", clinic, "en")]

    (patient,) = rows(db, Patient)
    assert patient.opted_out
    assert [k for k, _, _ in alerts(db)] == [kind], "the clinic never hears of it"


# 5. §6 order: "then START, restart and language words"; §7 prompts "exist in English and
#    Spanish". Before consent, ESPAÑOL is not a language switch: English again, and an alert.
def test_a_language_word_before_consent_switches_the_language(phone, clinic, db):
    enroll(db, clinic)

    replies = phone.text("ESPAÑOL")

    (patient,) = rows(db, Patient)
    assert patient.language == "es"
    assert replies in ([], [expect("k:consent.waiting", clinic, "es")])
    assert alerts(db) == []


# 6. §7: consent may be revoked "in any reasonable manner"; STOP used in its opt-out sense
#    with a reason is not "another sense". Gets the stop hint and an early health check.
@pytest.mark.parametrize("text", ["STOP you have the wrong number", "Stop, wrong number",
                                  "who is this? stop"])
def test_stop_with_a_reason_is_an_opt_out(phone, clinic, db, text):
    finish_intake(phone, "en")

    replies = phone.text(text)

    (patient,) = rows(db, Patient)
    assert patient.opted_out, replies
    assert replies == [expect("k:optout.confirm", clinic, "en")]


# 8. §6 Acknowledgements: after a conversation a plain "yes" gets no reply and starts nothing
#    (tests/conversations/test_real_world_texts.py says so for "yes"). With Twilio's opt-out
#    handling on, Twilio tags YES (its default opt-in word) OptOutType=START even for a patient
#    who never opted out; the service then starts a brand-new intake, which once finished
#    closes the open episode, cancels its day-28/42 follow-ups and resets the baseline score.
def test_a_yes_that_twilio_tags_start_after_a_check_in_starts_nothing(client, make_clinic, db,
                                                                      clock):
    clinic = make_clinic(name="Back Clinic", twilio_optout_handling=True)
    phone = Phone(client, PATIENT, clinic.numbers[0].phone_e164)
    finish_intake(phone, "en")
    before = len(rows(db, CheckIn))

    replies = phone.text("Yes", OptOutType="START")

    assert replies == [] and len(rows(db, CheckIn)) == before, replies


# §7 START "restores the follow-ups that the opt-out cancelled": that includes the follow-up
#    whose check the STOP cut short (it stayed "started" for good).
def test_start_restores_the_follow_up_the_stop_cut_short(phone, clinic, db, clock):
    finish_intake(phone, "en")
    first, final = rows(db, FollowUp, order_by=FollowUp.due_at)
    clock.move_to(final.due_at + timedelta(minutes=1), tick=False)  # the day-42 check is due
    with db.transaction() as session:
        # the day-28 check was done; the final one starts now
        session.get(FollowUp, first.id).status = "done"
        assert checkins.start_followup(session, session.get(FollowUp, final.id),
                                       final.due_at + timedelta(minutes=1)) == "started"
    phone.text("STOP")  # mid-way through the final check
    clock.move_to(final.due_at + timedelta(days=2), tick=False)

    replies = phone.text("START")

    statuses = {f.id: f.status for f in rows(db, FollowUp)}
    assert statuses[final.id] == "scheduled", (statuses, replies)
    (restored,) = rows(db, FollowUp, FollowUp.id == final.id)
    assert restored.due_at >= final.due_at + timedelta(days=2)  # at the next allowed hour
