"""Follow-ups claimed and started in batches: one statement claims a batch (never a row twice,
an expired lease claimed again), and a batch started in one transaction gives each follow-up
the outcome it would get on its own (started, quiet, deferred, cancelled, paused, skipped)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from service.conversations import checkins
from service.followups import schedule as followups
from service.store.models import CheckIn, Episode, FollowUp, Outbox, Patient

NOW = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)  # 11:00 in New York: texts may go out


@pytest.fixture
def clinic(make_clinic):
    return make_clinic(name="Back Clinic", timezone="America/New_York")


def add_patient(session, clinic, i: int, *, kinds=("first",), due=NOW - timedelta(minutes=5),
                **patient) -> list[int]:
    """A consenting patient with an open episode and its follow-ups due at `due`; their ids."""
    row = Patient(clinic_id=clinic.id, phone_e164=f"+1617555{4000 + i:04d}", consent="given",
                  created_at=NOW - timedelta(days=40), **patient)
    session.add(row)
    session.flush()
    episode = Episode(clinic_id=clinic.id, patient_id=row.id, status="open",
                      opened_at=NOW - timedelta(days=28), baseline_pain_score=5,
                      intake_level="self_care", last_level="self_care")
    session.add(episode)
    session.flush()
    rows = [FollowUp(clinic_id=clinic.id, patient_id=row.id, episode_id=episode.id, kind=kind,
                     due_at=due + timedelta(seconds=n), status="scheduled", created_at=NOW)
            for n, kind in enumerate(kinds)]
    session.add_all(rows)
    session.flush()
    return [f.id for f in rows]


def add_due(db, clinic, count: int, *, due=NOW - timedelta(minutes=5)) -> list[int]:
    with db.transaction() as session:
        return [i for n in range(count)
                for i in add_patient(session, clinic, n, due=due - timedelta(seconds=n))]


def statuses(db) -> dict[int, tuple[str, datetime | None]]:
    with db.transaction() as session:
        return {r.id: (r.status, r.claimed_until) for r in session.execute(
            sa.select(FollowUp.id, FollowUp.status, FollowUp.claimed_until))}


# ---- claiming -----------------------------------------------------------------------------


def test_a_claim_takes_the_oldest_due_first_and_only_as_many_as_asked(db, clinic):
    ids = add_due(db, clinic, 6)  # each one due a second before the previous
    with db.transaction() as session:
        add_patient(session, clinic, 50, due=NOW + timedelta(minutes=1))  # not due yet
    with db.transaction() as session:
        claimed = followups.claim_due(session, NOW, limit=4)
    assert claimed == ids[::-1][:4]
    with db.transaction() as session:
        assert followups.claim_due(session, NOW, limit=4) == ids[::-1][4:]
        assert followups.claim_due(session, NOW) == []
    state = statuses(db)
    assert {state[i] for i in ids} == {("claimed", NOW + followups.LEASE)}


def test_an_expired_lease_is_claimed_again_and_a_live_one_is_not(db, clinic):
    ids = add_due(db, clinic, 3)
    with db.transaction() as session:
        assert sorted(followups.claim_due(session, NOW)) == sorted(ids)
    # The claimer died before starting them: nobody takes them while the lease holds.
    with db.transaction() as session:
        assert followups.claim_due(session, NOW + followups.LEASE - timedelta(seconds=1)) == []
    later = NOW + followups.LEASE
    with db.transaction() as session:
        assert sorted(followups.claim_due(session, later)) == sorted(ids)
    assert {statuses(db)[i] for i in ids} == {("claimed", later + followups.LEASE)}


def test_two_claimers_at_once_never_get_the_same_row(db, clinic):
    ids = add_due(db, clinic, 240)
    got: list[list[int]] = [[], []]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def claimer(mine: list[int]) -> None:
        try:
            start.wait()
            while True:
                with db.transaction() as session:
                    batch = followups.claim_due(session, NOW, limit=7)
                if not batch:
                    return
                mine.extend(batch)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(mine,)) for mine in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == sorted(ids)  # every row claimed, exactly once


@pytest.mark.postgres
def test_a_claimer_passes_over_rows_another_claimer_holds_without_waiting(db, clinic):
    if db.dialect != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite runs one writer at a time)")
    ids = add_due(db, clinic, 10)
    first = db.sessionmaker()
    try:
        first.begin()
        held = followups.claim_due(first, NOW, limit=4)  # not committed: rows stay locked
        with db.transaction() as second:
            second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))  # a wait would fail
            taken = followups.claim_due(second, NOW)
        assert len(held) == 4 and len(taken) == 6
        assert sorted(held + taken) == sorted(ids)
        first.commit()
    finally:
        first.close()
    with db.transaction() as session:
        assert followups.claim_due(session, NOW) == []


# ---- starting a batch ---------------------------------------------------------------------


def test_one_batch_gives_each_follow_up_the_outcome_it_would_get_alone(db, clinic):
    with db.transaction() as session:
        started = add_patient(session, clinic, 1)
        quiet = add_patient(session, clinic, 2, timezone="Asia/Tokyo")  # 00:00 there
        opted_out = add_patient(session, clinic, 3, opted_out=True)
        bad_number = add_patient(session, clinic, 4, number_invalid=True)
        busy = add_patient(session, clinic, 5)  # in another conversation
        both_due = add_patient(session, clinic, 6, kinds=("first", "final"))
        not_claimed = add_patient(session, clinic, 7)
    with db.transaction() as session:
        patient = session.execute(sa.select(Patient).where(
            Patient.phone_e164 == "+16175554005")).scalar_one()
        assert checkins.start_checkin_now(session, patient.clinic, patient, NOW) \
            == "followup_started"
        session.execute(sa.update(FollowUp).where(FollowUp.id != not_claimed[0])
                        .values(status="claimed", claimed_until=NOW + followups.LEASE))
    batch = [*started, *quiet, *opted_out, *bad_number, *busy, *both_due, *not_claimed, 999999]
    with db.transaction() as session:
        outcomes = followups.start_claimed_batch(session, batch, NOW)
    assert outcomes == {
        started[0]: "started", quiet[0]: "quiet", opted_out[0]: "cancelled",
        bad_number[0]: "paused", busy[0]: "deferred",
        # One conversation at a time: the first starts, the final waits for it to end.
        both_due[0]: "started", both_due[1]: "deferred",
        not_claimed[0]: "skipped", 999999: "skipped"}

    with db.transaction() as session:
        rows = {f.id: f for f in session.execute(sa.select(FollowUp)).scalars()}
        tokyo_8am = datetime(2026, 6, 2, 8, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
        assert (rows[quiet[0]].status, rows[quiet[0]].due_at, rows[quiet[0]].claimed_until) \
            == ("scheduled", tokyo_8am, None)
        for deferred in (busy[0], both_due[1]):
            assert (rows[deferred].status, rows[deferred].due_at) == (
                "scheduled", NOW + checkins.DEFER_RECHECK)
        assert rows[opted_out[0]].status == "cancelled"
        assert (rows[bad_number[0]].status, rows[bad_number[0]].claimed_until) == ("paused", None)
        assert rows[not_claimed[0]].status == "scheduled"
        for first in (started[0], both_due[0]):
            assert (rows[first].status, rows[first].attempts) == ("started", 1)
            checkin = session.get(CheckIn, rows[first].checkin_id)
            assert (checkin.kind, checkin.status, checkin.followup_id) == (
                "followup", "active", first)
            texts = session.execute(sa.select(Outbox.body).where(
                Outbox.checkin_id == checkin.id, Outbox.status == "pending",
                Outbox.not_before == NOW)).scalars().all()
            assert texts and "Back Clinic" in texts[0]
        # Nothing was queued for the patients whose follow-up did not start.
        quiet_patient = rows[quiet[0]].patient_id
        assert session.execute(sa.select(Outbox.id).where(
            Outbox.patient_id == quiet_patient)).first() is None


def test_starting_a_batch_again_starts_nothing_twice(db, clinic):
    ids = add_due(db, clinic, 5)
    with db.transaction() as session:
        claimed = followups.claim_due(session, NOW)
    with db.transaction() as session:
        first = followups.start_claimed_batch(session, claimed, NOW)
    with db.transaction() as session:  # the same message delivered twice
        again = followups.start_claimed_batch(session, claimed, NOW)
    assert first == dict.fromkeys(ids, "started") and again == dict.fromkeys(ids, "skipped")
    with db.transaction() as session:
        assert session.execute(sa.select(sa.func.count(CheckIn.id))).scalar() == 5


def test_follow_ups_paused_for_a_refused_number_start_once_staff_resume_them(db, clinic):
    from service.records import patients as patient_records

    with db.transaction() as session:
        (followup,) = add_patient(session, clinic, 60, number_invalid=True)
    with db.transaction() as session:
        started = followups.start_claimed_batch(session, followups.claim_due(session, NOW), NOW)
    assert started == {followup: "paused"}

    # The alert asked staff to check the number; they did, and press Resume.
    with db.transaction() as session:
        patient = session.get(FollowUp, followup).patient
        assert patient_records.resume_followups(session, patient, actor_type="staff",
                                                actor_id=1, now=NOW) == 1
    later = NOW + timedelta(minutes=1)
    with db.transaction() as session:
        started = followups.start_claimed_batch(session, followups.claim_due(session, later),
                                                later)
    assert started == {followup: "started"}
    with db.transaction() as session:
        assert session.get(FollowUp, followup).patient.number_invalid is False
