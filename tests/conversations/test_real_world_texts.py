"""Real-world texts through the real SMS webhook (signed requests), in English and Spanish
(CLINICAL.md §6 "What a reply can be", "Acknowledgements", "Requests to be contacted", "Loops
and repeats"; §7 "Opt-out", "Opting back in").

Each conversation is a table: what the patient texts, and what comes back, as message keys
(`k:`), questions (`q:`) or an opening (`intro:`), rendered for the clinic from the flow
definitions; then what the clinic sees (alerts) and what was recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flows import engine
from flows.loader import get_flow
from service.conversations import checkins, consent, inbound
from service.records import patients as patient_records
from service.store.models import Alert, CheckIn, Clinic, FollowUp, Message, Outbox, Patient
from service.store.queries import cancel_followups
from tests.support.answers import SELF_CARE_EN, SELF_CARE_ES, intake_answers
from tests.support.db import rows
from tests.support.phones import WEBHOOK_CONFIG, Phone, new_sid

PATIENT = "+16175550142"
STRANGER = "+16175550177"
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


def expect(item: str, clinic: Clinic, lang: str, flow: str = "intake") -> str:
    what, _, name = item.partition(":")
    if what == "k":
        return checkins.text_for(name, clinic, lang)
    if what == "q":
        flow_id, _, field = name.rpartition(".")
        node = next(n for n in get_flow(flow_id or flow).questions if n.field == field)
        return node.text[lang]
    if what == "intro":
        if name == "followup.recent":
            return checkins.text_for("followup.intro.recent", clinic, lang)
        f = get_flow(name)
        values = {"clinic": clinic.name, "emergency": clinic.emergency_number,
                  "clinic_phone": clinic.phone}
        return engine.render(f.nodes[f.start].text[lang], values, lang)
    raise ValueError(item)


def start_intake(phone: Phone, lang: str) -> None:
    phone.text("DOLOR" if lang == "es" else "PAIN")


def finish_intake(phone: Phone, lang: str) -> None:
    start_intake(phone, lang)
    for text in intake_answers(SELF_CARE_ES if lang == "es" else SELF_CARE_EN):
        phone.text(text)


def after_chest(lang: str, clinic: Clinic) -> str:
    """The intake's question after the chest question (the flow's own order)."""
    fields = [n.field for n in get_flow("intake").questions]
    return expect(f"q:{fields[fields.index('chest_symptoms') + 1]}", clinic, lang)


def alerts(db) -> list[tuple[str, str, str]]:
    return [(a.kind, a.level, a.summary) for a in rows(db, Alert, order_by=Alert.id)]


# ---- in a conversation -----------------------------------------------------------------------

OPT_OUTS = [
    ("en", "NO STOP"), ("en", "No. STOP"), ("en", "I said STOP"), ("en", "STOP ALREADY"),
    ("en", "just stop"), ("en", "stop it"), ("en", "STOP!!"), ("en", "🛑"),
    ("en", "no more please"), ("en", "please stop texting me"), ("en", "Quit"),
    ("es", "para"), ("es", "Para por favor"), ("es", "no más"), ("es", "NO MÁS MENSAJES"),
    ("es", "basta ya"), ("es", "ALTO"),
]


@pytest.mark.parametrize(("lang", "text"), OPT_OUTS)
def test_an_opt_out_in_any_reasonable_manner_ends_everything_and_records_no_answer(
        phone, clinic, db, lang, text):
    start_intake(phone, lang)

    assert phone.text(text) == [expect("k:optout.confirm", clinic, lang)]

    (patient,) = rows(db, Patient)
    assert patient.opted_out
    (checkin,) = rows(db, CheckIn)
    assert checkin.status == "cancelled"
    assert "chest_symptoms" not in checkin.answers  # never recorded as the answer "no"
    assert rows(db, FollowUp) == []
    # Silence afterwards: 30 more of the same get nothing back.
    for _ in range(3):
        assert phone.text(text) == []


@pytest.mark.parametrize(("lang", "text"), [
    ("en", "yes but only sometimes"), ("en", "no I'm not sure"), ("en", "kind of"),
    ("en", "yes and no"), ("es", "sí pero solo a veces"), ("es", "más o menos"),
])
def test_a_hedged_reply_is_asked_again_and_nothing_is_recorded(phone, clinic, db, lang, text):
    start_intake(phone, lang)

    assert phone.text(text) == [expect("q:chest_symptoms", clinic, lang)]

    (checkin,) = rows(db, CheckIn)
    assert "chest_symptoms" not in checkin.answers


@pytest.mark.parametrize(("lang", "text"), [
    ("en", "yes I do"), ("en", "Yeah"), ("en", "y"), ("en", "nope none"), ("en", "no never"),
    ("es", "sí tengo"), ("es", "Sí"), ("es", "no"),
])
def test_an_answer_with_fillers_is_an_answer(phone, clinic, db, lang, text):
    start_intake(phone, lang)
    replies = phone.text(text)
    (checkin,) = rows(db, CheckIn)
    assert "chest_symptoms" in checkin.answers
    if checkin.answers["chest_symptoms"] is False:
        assert replies == [after_chest(lang, clinic)]


@pytest.mark.parametrize(("lang", "text"), [
    ("en", "can someone call me"), ("en", "Please call me"),
    ("en", "I need to talk to a nurse"), ("es", "llámenme por favor"),
])
def test_a_call_request_mid_conversation_alerts_the_clinic_and_the_conversation_goes_on(
        phone, clinic, db, lang, text):
    start_intake(phone, lang)

    assert phone.text(text) == [expect("k:callback.confirm", clinic, lang),
                                expect("q:chest_symptoms", clinic, lang)]

    assert alerts(db) == [("callback_requested", "soon", text)]
    # The same question is still open and answers normally.
    assert phone.text("no") == [after_chest(lang, clinic)]


@pytest.mark.parametrize(("lang", "text"), [
    ("en", "my pain won't end"), ("en", "I can't stop the pain"),
    ("en", "cancel my appointment"), ("es", "para mí es peor"),
])
def test_an_opt_out_word_in_another_sense_says_how_to_stop_once(phone, clinic, db, lang, text):
    start_intake(phone, lang)

    assert phone.text(text) == [expect("k:stop_hint", clinic, lang),
                                expect("q:chest_symptoms", clinic, lang)]

    (patient,) = rows(db, Patient)
    assert not patient.opted_out
    assert [(kind, summary) for kind, _, summary in alerts(db)] == [("patient_message", text)]
    (checkin,) = rows(db, CheckIn)
    assert checkin.status == "active" and "chest_symptoms" not in checkin.answers


# ---- after a conversation ------------------------------------------------------------------


@pytest.mark.parametrize(("lang", "text"), [
    ("en", "ok thanks"), ("en", "Thank you!"), ("en", "ty"), ("en", "👍"), ("en", "will do"),
    ("en", "NO"), ("en", "yes"), ("es", "gracias"), ("es", "ok gracias"), ("es", "Sí"),
])
def test_an_acknowledgement_after_a_conversation_gets_nothing_and_starts_nothing(
        phone, clinic, db, lang, text):
    finish_intake(phone, lang)
    checkins_before = len(rows(db, CheckIn))

    assert phone.text(text) == []

    assert alerts(db) == []
    assert len(rows(db, CheckIn)) == checkins_before
    assert rows(db, Message, Message.body == text)  # kept, shown in the timeline


@pytest.mark.parametrize(("lang", "text"), [
    ("en", "my back hurts more today, can someone call me?"),
    ("es", "me duele más, llámenme por favor"),
])
def test_a_call_request_after_a_conversation_is_a_soon_alert_with_one_reply(
        phone, clinic, db, lang, text):
    finish_intake(phone, lang)

    assert phone.text(text) == [expect("k:callback.confirm", clinic, lang)]

    assert alerts(db) == [("callback_requested", "soon", text)]
    assert rows(db, CheckIn, CheckIn.status == "active") == []


@pytest.mark.parametrize("lang", ["en", "es"])
def test_other_texts_start_an_early_check_whose_opening_fits_a_recent_check(
        phone, clinic, db, lang):
    finish_intake(phone, lang)
    text = "my back hurts more" if lang == "en" else "me duele más la espalda"

    replies = phone.text(text)

    assert replies == [expect("intro:followup.recent", clinic, lang),
                       expect("q:followup.status", clinic, lang)]
    assert "few weeks" not in replies[0] and "semanas" not in replies[0]
    assert [(k, level) for k, level, _ in alerts(db)] == [("patient_message", "info")]


def test_an_early_check_weeks_after_the_last_one_says_a_few_weeks_ago(phone, clinic, db,
                                                                      clock):
    finish_intake(phone, "en")
    clock.move_to(DAYTIME + timedelta(days=20), tick=False)

    replies = phone.text("my back hurts more")

    assert replies[0] == expect("intro:followup", clinic, "en")


# ---- after an opt-out ----------------------------------------------------------------------


@pytest.fixture
def opted_out(phone, clinic, db):
    finish_intake(phone, "en")
    phone.text("STOP")
    assert {f.status for f in rows(db, FollowUp)} == {"cancelled"}
    return phone


def test_help_is_answered_after_an_opt_out(opted_out, clinic):
    assert opted_out.text("HELP") == [expect("k:help", clinic, "en")]


def test_an_opted_out_patient_reporting_symptoms_reaches_staff_without_a_reply(opted_out, db):
    assert opted_out.text("My back is worse now") == []
    assert alerts(db) == [("patient_message", "soon", "My back is worse now")]
    assert opted_out.text("hello?") == []
    assert len(alerts(db)) == 1


def test_an_opted_out_patient_asking_for_a_call_reaches_staff_without_a_reply(opted_out, db):
    assert opted_out.text("please call me") == []
    assert alerts(db) == [("callback_requested", "soon", "please call me")]


def test_start_restores_the_follow_ups_the_opt_out_cancelled_and_names_the_next_date(
        opted_out, clinic, db):
    due_before = sorted(f.due_at for f in rows(db, FollowUp))

    replies = opted_out.text("START")

    followups = rows(db, FollowUp, order_by=FollowUp.due_at)
    assert [f.status for f in followups] == ["scheduled", "scheduled"]
    assert [f.due_at for f in followups] == due_before  # still in the future: same time
    date = engine.format_date(due_before[0], "America/New_York", "en")
    assert replies == [checkins.text_for("optin.confirm.next", clinic, "en", date=date)]
    assert date in replies[0]


def test_a_follow_up_whose_time_passed_during_the_opt_out_goes_at_the_next_allowed_hour(
        opted_out, clinic, db, clock):
    # Back 30 days later at 22:30 in Boston (after quiet hours began): the day-28 check passed.
    late = datetime(2025, 4, 3, 2, 30, tzinfo=UTC)
    clock.move_to(late, tick=False)

    opted_out.text("START")

    first, final = rows(db, FollowUp, order_by=FollowUp.due_at)
    assert first.status == "scheduled"
    assert first.due_at == datetime(2025, 4, 3, 12, 0, tzinfo=UTC)  # 08:00 in Boston
    assert final.status == "scheduled" and final.due_at > late


def test_follow_ups_cancelled_for_another_reason_stay_cancelled_after_start(
        phone, clinic, db):
    finish_intake(phone, "en")
    with db.transaction() as session:
        patient = session.query(Patient).one()
        cancel_followups(session, patient.id, reason="cancelled by staff")
    phone.text("STOP")
    replies = phone.text("START")
    assert {f.status for f in rows(db, FollowUp)} == {"cancelled"}
    assert replies == [checkins.text_for("optin.confirm", clinic, "en")]


# ---- loops and repeats ---------------------------------------------------------------------


def test_an_auto_responder_is_not_answered_forever(phone, clinic, db):
    finish_intake(phone, "en")
    auto = "I am driving right now and will reply when I can. (Sent automatically)"
    answered = [phone.text(auto) for _ in range(20)]

    # The first starts an early check (the clinic hears it once); the same text again,
    # in the check's question or outside it, is not answered again.
    assert answered[0] == [expect("intro:followup.recent", clinic, "en"),
                           expect("q:followup.status", clinic, "en")]
    assert all(replies == [] for replies in answered[1:])
    assert len(alerts(db)) == 1
    assert len(rows(db, Message, Message.body == auto)) == 20  # every text is kept


def test_at_most_three_texts_outside_a_question_are_answered_in_ten_minutes(
        phone, clinic, db, clock):
    finish_intake(phone, "en")
    asks = ["can someone call me", "please call me", "call me back please",
            "I need to talk to a nurse"]
    replies = []
    for n, text in enumerate(asks):
        clock.move_to(DAYTIME + timedelta(minutes=1 + n), tick=False)
        replies.append(phone.text(text))
    assert replies[:3] == [[expect("k:callback.confirm", clinic, "en")]] * 3
    assert replies[3] == []
    # Ten minutes on, it is answered again.
    clock.move_to(DAYTIME + timedelta(minutes=15), tick=False)
    assert phone.text("can you call me") == [expect("k:callback.confirm", clinic, "en")]


def test_a_number_no_clinic_knows_gets_one_reply_a_day(client, clinic, db, clock):
    stranger = Phone(client, STRANGER, clinic.numbers[0].phone_e164)
    assert stranger.text("hello who is this") == [expect("k:unknown_number", clinic, "en")]
    assert stranger.text("hello?") == []
    assert stranger.text("HELP") == [expect("k:help", clinic, "en")]
    assert len(rows(db, Message, Message.from_number == STRANGER)) == 3  # kept
    clock.move_to(DAYTIME + timedelta(days=1, minutes=1), tick=False)
    assert stranger.text("hello again") == [expect("k:unknown_number", clinic, "en")]


# ---- a question queued at night is not sent after the check-in ended -------------------------


def test_a_question_held_for_quiet_hours_does_not_go_after_the_patient_finished(
        phone, clinic, db, clock):
    start_intake(phone, "en")
    night = datetime(2025, 3, 4, 3, 0, tzinfo=UTC)  # 22:00 in Boston
    clock.move_to(night, tick=False)
    with db.transaction() as session:
        patient = session.query(Patient).one()
        assert checkins.start_checkin_now(session, session.get(Clinic, clinic.id), patient,
                                          night) == "continued"
    (held,) = rows(db, Outbox, Outbox.kind == "checkin")
    assert held.status == "pending" and held.not_before > night

    for text in intake_answers(SELF_CARE_EN):
        phone.text(text)

    (held,) = rows(db, Outbox, Outbox.id == held.id)
    assert held.status == "cancelled"


# ---- the same through the web simulator and the spool replay ---------------------------------


def test_the_simulator_reads_texts_the_same_way(client, clinic, db, clock):
    number = clinic.numbers[0].phone_e164

    def send(body: str) -> list[str]:
        r = client.post("/simulator/api/send", json={"from": PATIENT, "to": number,
                                                     "body": body})
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.get_json()["replies"]

    send("PAIN")
    assert send("can someone call me") == [expect("k:callback.confirm", clinic, "en"),
                                           expect("q:chest_symptoms", clinic, "en")]
    assert send("NO STOP") == [expect("k:optout.confirm", clinic, "en")]
    (checkin,) = rows(db, CheckIn)
    assert "chest_symptoms" not in checkin.answers
    assert [a[0] for a in alerts(db)][0] == "callback_requested"


def test_a_spooled_no_stop_replayed_is_an_opt_out_never_an_answer(clinic, db):
    number = clinic.numbers[0].phone_e164
    for body in ("PAIN", "NO STOP", "no", "no"):
        inbound.replay_spooled(db, {"sid": new_sid(), "to": number, "from": PATIENT,
                                     "body": body}, DAYTIME)
    (patient,) = rows(db, Patient)
    assert patient.opted_out
    (checkin,) = rows(db, CheckIn)
    assert checkin.status == "cancelled" and "chest_symptoms" not in checkin.answers
    queued = [o.body for o in rows(db, Outbox, Outbox.status == "pending")]
    assert queued == [expect("k:optout.confirm", clinic, "en")]


def test_a_spooled_retry_of_a_text_already_answered_resends_only_unconfirmed_replies(
        phone, clinic, db):
    """Twilio retried a text whose first answer never reached it, and the retry was spooled
    (the database was away): the replay sends the replies no callback confirmed, once."""
    start_intake(phone, "en")
    form = phone.form("no")
    answered = phone.post(form)
    assert answered.status_code == 200
    record = {"sid": form["MessageSid"], "to": form["To"], "from": form["From"], "body": "no"}

    inbound.replay_spooled(db, record, DAYTIME)
    inbound.replay_spooled(db, record, DAYTIME)

    queued = rows(db, Outbox, Outbox.kind == "reply")
    assert [o.body for o in queued] == [after_chest("en", clinic)]
    (checkin,) = rows(db, CheckIn)
    assert checkin.answers["chest_symptoms"] is False  # answered once, not twice


def test_a_confirmed_reply_is_not_resent_by_a_spooled_retry(phone, clinic, db):
    start_intake(phone, "en")
    form = phone.form("no")
    phone.post(form)
    (reply,) = rows(db, Message, Message.direction == "out", Message.status == "replied",
                    Message.body == after_chest("en", clinic))
    phone.post({"MessageSid": "SM" + "c" * 32, "MessageStatus": "delivered",
                "To": PATIENT, "From": form["To"], "AccountSid": form["AccountSid"]},
               path=f"/twilio/status?reply={reply.twilio_sid}")
    record = {"sid": form["MessageSid"], "to": form["To"], "from": form["From"], "body": "no"}

    inbound.replay_spooled(db, record, DAYTIME)

    assert rows(db, Outbox, Outbox.kind == "reply") == []


# ---- found in a review of the inbound side against CLINICAL.md (2026-12-03) ----------------
# Each of these broke the contract before its fix.


def enroll(db, clinic, **kw):
    with db.transaction() as session:
        return consent.enroll_patient(session, session.get(Clinic, clinic.id), phone=PATIENT,
                                      now=DAYTIME, **kw).id


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
