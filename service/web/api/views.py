"""The /api/v1 routes: authenticate, validate against the OpenAPI document, call the service
layer in one transaction, answer JSON. No SQL here."""

from __future__ import annotations

import base64
import json
import zoneinfo
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from sqlalchemy.exc import IntegrityError

from flows.triage import RULE_TEXT
from service import clock, taskqueue
from service.accounts import api_tokens
from service.conversations import checkins, consent
from service.phones import normalize_phone
from service.records import alerts, audit, exports
from service.records import patients as patient_records
from service.store import get_db
from service.store.models import Alert, CheckIn, Clinic, Episode, FollowUp, Message, Patient
from service.web.api import openapi
from service.web.api.errors import ApiError, handle_api_error
from service.web.api.validation import validate_request

PREFIX = "/api/v1"
bp = Blueprint("api", __name__, url_prefix=PREFIX)
bp.register_error_handler(ApiError, handle_api_error)

PUBLIC_ENDPOINTS = {"api.openapi_document"}
READ_METHODS = {"GET", "HEAD", "OPTIONS"}


# ---- every request ------------------------------------------------------------------------


@bp.before_request
def authenticate_and_validate() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS or request.url_rule is None:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="api"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'", challenge)
    with get_db().transaction() as session:
        row = api_tokens.authenticate(session, token.strip())
        if row is None:
            raise ApiError(401, "unauthorized", "the token is unknown or revoked",
                           {"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'})
        g.token_id, g.clinic_id, g.read_only = row.id, row.clinic_id, row.read_only
    if g.read_only and request.method not in READ_METHODS:
        raise ApiError(403, "forbidden", "this token is read-only")
    g.query, g.body = validate_request(request, PREFIX)


def _actor() -> dict[str, Any]:
    return {"actor_type": "api", "actor_id": str(g.token_id)}


def _now() -> datetime:
    return clock.now()  # moved by TRIAGE_CLOCK_OFFSET_DAYS outside production


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(openapi.document())


# ---- patients -----------------------------------------------------------------------------


@bp.post("/patients")
def enroll_patient():
    body = g.body
    fields = _enrollment(body)
    now = _now()
    try:
        with get_db().transaction() as session:
            clinic = session.get(Clinic, g.clinic_id)
            patient = consent.enroll_patient(session, clinic, now=now, **fields)
            audit.record(session, clinic_id=clinic.id, patient_id=patient.id,
                         action="patient_enrolled", now=now, **_actor())
            data = _patients(session, [patient])[0]
    except checkins.CheckInError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except IntegrityError:
        raise ApiError(409, "conflict",
                       "a patient with this phone number is already enrolled") from None
    if current_app.config.get("REDIS_URL"):
        # The consent text goes now (quiet hours still hold it), not at the next beat.
        taskqueue.send_task("tasks.send_now", config=current_app.config)
    response = jsonify(data)
    response.status_code = 201
    response.headers["Location"] = data["links"]["self"]
    return response


def _enrollment(body: dict[str, Any]) -> dict[str, Any]:
    """The use case's arguments from a body that matched the schema; 422 on a bad value."""
    try:
        phone = normalize_phone(body["phone"])
    except ValueError as exc:
        raise ApiError(422, "validation_error", f"phone: {exc}") from None
    name = " ".join((body.get("name") or "").split()) or None
    born = body.get("date_of_birth")
    date_of_birth = None
    if born is not None:
        date_of_birth = date.fromisoformat(born)
        if not date(1900, 1, 1) <= date_of_birth <= _now().date():
            raise ApiError(422, "validation_error",
                           "date_of_birth: must be between 1900-01-01 and today")
    timezone = body.get("timezone")
    if timezone is not None and timezone not in _timezones():
        raise ApiError(422, "validation_error",
                       f"timezone: {timezone!r} is not an IANA timezone like America/New_York")
    return {"phone": phone, "name": name, "date_of_birth": date_of_birth,
            "language": body.get("language", "en"), "timezone": timezone,
            "calls_allowed": bool(body.get("calls_allowed", False))}


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@bp.get("/patients")
def list_patients():
    limit, after = g.query["limit"], _cursor(g.query.get("cursor"), ("id",))
    with get_db().transaction() as session:
        try:
            rows = patient_records.list_patients(
                session, g.clinic_id, phone=g.query.get("phone"), name=g.query.get("name"),
                after_id=after[0] if after else None, limit=limit + 1)
        except ValueError as exc:
            raise ApiError(400, "bad_request", f"query parameter 'phone': {exc}") from None
        page, more = rows[:limit], len(rows) > limit
        audit.record_reads(session, clinic_id=g.clinic_id, patient_ids=[p.id for p in page],
                           action="patient_read", detail={"via": "list_patients"},
                           now=_now(), **_actor())
        data = _patients(session, page)
    return jsonify(_page(data, (page[-1].id,) if more else None))


@bp.get("/patients/<int:patient_id>")
def get_patient(patient_id: int):
    with get_db().transaction() as session:
        patient = _patient_or_404(session, patient_id)
        audit.record(session, clinic_id=g.clinic_id, patient_id=patient.id,
                     action="patient_read", detail={"via": "get_patient"}, now=_now(),
                     **_actor())
        data = _patients(session, [patient])[0]
    return jsonify(data)


@bp.get("/patients/<int:patient_id>/episodes")
def list_episodes(patient_id: int):
    with get_db().transaction() as session:
        patient = _patient_or_404(session, patient_id)
        audit.record(session, clinic_id=g.clinic_id, patient_id=patient.id,
                     action="patient_read", detail={"via": "list_episodes"}, now=_now(),
                     **_actor())
        history = patient_records.patient_history(session, patient)
        data = _history(patient, history)
    return jsonify(data)


@bp.delete("/patients/<int:patient_id>")
def erase_patient(patient_id: int):
    with get_db().transaction() as session:
        patient = _patient_or_404(session, patient_id, for_update=True)
        patient_records.erase_patient(session, patient, now=_now(), **_actor())
    return Response(status=204)


@bp.post("/patients/<int:patient_id>/checkins")
def start_checkin(patient_id: int):
    now = _now()
    try:
        with get_db().transaction() as session:
            patient = _patient_or_404(session, patient_id, for_update=True)
            clinic = session.get(Clinic, g.clinic_id)
            result = checkins.start_checkin_now(session, clinic, patient, now)
            audit.record(session, clinic_id=clinic.id, patient_id=patient.id,
                         action="checkin_requested", detail={"result": result}, now=now,
                         **_actor())
    except checkins.CheckInError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except IntegrityError:
        raise ApiError(409, "conflict", "the patient's conversation changed meanwhile; "
                                        "try again") from None
    response = jsonify({"patient_id": patient_id, "result": result})
    response.status_code = 202
    return response


def _followup_change(patient_id: int, change) -> Response:
    now = _now()
    with get_db().transaction() as session:
        patient = _patient_or_404(session, patient_id, for_update=True)
        try:
            changed = change(session, patient, now=now, **_actor())
        except patient_records.PatientStateError as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        pending = patient_records.pending_followups(session, patient.id)
        data = {"patient_id": patient.id, "changed": changed,
                "followups": [_followup(f) for f in pending]}
    return jsonify(data)


@bp.post("/patients/<int:patient_id>/followups/pause")
def pause_followups(patient_id: int):
    return _followup_change(patient_id, patient_records.pause_followups)


@bp.post("/patients/<int:patient_id>/followups/resume")
def resume_followups(patient_id: int):
    return _followup_change(patient_id, patient_records.resume_followups)


@bp.post("/patients/<int:patient_id>/followups/cancel")
def cancel_followups(patient_id: int):
    return _followup_change(patient_id, patient_records.cancel_patient_followups)


def _patient_or_404(session, patient_id: int, *, for_update: bool = False) -> Patient:
    patient = patient_records.get_patient(session, g.clinic_id, patient_id,
                                          for_update=for_update)
    if patient is None:
        raise ApiError(404, "not_found", f"no patient {patient_id}")
    return patient


# ---- alerts -------------------------------------------------------------------------------


@bp.get("/alerts")
def list_alerts():
    limit = g.query["limit"]
    after = _cursor(g.query.get("cursor"), ("rank", "created_at", "id"))
    if after is not None:
        try:
            after = (int(after[0]), clock.parse_instant(after[1]), int(after[2]))
        except (TypeError, ValueError):
            raise ApiError(400, "bad_request", "the cursor is not one this API gave") from None
        if after[1].tzinfo is None:
            raise ApiError(400, "bad_request", "the cursor is not one this API gave")
    with get_db().transaction() as session:
        rows = alerts.list_alerts(session, g.clinic_id, status=g.query.get("status"),
                                  level=g.query.get("level"), kind=g.query.get("kind"),
                                  patient_id=g.query.get("patient_id"), after=after,
                                  limit=limit + 1)
        page, more = rows[:limit], len(rows) > limit
        audit.record_reads(session, clinic_id=g.clinic_id,
                           patient_ids=[a.patient_id for a in page], action="patient_read",
                           detail={"via": "list_alerts"}, now=_now(), **_actor())
        data = _alerts(session, page)
    next_key = None
    if more:
        rank, created, last_id = alerts.sort_key(page[-1])
        next_key = (rank, created.isoformat(), last_id)
    return jsonify(_page(data, next_key))


@bp.get("/alerts/history")
def alert_history():
    """Resolved alerts, the most recently resolved first, with who acknowledged and resolved
    them, when, and the note."""
    limit = g.query["limit"]
    before = _cursor(g.query.get("cursor"), ("resolved_at", "id"))
    if before is not None:
        try:
            before = (clock.parse_instant(before[0]), int(before[1]))
        except (TypeError, ValueError):
            raise ApiError(400, "bad_request", "the cursor is not one this API gave") from None
        if before[0].tzinfo is None:
            raise ApiError(400, "bad_request", "the cursor is not one this API gave")
    with get_db().transaction() as session:
        clinic = session.get(Clinic, g.clinic_id)
        since, until = _date_range(clinic, g.query.get("since"), g.query.get("until"))
        patient_id = g.query.get("patient_id")
        rows = alerts.resolved_alerts(
            session, g.clinic_id, level=g.query.get("level"), since=since, until=until,
            patient_ids=None if patient_id is None else [patient_id], before=before,
            limit=limit + 1)
        page, more = rows[:limit], len(rows) > limit
        audit.record_reads(session, clinic_id=g.clinic_id,
                           patient_ids=[a.patient_id for a in page], action="patient_read",
                           detail={"via": "alert_history"}, now=_now(), **_actor())
        data = _alerts(session, page)
    next_key = (page[-1].resolved_at.isoformat(), page[-1].id) if more else None
    return jsonify(_page(data, next_key, keys=("resolved_at", "id")))


def _date_range(clinic: Clinic, since: str | None,
                until: str | None) -> tuple[datetime | None, datetime | None]:
    """Clinic-local dates (inclusive) as [since 00:00, the day after until 00:00)."""
    try:
        start = clock.parse_day(since) if since else None
        end = clock.parse_day(until) if until else None
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    if start and end and end < start:
        raise ApiError(400, "bad_request", "'until' is before 'since'")
    zone = zoneinfo.ZoneInfo(clinic.timezone)
    return (datetime.combine(start, time(), zone) if start else None,
            datetime.combine(end + timedelta(days=1), time(), zone) if end else None)


# ---- FHIR ---------------------------------------------------------------------------------


@bp.get("/fhir/checkins")
def export_checkins():
    """The clinic's check-ins of a date range as one FHIR R4 Bundle."""
    try:
        start, end = clock.parse_day(g.query["start"]), clock.parse_day(g.query["end"])
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    now = _now()
    base = current_app.config.get("PUBLIC_BASE_URL") or request.host_url
    with get_db().transaction() as session:
        clinic = session.get(Clinic, g.clinic_id)
        try:
            bundle, patient_ids = exports.checkins_bundle(session, clinic, start, end, base, now)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        audit.record_reads(session, clinic_id=g.clinic_id, patient_ids=patient_ids,
                           action="patient_read",
                           detail={"via": "export_checkins", "start": start.isoformat(),
                                   "end": end.isoformat()}, now=now, **_actor())
    return Response(json.dumps(bundle), mimetype="application/fhir+json")


def _alert_change(alert_id: int, change) -> Response:
    now = _now()
    with get_db().transaction() as session:
        alert = alerts.get_alert(session, g.clinic_id, alert_id, for_update=True)
        if alert is None:
            raise ApiError(404, "not_found", f"no alert {alert_id}")
        try:
            change(session, alert, now)
        except alerts.AlertStateError as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        except ValueError as exc:
            raise ApiError(422, "validation_error", str(exc)) from None
        data = _alerts(session, [alert])[0]
    return jsonify(data)


@bp.post("/alerts/<int:alert_id>/acknowledge")
def acknowledge_alert(alert_id: int):
    return _alert_change(alert_id, lambda session, alert, now: alerts.acknowledge_alert(
        session, alert, now=now, **_actor()))


@bp.post("/alerts/<int:alert_id>/resolve")
def resolve_alert(alert_id: int):
    note = (g.body or {}).get("note", "")  # optional for an info alert
    return _alert_change(alert_id, lambda session, alert, now: alerts.resolve_alert(
        session, alert, note=note, now=now, **_actor()))


# ---- paging -------------------------------------------------------------------------------


def _cursor(text: str | None, keys: tuple[str, ...]) -> tuple | None:
    """A cursor is the sort key of the last item of a page, as base64url JSON."""
    if text is None:
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(text.encode("ascii") + b"=="))
        values = tuple(raw[key] for key in keys)
    except (ValueError, TypeError, KeyError, UnicodeError):
        raise ApiError(400, "bad_request", "the cursor is not one this API gave") from None
    if keys == ("id",) and (type(values[0]) is not int or not 0 <= values[0] <= openapi.MAX_ID):
        raise ApiError(400, "bad_request", "the cursor is not one this API gave")
    if keys == ("rank", "created_at", "id") and not (
            type(values[0]) is int and 0 <= values[0] <= 10 and isinstance(values[1], str)
            and type(values[2]) is int and 0 <= values[2] <= openapi.MAX_ID):
        raise ApiError(400, "bad_request", "the cursor is not one this API gave")
    if keys == ("resolved_at", "id") and not (
            isinstance(values[0], str) and type(values[1]) is int
            and 0 <= values[1] <= openapi.MAX_ID):
        raise ApiError(400, "bad_request", "the cursor is not one this API gave")
    return values


def _encode_cursor(keys: tuple[str, ...], values: tuple) -> str:
    text = json.dumps(dict(zip(keys, values, strict=True)), separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _page(data: list[dict], next_key: tuple | None,
          keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    cursor = None
    if next_key is not None:
        if keys is None:
            keys = ("id",) if len(next_key) == 1 else ("rank", "created_at", "id")
        cursor = _encode_cursor(keys, next_key)
    next_url = None
    if cursor is not None:
        # Only the parameters the endpoint takes: any other one would reach url_for as one
        # of its own (endpoint, _method, _scheme ...).
        args = {k: v for k, v in request.args.items() if k in g.query and k != "cursor"}
        next_url = url_for(request.endpoint, **args, cursor=cursor)
    return {"data": data, "next_cursor": cursor, "links": {"next": next_url}}


# ---- representations ----------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _reasons(ids) -> list[dict[str, str]]:
    return [{"id": rid, "text": RULE_TEXT.get(rid, "")} for rid in ids or ()]


def _patients(session, patients: list[Patient]) -> list[dict[str, Any]]:
    open_episodes = dict(session.execute(
        sa.select(Episode.patient_id, Episode.id).where(
            Episode.patient_id.in_([p.id for p in patients]), Episode.status == "open")).all()
    ) if patients else {}
    return [{
        "id": p.id,
        "phone": p.phone_e164,
        "name": p.name,
        "date_of_birth": p.date_of_birth.isoformat() if p.date_of_birth else None,
        "language": p.language,
        "timezone": p.timezone,
        "calls_allowed": p.calls_allowed,
        "consent": p.consent,
        "consented_at": _time(p.consented_at),
        "opted_out": p.opted_out,
        "opted_out_at": _time(p.opted_out_at),
        "number_invalid": p.number_invalid,
        "created_at": _time(p.created_at),
        "open_episode_id": open_episodes.get(p.id),
        "links": {"self": url_for("api.get_patient", patient_id=p.id),
                  "episodes": url_for("api.list_episodes", patient_id=p.id)},
    } for p in patients]


def _message(m: Message) -> dict[str, Any]:
    return {"id": m.id, "direction": m.direction, "channel": m.channel, "body": m.body,
            "status": m.status, "created_at": _time(m.created_at), "checkin_id": m.checkin_id}


def _checkin(c: CheckIn, messages: list[Message]) -> dict[str, Any]:
    return {"id": c.id, "kind": c.kind, "channel": c.channel, "status": c.status,
            "flow_id": c.flow_id, "flow_version": c.flow_version, "language": c.language,
            "final_check": c.final_check, "started_at": _time(c.started_at),
            "completed_at": _time(c.completed_at), "level": c.level,
            "reasons": _reasons(c.reasons), "answers": dict(c.answers or {}),
            "missing": list(c.missing or []), "messages": [_message(m) for m in messages]}


def _followup(f: FollowUp) -> dict[str, Any]:
    return {"id": f.id, "episode_id": f.episode_id, "kind": f.kind, "due_at": _time(f.due_at),
            "status": f.status}


def _history(patient: Patient, history: patient_records.History) -> dict[str, Any]:
    by_checkin: dict[int | None, list[Message]] = {}
    checkin_ids = {c.id for c in history.checkins}
    for m in history.messages:
        by_checkin.setdefault(m.checkin_id if m.checkin_id in checkin_ids else None,
                              []).append(m)
    episodes = []
    for e in history.episodes:
        episodes.append({
            "id": e.id, "status": e.status, "opened_at": _time(e.opened_at),
            "closed_at": _time(e.closed_at), "closed_reason": e.closed_reason,
            "baseline_pain_score": e.baseline_pain_score, "intake_level": e.intake_level,
            "last_level": e.last_level,
            "checkins": [_checkin(c, by_checkin.get(c.id, [])) for c in history.checkins
                         if c.episode_id == e.id],
            "followups": [_followup(f) for f in history.followups if f.episode_id == e.id],
        })
    return {
        "patient_id": patient.id,
        "data": episodes,
        "other_checkins": [_checkin(c, by_checkin.get(c.id, [])) for c in history.checkins
                           if c.episode_id is None],
        "other_messages": [_message(m) for m in by_checkin.get(None, [])],
    }


def _alerts(session, rows: list[Alert]) -> list[dict[str, Any]]:
    who = alerts.actors(session, g.clinic_id,
                        [a.acknowledged_by for a in rows] + [a.resolved_by for a in rows])
    return [_alert(a, who) for a in rows]


def _alert(a: Alert, who: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def actor(key: str | None) -> dict[str, Any] | None:
        if key is None:
            return None
        kind, _, raw = key.partition(":")
        # An account deleted since still says what it was.
        return who.get(key) or {"type": kind, "id": int(raw) if raw.isdigit() else None,
                                "email": None, "name": None}

    return {"id": a.id, "patient_id": a.patient_id, "episode_id": a.episode_id,
            "checkin_id": a.checkin_id, "kind": a.kind, "level": a.level,
            "reasons": _reasons(a.reasons), "missing": list(a.missing or []),
            "summary": a.summary or "", "status": a.status, "created_at": _time(a.created_at),
            "acknowledged_at": _time(a.acknowledged_at),
            "acknowledged_by": actor(a.acknowledged_by),
            "resolved_at": _time(a.resolved_at), "resolved_by": actor(a.resolved_by),
            "resolution_note": a.resolution_note}
