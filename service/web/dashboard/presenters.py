"""What the dashboard shows, computed from the records: alert cards, the patient timeline, the
pain chart's geometry and the clinician context of CLINICAL.md section 5.

Plain data in, plain data out; the templates do the HTML (and so the escaping).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flows.loader import get_flow
from flows.triage import RULE_TEXT
from service.logs import mask_phone
from service.records.alerts import note_required
from service.store.models import Alert, CheckIn, Episode, FollowUp, Message, Outbox, Patient

LEVEL_LABELS = {
    "emergency": "Emergency",
    "urgent": "Urgent",
    "soon": "Soon",
    "self_care": "Self-care",
    "info": "Info",
}
ALERT_KIND_LABELS = {
    "triage": "Check-in result",
    "incomplete": "Check-in incomplete",
    "followup": "Follow-up result",
    "patient_message": "Message from the patient",
    "callback_requested": "Patient asked to be called",
    "unreachable": "Patient did not answer the follow-up",
    "delivery_failure": "A message could not be delivered",
    "invalid_number": "Phone number is not valid",
    "send_failed": "A message could not be sent",
}
# Short clinician wording of the answer fields (CLINICAL.md section 1).
FIELD_LABELS = {
    "age_years": "Age",
    "cancer_history": "History of cancer",
    "duration_days": "Duration of pain (days)",
    "injury_before": "Started after a fall, accident or injury",
    "pain_score": "Pain score (0-10)",
    "constant": "Pain all the time",
    "progressive": "Getting steadily worse",
    "relieved_by_rest": "Eased by rest or position",
    "treatment_no_relief": "Heat, massage or pain pills did not help",
    "night_pain": "Wakes from sleep / worse lying down",
    "chest_symptoms": "Chest pain, breathing trouble or tearing pain",
    "weight_loss": "Unexplained weight loss",
    "fever_chills": "Fever or chills",
    "night_sweats": "Drenching night sweats",
    "limb_weakness": "New weakness in arms or legs / trouble walking",
    "numbness_tingling": "New numbness or tingling in arms or legs",
    "bowel_bladder": "New bladder or bowel trouble / saddle numbness",
    "status": "Pain now compared with before",
}
RED_FLAG_FIELDS = frozenset({
    "cancer_history", "chest_symptoms", "weight_loss", "fever_chills", "night_sweats",
    "limb_weakness", "numbness_tingling", "bowel_bladder",
})
# CLINICAL.md section 5: context for the clinician, never advice to the patient.
CLINICIAN_CONSIDERATIONS = (
    "A history and physical examination, including a neurological examination.",
    "Blood tests: ESR and CRP (inflammation, infection, malignancy).",
    "Plain X-ray of the thoracic spine.",
    "MRI, preferred when a tumour or spinal cord compression is suspected.",
    "CT when bone detail is needed.",
)


def field_label(name: str) -> str:
    return FIELD_LABELS.get(name, name.replace("_", " ").capitalize())


def rule_lines(reasons: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(rule id, its plain meaning) for each reason."""
    return [(rule, RULE_TEXT.get(rule, "")) for rule in reasons or ()]


def time_since(then: datetime | None, now: datetime) -> str:
    if then is None:
        return ""
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return "just now"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min ago" if minutes else f"{hours} h ago"
    return f"{hours // 24} days ago"


def local_time(value: datetime | None, tz: str) -> str:
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def local_date(value: datetime | None, tz: str) -> str:
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d")


def answer_text(value: Any) -> str:
    if value is True:
        return "Yes"
    if value is False:
        return "No"
    if value is None:
        return "Not answered"
    return str(value)


def patient_label(patient: Patient) -> str:
    """The name, or for a patient who texted in and gave none, the masked number."""
    return patient.name or mask_phone(patient.phone_e164)


def patient_zone(patient: Patient, clinic_tz: str) -> str:
    """The patient's IANA timezone: their own, else the clinic's."""
    return patient.timezone or clinic_tz


def patient_clock(patient: Patient, now: datetime, clinic_tz: str) -> str:
    """'14:05 America/New_York': what time it is where the patient is, before calling."""
    zone = patient_zone(patient, clinic_tz)
    return f"{now.astimezone(ZoneInfo(zone)).strftime('%H:%M')} {zone}"


