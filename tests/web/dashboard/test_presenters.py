"""What the dashboard computes to show: times, the pain chart's geometry, clinician context."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from flows.triage import RULE_TEXT
from service.store.models import Alert, CheckIn, Episode, Message
from service.web.dashboard import presenters
from service.web.dashboard.forms import parse_enroll

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize("ago, text", [
    (timedelta(seconds=5), "just now"),
    (timedelta(minutes=7, seconds=59), "7 min ago"),
    (timedelta(hours=2), "2 h ago"),
    (timedelta(hours=3, minutes=4), "3 h 4 min ago"),
    (timedelta(days=3, hours=1), "3 days ago"),
    (timedelta(seconds=-30), "just now"),  # a clock a little ahead never shows a negative age
])
def test_time_since(ago, text):
    assert presenters.time_since(NOW - ago, NOW) == text


def _checkin(pain, minutes: int, level: str = "soon", kind: str = "intake") -> CheckIn:
    return CheckIn(kind=kind, level=level, answers={"pain_score": pain}, status="completed",
                   started_at=NOW + timedelta(minutes=minutes),
                   completed_at=NOW + timedelta(minutes=minutes))


def test_pain_chart_places_scores_on_a_0_to_10_scale_over_time():
    chart = presenters.pain_chart([_checkin(4, 60 * 24 * 28, "self_care", "followup"),
                                   _checkin(8, 0), _checkin(None, 5), _checkin(True, 6)],
                                  "America/New_York", baseline=8)
    first, last = chart.points
    assert (first.score, last.score) == (8, 4)  # time order; no score and booleans are skipped
    bottom, top = chart.height - chart.bottom, chart.top
    assert first.y == pytest.approx(top + (bottom - top) * 0.2)
    assert last.y == pytest.approx(top + (bottom - top) * 0.6)
    assert chart.left < first.x < last.x < chart.width - chart.right
    assert chart.baseline_y == first.y
    assert chart.path == f"M{first.x},{first.y} L{last.x},{last.y}"
    assert [score for _, score in chart.grid] == [0, 2, 4, 6, 8, 10]
    assert last.label == "2026-03-30 followup: 4/10" and last.level == "self_care"


def test_pain_chart_with_one_or_no_score():
    (only,) = presenters.pain_chart([_checkin(5, 0)], "UTC").points
    assert only.x == presenters.pain_chart([], "UTC").left + (640 - 44 - 16) / 2
    empty = presenters.pain_chart([], "UTC")
    assert empty.empty and empty.path == "" and empty.baseline_y is None


def test_clinician_context_shows_every_question_and_what_was_not_answered():
    checkin = CheckIn(kind="intake", flow_id="intake", flow_version=1, status="timed_out",
                      level="soon", reasons=["INCOMPLETE"], missing=["bowel_bladder"],
                      answers={"chest_symptoms": False, "limb_weakness": False,
                               "weight_loss": True, "pain_score": 6})
    context = presenters.clinician_context(checkin, Episode(baseline_pain_score=6), 6)
    assert context.reasons == [("INCOMPLETE", RULE_TEXT["INCOMPLETE"])]
    assert context.not_answered == ["New bladder or bowel trouble / saddle numbness"]
    by_field = {line.field: line for line in context.answers}
    assert by_field["bowel_bladder"].answer == "Not answered"
    assert by_field["weight_loss"].alarming and not by_field["chest_symptoms"].alarming
    assert by_field["pain_score"].answer == "6" and not by_field["pain_score"].red_flag
    assert (context.baseline_pain, context.latest_pain) == (6, 6)
    assert any("MRI" in item for item in context.considerations)


def test_enroll_form_reads_and_normalizes():
    data, errors = parse_enroll({"phone": "617.555.0142", "name": "  Ana   Rivera ",
                                 "date_of_birth": "1961-04-02", "language": "es",
                                 "timezone": "", "consent": "yes"}, today=date(2026, 3, 2))
    assert errors == {}
    assert (data.phone, data.name, data.date_of_birth, data.language, data.timezone,
            data.calls_allowed) == ("+16175550142", "Ana Rivera", date(1961, 4, 2), "es",
                                    None, False)


def test_the_timeline_groups_by_checkin_and_reads_each_conversation_in_order():
    """Texts of one turn share a timestamp: ids, not the clock, give their order; the check-in
    starts before its texts and ends after its alert."""
    intake = CheckIn(id=1, kind="intake", channel="sms", status="completed", level="urgent",
                     reasons=["SYSTEMIC"], started_at=NOW, completed_at=NOW)
    later = CheckIn(id=2, kind="followup", channel="sms", status="active", final_check=False,
                    started_at=NOW + timedelta(days=28))
    same = NOW  # the whole intake in one instant
    texts = [Message(id=12, direction="out", channel="sms", body="Question 2", checkin_id=1,
                     created_at=same, status="delivered"),
             Message(id=10, direction="out", channel="sms", body="Question 1", checkin_id=1,
                     created_at=same, status="delivered"),
             Message(id=11, direction="in", channel="sms", body="yes", checkin_id=1,
                     created_at=same),
             Message(id=13, direction="in", channel="sms", body="PAIN", checkin_id=None,
                     created_at=same - timedelta(seconds=1))]
    alert = Alert(id=5, kind="triage", level="urgent", checkin_id=1, created_at=same,
                  status="open", summary="")
    entries = presenters.timeline(checkins=[later, intake], messages=texts, queued=[],
                                  alerts=[alert], followups=[], episodes=[])
    groups = presenters.timeline_groups(entries, [intake, later])
    assert [(g.title, g.open) for g in groups] == [
        ("Follow-up check-in (SMS)", True), ("Intake check-in (SMS)", False),
        ("Outside a check-in", False)]
    assert (groups[0].outcome, groups[1].outcome, groups[1].level) == (
        "in progress", "completed: Urgent", "urgent")
    assert [(e.title, e.text) for e in groups[1].entries] == [
        ("Intake check-in started (SMS)", ""), ("Clinic SMS (delivered)", "Question 1"),
        ("Patient SMS", "yes"), ("Clinic SMS (delivered)", "Question 2"),
        ("Alert raised: Check-in result (Urgent)", ""),
        ("Intake check-in completed: Urgent", "")]
    assert [e.text for e in groups[2].entries] == ["PAIN"]
