"""The 4-6-week promise end to end: intake by SMS, the follow-up sent by the real worker at
08:00 local on day 28 (not at 03:00), answers by SMS, advice and alert, the final check on day
42, the episode closed; every outcome of CLINICAL.md section 4; quiet hours, deferral,
cancellation, reminders, the unreachable alert, and the lease of a dead worker's claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from service.followups import schedule as followups
from service.store.models import Alert, CheckIn, Episode, FollowUp, Message, Outbox
from tests.support.answers import FOLLOWUP_NO_FLAGS, followup_answers, intake_answers
from tests.support.db import one, rows
from tests.support.phones import Phone
from tests.tasks.helpers import SELF_CARE, run_beat, run_task

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

NY = ZoneInfo("America/New_York")
PATIENT = "+16175550123"
ONCALL = "+16175550199"


@pytest.fixture
def clinic(make_clinic):
    return make_clinic(name="Back Clinic", numbers=["+16175550101"], oncall_number=ONCALL)


@pytest.fixture
def phone(client, clinic):
    return Phone(client, PATIENT, clinic.numbers[0].phone_e164)


def local(when: datetime) -> datetime:
    return when.astimezone(NY)


def do_intake(phone, clock, answers=SELF_CARE, *, at=(2026, 3, 2, 3, 0)) -> list[str]:
    clock.local(*at)
    replies = phone.conversation(["PAIN", *intake_answers(answers)])
    return replies[-1]


def to_patient(api) -> list[str]:
    return api.sent_bodies(to=PATIENT)


def start_check(worker, clock, day: datetime) -> list[str]:
    """Moves the clock to `day` and runs the beat; returns the texts the patient got."""
    before = len(to_patient(worker.api))
    clock.set(day)
    run_beat(worker.app)
    return to_patient(worker.api)[before:]


def test_intake_to_followup_at_8am_to_final_check_to_closed_episode(worker, clock, phone, db):
    advice = do_intake(phone, clock)  # the patient texts at 03:00: replies go at once
    assert advice[-1].startswith("Thank you. Your answers show no warning signs.")
    assert "Monday, March 30" in advice[-1]
    first, final = rows(db, FollowUp, order_by=FollowUp.due_at)
    # Day 28 after an intake at 03:00 would be 03:00: quiet hours move it to 08:00 local (the
    # clocks moved to summer time in between: 08:00 EDT is 12:00 UTC).
    assert (first.kind, local(first.due_at)) == ("first", datetime(2026, 3, 30, 8, 0, tzinfo=NY))
    assert (final.kind, local(final.due_at)) == ("final", datetime(2026, 4, 13, 8, 0, tzinfo=NY))
    assert first.due_at == datetime(2026, 3, 30, 12, 0, tzinfo=UTC)

    run_beat(worker.app)  # the intake's own night: nothing is due
    assert worker.api.posts() == []

    assert start_check(worker, clock, datetime(2026, 3, 30, 3, 0, tzinfo=NY)) == []
    assert start_check(worker, clock, datetime(2026, 3, 30, 7, 59, tzinfo=NY)) == []
    texts = start_check(worker, clock, datetime(2026, 3, 30, 8, 0, tzinfo=NY))
    assert len(texts) == 2
    assert texts[0].startswith("Back Clinic: Hi! A few weeks ago you told us about your back pain")
    assert texts[1].startswith("How is your back pain now?")
    sent = rows(db, Outbox, Outbox.to_number == PATIENT)
    assert [local(r.sent_at).strftime("%Y-%m-%d %H:%M") for r in sent] == ["2026-03-30 08:00"] * 2
    assert [r.status for r in sent] == ["sent", "sent"]
    # Each text went to Twilio once, with a status callback, and is on the patient's record.
    assert len(worker.api.posts(to=PATIENT)) == 2
    assert {p["form"]["StatusCallback"] for p in worker.api.posts()} == {
        "https://triage.example.org/twilio/status"}
    # (TwiML replies to her own texts are "replied", kept under their reply keys until a callback.)
    recorded = rows(db, Message, Message.direction == "out", Message.status != "replied")
    assert [m.body for m in recorded] == texts

    clock.advance(minutes=20)
    replies = phone.conversation(followup_answers({"status": "3", "pain_score": "4",
                                                   **FOLLOWUP_NO_FLAGS}))
    assert replies[-1][-1].startswith("Your pain has lasted 4 to 6 weeks.")
    alert = one(db, Alert)
    assert (alert.kind, alert.level, alert.reasons) == ("followup", "soon", ["PERSISTENT"])
    checkin = one(db, CheckIn, CheckIn.kind == "followup")
    assert (checkin.status, checkin.final_check) == ("completed", False)
    assert one(db, Episode).status == "open"

    texts = start_check(worker, clock, datetime(2026, 4, 13, 8, 0, tzinfo=NY))
    assert texts[1].startswith("How is your back pain now?")
    replies = phone.conversation(followup_answers({"status": "1", "pain_score": "0",
                                                   **FOLLOWUP_NO_FLAGS}))
    assert replies[-1][-1].startswith("Glad your pain is gone.")
    episode = one(db, Episode)
    assert (episode.status, episode.closed_reason) == ("closed", "resolved")
    assert [f.status for f in rows(db, FollowUp, order_by=FollowUp.due_at)] == ["done", "done"]
    final_checkin = rows(db, CheckIn, CheckIn.kind == "followup")[-1]
    assert (final_checkin.final_check, final_checkin.reasons) == (True, ["RESOLVED"])
    assert len(rows(db, Alert)) == 1  # no new alert for a resolved pain
    assert worker.api.posts(to=ONCALL) == []  # a `soon` alert does not page the on-call

    # Nothing more is ever sent for this episode.
    assert start_check(worker, clock, datetime(2026, 6, 1, 12, 0, tzinfo=NY)) == []


# CLINICAL.md section 4, every outcome by SMS. Intake pain 4 (the baseline); `final` cases
# answer the first check "better, 4" (IMPROVING) first.
OUTCOMES = [
    # id, intake changes, final?, follow-up answers, level, reasons[0], advice, episode, final fu
    ("gone", {}, False, {"status": "1", "pain_score": "0"}, "self_care", "RESOLVED",
     "Glad your pain is gone.", "closed", "cancelled"),
    ("gone-but-hurts-counts-as-better", {}, False, {"status": "gone", "pain_score": "3"},
     "self_care", "IMPROVING", "Glad it is getting better.", "open", "scheduled"),
    ("better-low", {}, False, {"status": "2", "pain_score": "2"}, "self_care", "RESOLVED",
     "Glad your pain is gone.", "closed", "cancelled"),
    ("better-first", {}, False, {"status": "2", "pain_score": "4"}, "self_care", "IMPROVING",
     "Glad it is getting better.", "open", "scheduled"),
    ("better-final", {}, True, {"status": "2", "pain_score": "4"}, "soon", "PERSISTENT",
     "Your pain has lasted 4 to 6 weeks.", "open", "done"),
    ("same-first", {}, False, {"status": "3", "pain_score": "4"}, "soon", "PERSISTENT",
     "Your pain has lasted 4 to 6 weeks.", "open", "scheduled"),
    ("same-final", {}, True, {"status": "same", "pain_score": "4"}, "soon", "PERSISTENT",
     "Your pain has lasted 4 to 6 weeks.", "open", "done"),
    ("worse", {}, False, {"status": "4", "pain_score": "5"}, "soon", "WORSENING",
     "Your pain is getting worse.", "open", "scheduled"),
    ("score-up-2-is-worse", {}, False, {"status": "3", "pain_score": "6"}, "soon", "WORSENING",
     "Your pain is getting worse.", "open", "scheduled"),
    ("worse-night-pain-urgent", {}, False, {"status": "4", "pain_score": "6", "night_pain": "yes"},
     "urgent", "WORSENING", "Your answers mean a doctor should see you soon.", "open",
     "scheduled"),
    ("cancer-history-same-urgent", {"cancer_history": "yes"}, False,
     {"status": "3", "pain_score": "4"}, "urgent", "PERSISTENT",
     "Your answers mean a doctor should see you soon.", "open", "scheduled"),
    ("new-weakness-emergency", {}, False, {"status": "3", "pain_score": "4", "limb_weakness": "yes"},
     "emergency", "NEURO", "Your answers may mean a serious problem.", "open", "cancelled"),
    ("status-unclear-incomplete", {}, False, {"status": "maybe"}, "soon", "INCOMPLETE",
     "We did not get all your answers", "open", "scheduled"),
]


@pytest.mark.parametrize(
    "intake_changes, final, answers, level, primary, advice, episode_status, final_status",
    [pytest.param(*case[1:], id=case[0]) for case in OUTCOMES])
def test_every_followup_outcome_by_sms(worker, clock, phone, db, intake_changes, final, answers,
                                       level, primary, advice, episode_status, final_status):
    do_intake(phone, clock, {**SELF_CARE, **intake_changes}, at=(2026, 5, 4, 10, 0))
    if final:
        start_check(worker, clock, datetime(2026, 6, 1, 10, 0, tzinfo=NY))
        phone.conversation(followup_answers({"status": "2", "pain_score": "4",
                                             **FOLLOWUP_NO_FLAGS}))
        texts = start_check(worker, clock, datetime(2026, 6, 15, 10, 0, tzinfo=NY))
    else:
        texts = start_check(worker, clock, datetime(2026, 6, 1, 10, 0, tzinfo=NY))
    assert texts[-1].startswith("How is your back pain now?")
    alerts_before = len(rows(db, Alert))

    if answers == {"status": "maybe"}:  # unclear three times: not answered, the flow goes on
        phone.conversation(["maybe", "hmm", "purple"])
        replies = phone.conversation(followup_answers({"status": "x", "pain_score": "4",
                                                       **FOLLOWUP_NO_FLAGS})[1:])
    elif level == "emergency":  # the flow ends at the emergency answer
        replies = phone.conversation(followup_answers(answers))
    else:
        replies = phone.conversation(followup_answers({**FOLLOWUP_NO_FLAGS, **answers}))
    assert advice in replies[-1][-1]

    checkin = rows(db, CheckIn, CheckIn.kind == "followup")[-1]
    assert (checkin.level, checkin.reasons[0], checkin.final_check) == (level, primary, final)
    new_alerts = rows(db, Alert)[alerts_before:]
    if level == "self_care":
        assert new_alerts == []  # persistent or worsening always alerts; better/gone does not
    else:
        kind = "incomplete" if primary == "INCOMPLETE" else "followup"
        assert [(a.kind, a.level, a.reasons[0]) for a in new_alerts] == [(kind, level, primary)]
    assert one(db, Episode).status == episode_status
    assert one(db, FollowUp, FollowUp.kind == "final").status == final_status

    # Urgent and emergency alerts page the on-call number (with a link, no health details).
    run_beat(worker.app)
    oncall = worker.api.sent_bodies(to=ONCALL)
    if level in ("urgent", "emergency"):
        assert oncall[-1] == ("Back Clinic: a new alert needs a quick look. Open: "
                              f"https://triage.example.org/dashboard/alerts/{new_alerts[0].id}")
    elif not intake_changes:
        assert oncall == []


def test_a_followup_found_due_at_night_waits_for_8am(worker, clock, phone, db):
    do_intake(phone, clock, at=(2026, 5, 4, 14, 0))
    first = one(db, FollowUp, FollowUp.kind == "first")
    assert local(first.due_at) == datetime(2026, 6, 1, 14, 0, tzinfo=NY)
    # The workers were down from the afternoon; they come back at 23:30.
    assert start_check(worker, clock, datetime(2026, 6, 1, 23, 30, tzinfo=NY)) == []
    first = one(db, FollowUp, FollowUp.kind == "first")
    assert (first.status, local(first.due_at)) == ("scheduled",
                                                   datetime(2026, 6, 2, 8, 0, tzinfo=NY))
    assert start_check(worker, clock, datetime(2026, 6, 2, 7, 0, tzinfo=NY)) == []
    texts = start_check(worker, clock, datetime(2026, 6, 2, 8, 0, tzinfo=NY))
    assert len(texts) == 2


def test_a_followup_waits_while_another_conversation_is_active(worker, clock, phone, db):
    do_intake(phone, clock, at=(2026, 5, 4, 10, 0))
    clock.local(2026, 6, 1, 9, 0)
    assert phone.text("PAIN")[0].startswith("Back Clinic: Hi! We will ask")  # a new intake
    assert start_check(worker, clock, datetime(2026, 6, 1, 10, 0, tzinfo=NY)) == []
    first = one(db, FollowUp, FollowUp.kind == "first")
    # Looked at again in 15 minutes, not at every beat while the intake goes on.
    assert (first.status, local(first.due_at)) == ("scheduled",
                                                   datetime(2026, 6, 1, 10, 15, tzinfo=NY))
    # The new intake ends: it opens a new episode and cancels the old one's follow-ups.
    phone.conversation(intake_answers(SELF_CARE))
    statuses = {(f.episode_id, f.kind): f.status for f in rows(db, FollowUp)}
    old, new = sorted({episode for episode, _ in statuses})
    assert statuses[(old, "first")] == statuses[(old, "final")] == "cancelled"
    assert statuses[(new, "first")] == "scheduled"
    assert start_check(worker, clock, datetime(2026, 6, 1, 10, 30, tzinfo=NY)) == []


def test_opted_out_patient_gets_no_followup(worker, clock, phone, db):
    do_intake(phone, clock, at=(2026, 5, 4, 10, 0))
    clock.local(2026, 5, 10, 10, 0)
    phone.text("STOP")
    assert {f.status for f in rows(db, FollowUp)} == {"cancelled"}
    assert start_check(worker, clock, datetime(2026, 6, 1, 10, 0, tzinfo=NY)) == []
    assert worker.api.posts() == []


def test_reminder_after_24h_within_quiet_hours_then_unreachable_after_7_days(worker, clock,
                                                                             phone, db):
    do_intake(phone, clock, at=(2026, 5, 4, 22, 30))  # due 08:00 after day 28 at 22:30
    texts = start_check(worker, clock, datetime(2026, 6, 2, 8, 0, tzinfo=NY))
    assert texts[-1].startswith("How is your back pain now?")
    checkin = one(db, CheckIn, CheckIn.kind == "followup")
    assert local(checkin.next_event_at) == datetime(2026, 6, 3, 8, 0, tzinfo=NY)

    assert start_check(worker, clock, datetime(2026, 6, 3, 7, 59, tzinfo=NY)) == []
    texts = start_check(worker, clock, datetime(2026, 6, 3, 8, 0, tzinfo=NY))
    assert texts[0].startswith("Back Clinic: We have not heard back from you.")
    assert texts[1].startswith("How is your back pain now?")
    assert start_check(worker, clock, datetime(2026, 6, 5, 8, 0, tzinfo=NY)) == []  # once only

    # 7 days after the question, at 08:00: timed out, nothing answered -> unreachable.
    texts = start_check(worker, clock, datetime(2026, 6, 9, 8, 0, tzinfo=NY))
    assert texts == [] or texts[-1].startswith("Thank you. We did not get all your answers")
    checkin = one(db, CheckIn, CheckIn.kind == "followup")
    assert checkin.status == "timed_out"
    alert = one(db, Alert)
    assert (alert.kind, alert.level, alert.reasons) == ("unreachable", "soon", ["INCOMPLETE"])
    assert one(db, FollowUp, FollowUp.kind == "final").status == "scheduled"


def test_reminder_due_at_night_is_held_until_8am(worker, clock, phone, db):
    do_intake(phone, clock, at=(2026, 5, 4, 20, 50))
    texts = start_check(worker, clock, datetime(2026, 6, 1, 20, 50, tzinfo=NY))
    assert len(texts) == 2
    # The answer to the status question comes at 21:30, so the next reminder falls at 21:30.
    clock.local(2026, 6, 1, 21, 30)
    assert phone.text("2")[0].startswith("How bad is the pain")
    assert start_check(worker, clock, datetime(2026, 6, 2, 21, 31, tzinfo=NY)) == []
    held = rows(db, Outbox, Outbox.status == "pending")
    assert len(held) == 2
    assert {local(r.not_before) for r in held} == {datetime(2026, 6, 3, 8, 0, tzinfo=NY)}
    texts = start_check(worker, clock, datetime(2026, 6, 3, 8, 0, tzinfo=NY))
    assert texts[0].startswith("Back Clinic: We have not heard back from you.")
    assert texts[1].startswith("How bad is the pain")


def test_a_claim_of_a_dead_worker_is_taken_again_after_its_lease(worker, clock, phone, db):
    do_intake(phone, clock, at=(2026, 5, 4, 10, 0))
    clock.local(2026, 6, 1, 10, 0)
    with db.transaction() as session:  # a worker claims it, then dies before starting it
        assert len(followups.claim_due(session, clock.now)) == 1
    first = one(db, FollowUp, FollowUp.kind == "first")
    assert first.status == "claimed"
    assert first.claimed_until == clock.now + followups.LEASE

    assert start_check(worker, clock, clock.now + timedelta(minutes=4)) == []  # lease holds
    texts = start_check(worker, clock, clock.now + timedelta(minutes=2))  # 6 min: expired
    assert len(texts) == 2
    first = one(db, FollowUp, FollowUp.kind == "first")
    assert (first.status, first.attempts) == ("started", 1)
    assert len(rows(db, CheckIn, CheckIn.kind == "followup")) == 1


def test_claims_skip_rows_locked_by_another_claimer(worker, clock, phone, db):
    do_intake(phone, clock, at=(2026, 5, 4, 10, 0))
    now = clock.local(2026, 6, 1, 10, 0)
    first = db.sessionmaker()
    try:
        first.begin()
        assert len(followups.claim_due(first, now)) == 1  # not committed: rows stay locked
        with db.transaction() as second:
            assert followups.claim_due(second, now) == []  # SKIP LOCKED, no wait
        first.commit()
    finally:
        first.close()
    # A start task for a row that is not claimed (any more) does nothing.
    with db.transaction() as session:
        session.execute(sa.update(FollowUp).values(status="scheduled", claimed_until=None))
    first_id = one(db, FollowUp, FollowUp.kind == "first").id
    assert run_task(worker.app, "tasks.start_followup", first_id) == "skipped"
    assert rows(db, CheckIn, CheckIn.kind == "followup") == []


def test_one_beat_run_claims_more_than_one_batch_when_many_fall_due(worker, clock, clinic, db):
    """After quiet hours a whole morning's follow-ups fall due at once: one beat run keeps
    claiming full batches instead of leaving all but the first for later minutes."""
    from service.store.models import Patient

    due = followups.CLAIM_BATCH * 2 + 10
    now = clock.local(2026, 6, 1, 10, 0)
    with db.transaction() as session:
        for i in range(due):
            patient = Patient(clinic_id=clinic.id, phone_e164=f"+1617555{3000 + i:04d}",
                              consent="given", created_at=now)
            session.add(patient)
            session.flush()
            episode = Episode(clinic_id=clinic.id, patient_id=patient.id, status="open",
                              opened_at=now - timedelta(days=28))
            session.add(episode)
            session.flush()
            session.add(FollowUp(clinic_id=clinic.id, patient_id=patient.id,
                                 episode_id=episode.id, kind="first", status="scheduled",
                                 due_at=now - timedelta(minutes=1), created_at=now))
    claimed = run_task(worker.app, "tasks.dispatch_due_followups", timeout=120)
    assert claimed == due
    with db.transaction() as session:
        left = session.execute(sa.select(sa.func.count(FollowUp.id))
                               .where(FollowUp.status == "scheduled")).scalar()
    assert left == 0
