"""Exports for clinic systems: episodes as CSV, and check-ins as FHIR R4 resources (one, or a
clinic's check-ins of a date range in one Bundle).

The FHIR `Questionnaire` is built from the flow definition the check-in ran (its id and
version), with one item per question whose linkId is the answer field; the
`QuestionnaireResponse` carries the answers under the same linkIds.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from flows.loader import get_flow
from flows.model import Flow
from flows.triage import STATUS_VALUES
from service.store.models import Alert, CheckIn, Clinic, Episode, Patient

# ---- CSV ----------------------------------------------------------------------------------

EPISODE_COLUMNS = (
    "episode_id", "patient_id", "patient_name", "opened_at", "status", "closed_at",
    "closed_reason", "intake_level", "last_level", "baseline_pain_score", "latest_pain_score",
    "intake_reasons", "checkins", "alerts", "open_alerts", "next_followup_at",
)
MAX_EXPORT_DAYS = 366 * 3


def day_bounds(start: date, end: date, tz: str) -> tuple[datetime, datetime]:
    """[start 00:00, the day after end 00:00) in the clinic's timezone."""
    if end < start:
        raise ValueError("the end date is before the start date")
    if (end - start).days > MAX_EXPORT_DAYS:
        raise ValueError(f"at most {MAX_EXPORT_DAYS} days at a time")
    zone = ZoneInfo(tz)
    return (datetime.combine(start, time(), zone),
            datetime.combine(end + timedelta(days=1), time(), zone))


def episodes_csv(session: Session, clinic: Clinic, start: date,
                 end: date) -> tuple[str, list[int]]:
    """Episodes of the clinic opened between `start` and `end` (inclusive, clinic's dates),
    and the ids of the patients in the file (each one's record was read: the caller audits
    them)."""
    low, high = day_bounds(start, end, clinic.timezone)
    episodes = session.scalars(
        sa.select(Episode)
        .join(Patient, Patient.id == Episode.patient_id)
        .where(Episode.clinic_id == clinic.id, Episode.opened_at >= low,
               Episode.opened_at < high)
        .options(selectinload(Episode.patient), selectinload(Episode.checkins),
                 selectinload(Episode.followups))
        .order_by(Episode.opened_at, Episode.id)
    ).all()
    alert_counts = _alert_counts(session, [e.id for e in episodes])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EPISODE_COLUMNS)
    for episode in episodes:
        writer.writerow(_cell(value) for value in _episode_row(episode, alert_counts))
    return out.getvalue(), list(dict.fromkeys(e.patient_id for e in episodes))


def _alert_counts(session: Session, episode_ids: list[int]) -> dict[int, tuple[int, int]]:
    if not episode_ids:
        return {}
    rows = session.execute(
        sa.select(Alert.episode_id, sa.func.count(Alert.id),
                  sa.func.sum(sa.case((Alert.status != "resolved", 1), else_=0)))
        .where(Alert.episode_id.in_(episode_ids)).group_by(Alert.episode_id))
    return {episode_id: (total, int(open_ or 0)) for episode_id, total, open_ in rows}