def dial_text(e164: str) -> str:
    """'+16175550111' -> '+1 617 555 0111' for a North American number; others as stored."""
    if e164.startswith("+1") and len(e164) == 12:
        return f"+1 {e164[2:5]} {e164[5:8]} {e164[8:]}"
    return e164


# ---- alert queue --------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertCard:
    id: int
    level: str
    level_label: str
    status: str
    kind_label: str
    patient_id: int
    patient_name: str
    patient_phone: str
    reasons: list[tuple[str, str]]
    missing: list[str]
    summary: str
    raised_at: str
    raised_ago: str
    age_seconds: int
    acknowledged_by: str | None
    is_patient_text: bool
    has_name: bool
    patient_time: str  # "14:05 America/New_York"
    call_number: str | None  # the full E.164 number, on urgent and emergency cards only
    call_text: str
    note_required: bool

    @property
    def shows_number(self) -> bool:
        """The card shows the full number: its render is a read of the patient's record."""
        return self.call_number is not None


# The alerts where the nurse calls the patient now: their card carries the number to dial.
CALL_LEVELS = ("emergency", "urgent")


def alert_card(alert: Alert, patient: Patient, now: datetime, tz: str,
               staff_names: dict[str, str] | None = None) -> AlertCard:
    by = alert.acknowledged_by
    call_number = patient.phone_e164 if alert.level in CALL_LEVELS else None
    return AlertCard(
        id=alert.id, level=alert.level, level_label=LEVEL_LABELS.get(alert.level, alert.level),
        status=alert.status, kind_label=ALERT_KIND_LABELS.get(alert.kind, alert.kind),
        patient_id=patient.id, patient_name=patient_label(patient),
        patient_phone=mask_phone(patient.phone_e164),
        reasons=rule_lines(alert.reasons), missing=[field_label(f) for f in alert.missing or ()],
        summary=alert.summary or "", raised_at=local_time(alert.created_at, tz),
        raised_ago=time_since(alert.created_at, now),
        age_seconds=max(0, int((now - alert.created_at).total_seconds())),
        acknowledged_by=(staff_names or {}).get(by or "", by),
        is_patient_text=alert.kind in ("patient_message", "callback_requested"),
        has_name=bool(patient.name), patient_time=patient_clock(patient, now, tz),
        call_number=call_number, call_text=dial_text(call_number) if call_number else "",
        note_required=note_required(alert),
    )


# ---- pain chart ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartPoint:
    x: float
    y: float
    score: int
    level: str
    label: str  # "2026-03-01 intake: 6/10"


@dataclass(frozen=True)
class PainChart:
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    points: list[ChartPoint]
    path: str
    grid: list[tuple[float, int]]  # (y, score)
    x_ticks: list[tuple[float, str]]
    baseline_y: float | None
    baseline: int | None

    @property
    def empty(self) -> bool:
        return not self.points


def pain_chart(checkins: list[CheckIn], tz: str, *, baseline: int | None = None,
               width: int = 640, height: int = 220) -> PainChart:
    """Geometry of the pain-score-over-time chart (one point per check-in with a score)."""
    left, right, top, bottom = 44, 16, 14, 34
    inner_w, inner_h = width - left - right, height - top - bottom
    scored = sorted(
        ((c.completed_at or c.started_at, c) for c in checkins
         if isinstance((c.answers or {}).get("pain_score"), int)
         and not isinstance(c.answers["pain_score"], bool)),
        key=lambda pair: pair[0])

    def y_of(score: int) -> float:
        return round(top + inner_h * (1 - score / 10), 1)

    grid = [(y_of(score), score) for score in range(0, 11, 2)]
    if not scored:
        return PainChart(width, height, left, right, top, bottom, [], "", grid, [],
                         None if baseline is None else y_of(baseline), baseline)
    first, last = scored[0][0], scored[-1][0]
    span = (last - first).total_seconds()

    pad = 12  # keeps the first and last points off the axes

    def x_of(when: datetime) -> float:
        if span <= 0:
            return round(left + inner_w / 2, 1)
        return round(left + pad + (inner_w - 2 * pad) * (when - first).total_seconds() / span, 1)

    points = []
    for when, checkin in scored:
        score = checkin.answers["pain_score"]
        points.append(ChartPoint(
            x=x_of(when), y=y_of(score), score=score, level=checkin.level or "none",
            label=f"{local_date(when, tz)} {checkin.kind}: {score}/10"))
    path = " ".join(("M" if i == 0 else "L") + f"{p.x},{p.y}" for i, p in enumerate(points))
    ticks: list[tuple[float, str]] = []
    for point, (when, _) in zip(points, scored, strict=True):
        text = local_date(when, tz)
        if not ticks or (point.x - ticks[-1][0] > 70 and text != ticks[-1][1]):
            ticks.append((point.x, text))
    return PainChart(width, height, left, right, top, bottom, points, path, grid, ticks,
                     None if baseline is None else y_of(baseline), baseline)


