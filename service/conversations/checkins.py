"""The conversation API: start a check-in, step it with a reply or a tick, repeat the question,
switch its channel, abandon it, and finish it (episode, follow-ups, alert).

Every channel (SMS webhook, voice, simulator, API, dashboard, tasks) goes through these. Each
function runs inside the caller's unit of work (one transaction): it loads state, runs the
engine, and persists answers, outcome, alerts, follow-ups and outgoing messages together.
Replies to a patient's own message are returned (the webhook answers with TwiML at once);
messages the service starts go to the outbox, held for quiet hours.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flows import engine, triage
from flows.loader import get_flow, messages
from service.messaging import outbox, quiet_hours
from service.records.alerts import raise_alert
from service.store.models import CheckIn, Clinic, Episode, FollowUp, Patient
from service.store.queries import (
    active_checkin,
    cancel_followups,
    cancel_pending_outbox,
    open_episode,
)

log = logging.getLogger(__name__)

# A follow-up due while another conversation is going on is tried again after this.
DEFER_RECHECK = timedelta(minutes=15)
# An early check this soon after the last check does not open with "a few weeks ago".
RECENT_CHECK = timedelta(days=14)


class CheckInError(Exception):
    """A request the current state does not allow (maps to 409 in the API)."""


def clinic_number(clinic: Clinic) -> str | None:
    return clinic.numbers[0].phone_e164 if clinic.numbers else None


def text_for(key: str, clinic: Clinic, lang: str, **extra) -> str:
    lang = lang if lang in messages().languages else "en"
    return engine.render(messages().get(key, lang), _context_values(clinic), lang, **extra)


def _context_values(clinic: Clinic) -> dict:
    return {"clinic": clinic.name, "emergency": clinic.emergency_number,
            "clinic_phone": clinic.phone}


def timezone_of(patient: Patient, clinic: Clinic) -> str:
    return quiet_hours.patient_timezone(patient.timezone, clinic.timezone, patient.phone_e164)


def engine_context(session, clinic, patient, kind, now, followup: FollowUp | None) -> engine.Context:
    known: dict = {}
    baseline = None
    final_check = False
    next_check_at = None
    recent = False
    if kind == "intake":
        if patient.date_of_birth:
            known["age_years"] = age_on(patient.date_of_birth, now.date())
    else:
        episode = followup.episode if followup else open_episode(session, patient.id)
        if episode is not None:
            baseline = episode.baseline_pain_score
            intake = next((c for c in episode.checkins if c.kind == "intake"), None)
            known["cancer_history"] = bool(intake and (intake.answers or {}).get("cancer_history"))
            upcoming = sorted((f for f in episode.followups if f.status == "scheduled"
                               and (followup is None or f.id != followup.id)),
                              key=lambda f: f.due_at)
            if (followup is not None and followup.kind == "final") or not upcoming:
                # No check comes after this one, so it is the final check (CLINICAL.md §4):
                # "better" with pain left is then PERSISTENT, never a promise of a later check.
                final_check = True
            else:
                next_check_at = upcoming[0].due_at.isoformat()
            if followup is None:  # an early check: the patient wrote in
                ended = [c.completed_at for c in episode.checkins if c.completed_at is not None]
                recent = bool(ended) and now - max(ended) < RECENT_CHECK
        else:
            known["cancer_history"] = False
    return engine.Context(
        clinic=clinic.name, emergency=clinic.emergency_number, clinic_phone=clinic.phone,
        timezone=timezone_of(patient, clinic),
        followup_days=(clinic.followup_first_day, clinic.followup_final_day), known=known,
        baseline_pain_score=baseline, final_check=final_check, next_check_at=next_check_at,
        recent_check=recent)


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def start(session, clinic, patient, kind, now, *, reply: bool,
           followup: FollowUp | None = None, channel: str = "sms", flush: bool = True
           ) -> list[str]:
    """Starts a conversation. `flush=False`: the caller's next flush writes it (a batch of
    follow-ups writes all its check-ins and texts together); its id is not known till then."""
    flow = get_flow(kind)
    ctx = engine_context(session, clinic, patient, kind, now, followup)
    state, actions = engine.start(flow, now, context=ctx, lang=patient.language, channel=channel)
    episode = followup.episode if followup else (
        open_episode(session, patient.id) if kind == "followup" else None)
    checkin = CheckIn(clinic_id=clinic.id, patient_id=patient.id, kind=kind, channel=channel,
                      flow_id=flow.id, flow_version=flow.version, language=state["lang"],
                      state=state, status="active", answers=dict(state["answers"]),
                      final_check=ctx.final_check, started_at=now,
                      episode_id=episode.id if episode else None,
                      followup_id=followup.id if followup else None,
                      next_event_at=engine.next_event_at(state))
    session.add(checkin)
    if followup is not None:
        followup.checkin = checkin  # by relationship: the id may come with a later flush
    if flush:
        session.flush()
        log.info("check-in %s started (%s, %s)", checkin.id, kind, channel)
    return _apply(session, clinic, patient, checkin, state, actions, now, reply=reply)


def step(session, clinic, patient, checkin, event, now, *, reply: bool) -> list[str]:
    flow = get_flow(checkin.flow_id, checkin.flow_version)
    state, actions = engine.step(flow, checkin.state, event, now)
    return _apply(session, clinic, patient, checkin, state, actions, now, reply=reply)


def _apply(session, clinic, patient, checkin, state, actions, now, *, reply: bool) -> list[str]:
    checkin.state = state
    checkin.language = state["lang"]
    checkin.answers = dict(state["answers"])
    checkin.next_event_at = engine.next_event_at(state)
    if state["lang"] != patient.language:
        patient.language = state["lang"]
    texts: list[str] = []
    for action in actions:
        if isinstance(action, engine.Send):
            texts.append(action.text)
        elif isinstance(action, engine.Outcome):
            _complete(session, clinic, patient, checkin, action, now)
    if reply:
        return texts
    for text in texts:  # written with the unit of work's next flush (a batch: all together)
        outbox.enqueue(session, clinic=clinic, patient=patient, body=text, kind="checkin",
                       now=now, tz=timezone_of(patient, clinic), checkin=checkin, flush=False)
    return []


def switch_channel(checkin: CheckIn, channel: str, lang: str | None = None) -> None:
    """Moves a conversation to SMS or voice (a call finished by text, a text check-in continued
    on a call): the engine words its next questions and messages for that channel."""
    state = {**checkin.state, "channel": channel}
    if lang is not None:
        state["lang"] = lang
        checkin.language = lang
    checkin.state, checkin.channel = state, channel


def repeat_question(checkin: CheckIn) -> list[str]:
    flow = get_flow(checkin.flow_id, checkin.flow_version)
    node = engine.current_question(flow, checkin.state)
    if node is None:
        return []
    return [engine.render(node.text_for(checkin.language, checkin.channel),
                          checkin.state["context"], checkin.language)]


def abandon(session, clinic, patient, checkin, now, why: str) -> None:
    """Ends a conversation that will not go on; what was answered still reaches the clinic."""
    answers = dict(checkin.state.get("answers") or {})
    checkin.status, checkin.completed_at, checkin.next_event_at = "cancelled", now, None
    checkin.answers = answers
    assessment = engine.assess_state(get_flow(checkin.flow_id, checkin.flow_version),
                                     checkin.state)
    checkin.level, checkin.reasons = assessment.level.value, list(assessment.reasons)
    checkin.missing = list(assessment.missing)
    if assessment.level is not triage.Level.SELF_CARE:
        raise_alert(session, clinic, patient, kind="incomplete", now=now,
                    level=assessment.level.value, checkin=checkin, episode=checkin.episode,
                    reasons=assessment.reasons, missing=assessment.missing,
                    summary=f"{checkin.kind.capitalize()} {why}.")


def _complete(session, clinic, patient, checkin, outcome: engine.Outcome, now) -> None:
    a = outcome.assessment
    checkin.status = "timed_out" if outcome.status == "timed_out" else "completed"
    checkin.completed_at, checkin.next_event_at = now, None
    checkin.answers = dict(outcome.answers)
    checkin.level, checkin.reasons, checkin.missing = a.level.value, list(a.reasons), list(a.missing)
    # Its questions still held back by quiet hours (a check-in staff started at night, then
    # answered by text) would arrive stale: they do not go. Its advice is queued after this.
    cancel_pending_outbox(session, patient.id, checkin_id=checkin.id)
    if checkin.kind == "intake":
        episode = _open_new_episode(session, clinic, patient, checkin, outcome, now)
        kind = "incomplete" if a.primary == "INCOMPLETE" else "triage"
    else:
        episode = checkin.episode or open_episode(session, patient.id)
        kind = _followup_outcome(session, patient, checkin, episode, outcome, now)
    if a.level is not triage.Level.SELF_CARE:
        raise_alert(session, clinic, patient, kind=kind, level=a.level.value, now=now,
                    checkin=checkin, episode=episode, reasons=a.reasons, missing=a.missing,
                    summary=_summary(checkin, outcome))
    log.info("check-in %s ended %s: level=%s reasons=%s", checkin.id, outcome.status,
             a.level.value, ",".join(a.reasons))


def _open_new_episode(session, clinic, patient, checkin, outcome, now) -> Episode:
    previous = open_episode(session, patient.id)
    if previous is not None and outcome.status == "timed_out":
        # Only a completed intake replaces an episode (CLINICAL.md §6): an abandoned one is
        # filed under the open episode, whose follow-ups stay due; its alert still goes out.
        checkin.episode_id = previous.id
        return previous
    if previous is not None:
        previous.status, previous.closed_at, previous.closed_reason = "closed", now, "new intake"
        cancel_followups(session, patient.id, episode_id=previous.id, reason="new intake")
        session.flush()
    a = outcome.assessment
    pain = outcome.answers.get("pain_score")
    episode = Episode(clinic_id=clinic.id, patient_id=patient.id, status="open", opened_at=now,
                      baseline_pain_score=pain if isinstance(pain, int) else None,
                      intake_level=a.level.value, last_level=a.level.value)
    session.add(episode)
    session.flush()
    checkin.episode_id = episode.id
    for due in outcome.followups:
        session.add(FollowUp(clinic_id=clinic.id, patient_id=patient.id, episode_id=episode.id,
                             kind=due.kind, due_at=due.due_at,
                             status="scheduled", created_at=now))
    return episode


def _followup_outcome(session, patient, checkin, episode, outcome, now) -> str:
    a = outcome.assessment
    if checkin.followup is not None:
        checkin.followup.status = "done"
    if episode is not None:
        episode.last_level = a.level.value
        if a.closes_episode:
            episode.status, episode.closed_at, episode.closed_reason = "closed", now, "resolved"
            cancel_followups(session, patient.id, episode_id=episode.id, reason="resolved")
        elif a.level is triage.Level.EMERGENCY:
            # Emergency episodes get no automatic follow-up; staff own them from here.
            cancel_followups(session, patient.id, episode_id=episode.id, reason="emergency")
    answered = [k for k, v in outcome.answers.items() if v is not None and k != "cancer_history"]
    if outcome.status == "timed_out" and not answered:
        return "unreachable"
    return "incomplete" if a.primary == "INCOMPLETE" else "followup"


def _summary(checkin: CheckIn, outcome: engine.Outcome) -> str:
    a = outcome.assessment
    what = "Intake" if checkin.kind == "intake" else (
        "Final follow-up" if checkin.final_check else "Follow-up")
    parts = [f"{what} {outcome.status.replace('_', ' ')}: {a.level.value}",
             f"reasons {', '.join(a.reasons)}"]
    if a.missing:
        parts.append(f"not answered: {', '.join(a.missing)}")
    return "; ".join(parts) + "."


def start_checkin_now(session: Session, clinic: Clinic, patient: Patient, now: datetime) -> str:
    """Staff or API asks for a check-in now. Returns what happened."""
    if patient.opted_out:
        raise CheckInError("the patient has opted out of messages")
    tz = timezone_of(patient, clinic)
    if patient.consent != "given":
        outbox.enqueue(session, clinic=clinic, patient=patient, kind="consent", now=now,
                       body=text_for("consent", clinic, patient.language), tz=tz)
        return "consent_requested"
    checkin = active_checkin(session, patient.id)
    if checkin is not None:
        for text in repeat_question(checkin):
            outbox.enqueue(session, clinic=clinic, patient=patient, body=text, kind="checkin",
                           now=now, tz=tz, checkin=checkin)
        return "continued"
    kind = "followup" if open_episode(session, patient.id) else "intake"
    start(session, clinic, patient, kind, now, reply=False)
    return f"{kind}_started"


def start_followup(session: Session, followup: FollowUp, now: datetime, *,
                   in_conversation: bool | None = None, flush: bool = True) -> str:
    """Starts a due follow-up check by SMS. Returns started / deferred / cancelled / quiet.

    `in_conversation`: whether the patient has a conversation going on, when the caller
    already looked (a batch asks once for all its patients); None looks it up here.
    `flush=False`: the check-in and its texts are written with the caller's next flush."""
    patient, episode = followup.patient, followup.episode
    clinic = session.get(Clinic, followup.clinic_id)
    if patient.opted_out or patient.erased_at or episode.status != "open":
        followup.status = "cancelled"
        return "cancelled"
    tz = timezone_of(patient, clinic)
    allowed = quiet_hours.next_allowed(now, tz)
    if allowed != now:
        followup.status, followup.due_at, followup.claimed_until = "scheduled", allowed, None
        return "quiet"
    if in_conversation is None:
        in_conversation = active_checkin(session, patient.id) is not None
    if in_conversation:
        # One conversation at a time: this one waits until the current one ends, looked at
        # again every DEFER_RECHECK rather than at every beat (a conversation can last days).
        followup.status, followup.claimed_until = "scheduled", None
        followup.due_at = now + DEFER_RECHECK
        return "deferred"
    followup.status, followup.attempts = "started", followup.attempts + 1
    start(session, clinic, patient, "followup", now, reply=False, followup=followup,
          flush=flush)
    return "started"


def tick_checkin(session: Session, checkin_id: int, now: datetime) -> bool:
    """Fires a due reminder or timeout of one conversation; True if something happened."""
    checkin = session.execute(sa.select(CheckIn).where(CheckIn.id == checkin_id)
                              .with_for_update()).scalar_one_or_none()
    if checkin is None or checkin.status != "active" or checkin.next_event_at is None \
            or checkin.next_event_at > now:
        return False
    patient = session.execute(sa.select(Patient).where(Patient.id == checkin.patient_id)
                              .with_for_update()).scalar_one()
    clinic = session.get(Clinic, checkin.clinic_id)
    if checkin.channel != "sms":
        switch_channel(checkin, "sms")  # a call left unfinished: reminder and advice go by text
    step(session, clinic, patient, checkin, engine.Tick(), now, reply=False)
    return True


def due_checkin_ids(session: Session, now: datetime, limit: int = 500) -> list[int]:
    return list(session.execute(
        sa.select(CheckIn.id).where(CheckIn.status == "active", CheckIn.next_event_at <= now)
        .order_by(CheckIn.next_event_at).limit(limit)).scalars())