def _episode_row(episode: Episode, alert_counts: dict[int, tuple[int, int]]) -> list[Any]:
    intake = next((c for c in episode.checkins if c.kind == "intake"), None)
    scores = [c.answers.get("pain_score") for c in episode.checkins
              if isinstance((c.answers or {}).get("pain_score"), int)]
    due = [f.due_at for f in episode.followups if f.status == "scheduled"]
    total, open_ = alert_counts.get(episode.id, (0, 0))
    return [
        episode.id, episode.patient_id,
        "" if episode.patient.erased_at else (episode.patient.name or ""),
        _iso(episode.opened_at), episode.status, _iso(episode.closed_at),
        episode.closed_reason or "", episode.intake_level or "", episode.last_level or "",
        "" if episode.baseline_pain_score is None else episode.baseline_pain_score,
        scores[-1] if scores else "",
        " ".join(intake.reasons) if intake else "",
        len(episode.checkins), total, open_, _iso(min(due)) if due else "",
    ]


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def _cell(value: Any) -> Any:
    """A spreadsheet must not read a cell as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# ---- FHIR R4 ------------------------------------------------------------------------------

ITEM_TYPES = {
    "yes_no": "boolean",
    "pain_score": "integer",
    "age": "integer",
    "duration": "integer",
    "status": "choice",
}
UNITS = {"duration": ("d", "days"), "age": ("a", "years")}
RANGES = {"pain_score": (0, 10)}
SD = "http://hl7.org/fhir/StructureDefinition"
FHIR_STATUS = {"active": "in-progress", "completed": "completed", "timed_out": "stopped",
               "cancelled": "stopped"}


def questionnaire_url(base_url: str, flow: Flow) -> str:
    return f"{base_url.rstrip('/')}/fhir/Questionnaire/{flow.id}"


def questionnaire(flow: Flow, base_url: str) -> dict[str, Any]:
    """The Questionnaire a flow asks: one item per question, linkId = the answer field."""
    return {
        "resourceType": "Questionnaire",
        "id": f"{flow.id}-v{flow.version}",
        "url": questionnaire_url(base_url, flow),
        "version": str(flow.version),
        "name": "".join(part.capitalize() for part in f"back pain {flow.id}".split()),
        "title": f"Upper back pain check-in: {flow.id} (version {flow.version})",
        "status": "active",
        "subjectType": ["Patient"],
        "language": "en",
        "item": [_question_item(node, base_url) for node in flow.questions],
    }


def _question_item(node, base_url: str) -> dict[str, Any]:
    item: dict[str, Any] = {"linkId": node.field, "text": node.text.get("en", ""),
                            "type": ITEM_TYPES.get(node.parse or "", "string"),
                            "required": False}
    extensions = []
    if node.parse in UNITS:
        code, display = UNITS[node.parse]
        extensions.append({"url": f"{SD}/questionnaire-unit",
                           "valueCoding": {"system": "http://unitsofmeasure.org",
                                           "code": code, "display": display}})
    if node.field in RANGES:
        low, high = RANGES[node.field]
        extensions += [{"url": f"{SD}/minValue", "valueInteger": low},
                       {"url": f"{SD}/maxValue", "valueInteger": high}]
    if extensions:
        item["extension"] = extensions
    if node.parse == "status":
        item["answerOption"] = [{"valueCoding": _status_coding(value, base_url)}
                                for value in STATUS_VALUES]
    return item


def _status_coding(value: str, base_url: str) -> dict[str, str]:
    return {"system": f"{base_url.rstrip('/')}/fhir/CodeSystem/followup-status",
            "code": value, "display": value.capitalize()}


def questionnaire_response(checkin: CheckIn, flow: Flow, base_url: str) -> dict[str, Any]:
    """The answers of one check-in; unanswered questions have no item."""
    patient = checkin.patient
    subject: dict[str, Any] = {"reference": f"Patient/{patient.id}"}
    if patient.name and not patient.erased_at:
        subject["display"] = patient.name
    resource: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": f"checkin-{checkin.id}",
        "identifier": {"system": f"{base_url.rstrip('/')}/checkins", "value": str(checkin.id)},
        "questionnaire": f"{questionnaire_url(base_url, flow)}|{flow.version}",
        "status": FHIR_STATUS.get(checkin.status, "stopped"),
        "subject": subject,
        "authored": (checkin.completed_at or checkin.started_at).isoformat(timespec="seconds"),
    }
    items = list(_answer_items(flow, checkin.answers or {}, base_url))
    if items:  # FHIR forbids empty arrays: a check-in with no answer yet has no "item"
        resource["item"] = items
    if checkin.level:
        resource["extension"] = [
            {"url": f"{base_url.rstrip('/')}/fhir/StructureDefinition/triage-level",
             "valueCode": checkin.level},
            *({"url": f"{base_url.rstrip('/')}/fhir/StructureDefinition/triage-reason",
               "valueCode": reason} for reason in checkin.reasons or ()),
        ]
    return resource


def _answer_items(flow: Flow, answers: dict[str, Any], base_url: str) -> Iterable[dict]:
    for node in flow.questions:
        value = answers.get(node.field)
        answer = _answer_value(ITEM_TYPES.get(node.parse or "", "string"), value, base_url)
        if answer is not None:
            yield {"linkId": node.field, "text": node.text.get("en", ""), "answer": [answer]}


def _answer_value(item_type: str, value: Any, base_url: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if item_type == "boolean" and isinstance(value, bool):
        return {"valueBoolean": value}
    if item_type == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return {"valueInteger": value}
    if item_type == "choice" and value in STATUS_VALUES:
        return {"valueCoding": _status_coding(value, base_url)}
    if item_type == "string":
        return {"valueString": str(value)}
    return None


def checkin_bundle(checkin: CheckIn, base_url: str, now: datetime) -> dict[str, Any]:
    """A collection Bundle: the Questionnaire, then the QuestionnaireResponse answering it."""
    flow = get_flow(checkin.flow_id, checkin.flow_version)
    q = questionnaire(flow, base_url)
    qr = questionnaire_response(checkin, flow, base_url)
    base = base_url.rstrip("/")
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": now.isoformat(timespec="seconds"),
        "entry": [
            {"fullUrl": f"{base}/fhir/Questionnaire/{q['id']}", "resource": q},
            {"fullUrl": f"{base}/fhir/QuestionnaireResponse/{qr['id']}", "resource": qr},
        ],
    }


def checkins_bundle(session: Session, clinic: Clinic, start: date, end: date, base_url: str,
                    now: datetime) -> tuple[dict[str, Any], list[int]]:
    """The clinic's check-ins started between `start` and `end` (inclusive, clinic's dates)
    as one collection Bundle: each Questionnaire they answered once, then one
    QuestionnaireResponse per check-in, oldest first. Returns the bundle and the ids of the
    patients in it (each one's record was read: the caller audits them). Erased patients'
    check-ins are left out."""
    low, high = day_bounds(start, end, clinic.timezone)
    rows = session.scalars(
        sa.select(CheckIn).join(Patient, Patient.id == CheckIn.patient_id)
        .where(CheckIn.clinic_id == clinic.id, CheckIn.started_at >= low,
               CheckIn.started_at < high, Patient.erased_at.is_(None))
        .options(selectinload(CheckIn.patient))
        .order_by(CheckIn.started_at, CheckIn.id)).all()
    base = base_url.rstrip("/")
    questionnaires: dict[tuple[str, int], dict[str, Any]] = {}
    responses = []
    for checkin in rows:
        flow = get_flow(checkin.flow_id, checkin.flow_version)
        if (flow.id, flow.version) not in questionnaires:
            questionnaires[flow.id, flow.version] = questionnaire(flow, base_url)
        qr = questionnaire_response(checkin, flow, base_url)
        responses.append({"fullUrl": f"{base}/fhir/QuestionnaireResponse/{qr['id']}",
                          "resource": qr})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": now.isoformat(timespec="seconds"),
        # No `total`: FHIR R4 allows it on searchset and history bundles only (bdl-1).
    }
    entries = [{"fullUrl": f"{base}/fhir/Questionnaire/{q['id']}", "resource": q}
               for q in questionnaires.values()] + responses
    if entries:
        bundle["entry"] = entries
    return bundle, list(dict.fromkeys(c.patient_id for c in rows))