# ---- clinician context (CLINICAL.md section 5) --------------------------------------------


@dataclass(frozen=True)
class AnswerLine:
    field: str
    label: str
    question: str
    answer: str
    answered: bool
    red_flag: bool

    @property
    def alarming(self) -> bool:
        """A red flag answered yes."""
        return self.red_flag and self.answer == "Yes"


@dataclass(frozen=True)
class ClinicianContext:
    checkin: CheckIn
    level: str | None
    reasons: list[tuple[str, str]]
    answers: list[AnswerLine]
    not_answered: list[str]
    baseline_pain: int | None
    latest_pain: int | None
    considerations: tuple[str, ...] = CLINICIAN_CONSIDERATIONS


def clinician_context(checkin: CheckIn, episode: Episode | None,
                      latest_pain: int | None) -> ClinicianContext:
    """The answers of a check-in against the questions of the flow version it ran."""
    flow = get_flow(checkin.flow_id, checkin.flow_version)
    answers = checkin.answers or {}
    lines = []
    asked = set()
    for node in flow.questions:
        asked.add(node.field)
        value = answers.get(node.field)
        lines.append(AnswerLine(node.field, field_label(node.field),
                                node.text.get("en", ""), answer_text(value), value is not None,
                                node.field in RED_FLAG_FIELDS))
    for name, value in answers.items():  # known before the conversation (e.g. from the intake)
        if name not in asked:
            lines.append(AnswerLine(name, field_label(name), "(known from earlier)",
                                    answer_text(value), value is not None,
                                    name in RED_FLAG_FIELDS))
    finished = checkin.status != "active"
    not_answered = [field_label(f) for f in (checkin.missing or ())] if finished else []
    return ClinicianContext(
        checkin=checkin, level=checkin.level, reasons=rule_lines(checkin.reasons),
        answers=lines, not_answered=not_answered,
        baseline_pain=episode.baseline_pain_score if episode else None,
        latest_pain=latest_pain)


# ---- timeline -----------------------------------------------------------------------------

# Within one timestamp, the order things happen in: a check-in starts, its texts go back and
# forth (by row id), it raises an alert, staff act on it, it ends.
STARTS, TEXT, QUEUED, RAISED, ACTED, ENDS, OTHER = range(7)


@dataclass
class TimelineEntry:
    at: datetime
    kind: str  # message_in | message_out | queued | checkin | alert | followup | episode
    title: str
    text: str = ""  # may be patient-written: the template escapes it
    level: str | None = None
    notes: list[str] = field(default_factory=list)
    checkin_id: int | None = None
    rank: int = OTHER
    seq: int = 0

    @property
    def key(self) -> tuple[datetime, int, int]:
        return self.at, self.rank, self.seq


def timeline(*, checkins: list[CheckIn], messages: list[Message], queued: list[Outbox],
             alerts: list[Alert], followups: list[FollowUp],
             episodes: list[Episode]) -> list[TimelineEntry]:
    """Everything that happened (and the follow-ups still to come), oldest first."""
    entries: list[TimelineEntry] = []
    for m in messages:
        channel = "call" if m.channel == "voice" else "SMS"
        if m.direction == "in":
            entries.append(TimelineEntry(m.created_at, "message_in", f"Patient {channel}",
                                         m.body, checkin_id=m.checkin_id, rank=TEXT, seq=m.id))
        else:
            status = f" ({m.status})" if m.status else ""
            entries.append(TimelineEntry(m.created_at, "message_out",
                                         f"Clinic {channel}{status}", m.body,
                                         checkin_id=m.checkin_id, rank=TEXT, seq=m.id))
    for o in queued:
        entries.append(TimelineEntry(o.not_before, "queued", f"Queued SMS ({o.kind})", o.body,
                                     checkin_id=o.checkin_id, rank=QUEUED, seq=o.id))
    for c in checkins:
        what = checkin_name(c)
        via = "call" if c.channel == "voice" else "SMS"
        entries.append(TimelineEntry(c.started_at, "checkin", f"{what} check-in started ({via})",
                                     checkin_id=c.id, rank=STARTS, seq=c.id))
        if c.completed_at is not None:
            entries.append(TimelineEntry(
                c.completed_at, "checkin", f"{what} check-in {checkin_outcome(c)}",
                level=c.level, notes=[f"{rule}: {text}" for rule, text in rule_lines(c.reasons)],
                checkin_id=c.id, rank=ENDS, seq=c.id))
    for a in alerts:
        kind = ALERT_KIND_LABELS.get(a.kind, a.kind)
        entries.append(TimelineEntry(a.created_at, "alert",
                                     f"Alert raised: {kind} ({LEVEL_LABELS.get(a.level, a.level)})",
                                     a.summary if a.kind in ("patient_message", "callback_requested") else "",
                                     level=a.level, checkin_id=a.checkin_id, rank=RAISED,
                                     seq=a.id))
        if a.acknowledged_at is not None:
            entries.append(TimelineEntry(a.acknowledged_at, "alert", "Alert acknowledged",
                                         checkin_id=a.checkin_id, rank=ACTED, seq=a.id))
        if a.resolved_at is not None:
            entries.append(TimelineEntry(a.resolved_at, "alert", "Alert resolved",
                                         a.resolution_note or "", checkin_id=a.checkin_id,
                                         rank=ACTED, seq=a.id))
    for f in followups:
        what = "First" if f.kind == "first" else "Final"
        entries.append(TimelineEntry(f.due_at, "followup", f"{what} follow-up due ({f.status})",
                                     seq=f.id))
    for e in episodes:
        entries.append(TimelineEntry(e.opened_at, "episode", f"Episode {e.id} opened",
                                     rank=STARTS, seq=e.id))
        if e.closed_at is not None:
            entries.append(TimelineEntry(e.closed_at, "episode",
                                         f"Episode {e.id} {e.status} ({e.closed_reason or ''})",
                                         rank=ENDS, seq=e.id))
    entries.sort(key=lambda entry: entry.key)
    return entries


def checkin_name(checkin: CheckIn) -> str:
    if checkin.kind == "intake":
        return "Intake"
    return "Final follow-up" if checkin.final_check else "Follow-up"


def checkin_outcome(checkin: CheckIn) -> str:
    """'completed: Soon', 'timed out: no level', 'in progress'."""
    if checkin.completed_at is None:
        return "in progress"
    return (f"{checkin.status.replace('_', ' ')}: "
            f"{LEVEL_LABELS.get(checkin.level or '', 'no level')}")


@dataclass
class TimelineGroup:
    """One check-in and what happened in it (its texts, its alerts and what staff did), oldest
    first; or (checkin None) everything outside a conversation: consent, follow-up dates,
    episodes."""

    checkin: CheckIn | None
    title: str
    outcome: str
    level: str | None
    started_at: datetime | None
    entries: list[TimelineEntry]
    open: bool = False


def timeline_groups(entries: list[TimelineEntry], checkins: list[CheckIn]) -> list[TimelineGroup]:
    """The timeline by check-in, the latest check-in first and open; the others collapsed."""
    by_id = {c.id: c for c in checkins}
    grouped: dict[int, list[TimelineEntry]] = {c.id: [] for c in checkins}
    outside: list[TimelineEntry] = []
    for entry in entries:
        if entry.checkin_id in grouped:
            grouped[entry.checkin_id].append(entry)
        else:
            outside.append(entry)
    ordered = sorted(checkins, key=lambda c: (c.started_at, c.id), reverse=True)
    groups = []
    for checkin in ordered:
        via = "call" if checkin.channel == "voice" else "SMS"
        groups.append(TimelineGroup(
            checkin=by_id[checkin.id], title=f"{checkin_name(checkin)} check-in ({via})",
            outcome=checkin_outcome(checkin), level=checkin.level,
            started_at=checkin.started_at, entries=grouped[checkin.id]))
    if outside:
        groups.append(TimelineGroup(
            checkin=None, title="Outside a check-in",
            outcome="consent, messages between check-ins, follow-up dates, episodes",
            level=None, started_at=outside[0].at, entries=outside))
    if groups:
        groups[0].open = True
    return groups
