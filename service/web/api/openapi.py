"""The OpenAPI 3.1 document of the JSON API: the contract requests are validated against and
responses are tested against (tests/web/api/test_schemathesis.py)."""

from __future__ import annotations

import copy
from typing import Any

from service.store import models

LEVELS = ["emergency", "urgent", "soon", "self_care"]
ALERT_LEVELS = ["emergency", "urgent", "soon", "info"]
ALERT_STATUSES = ["open", "acknowledged", "resolved"]
ALERT_KINDS = list(models.ALERT_KINDS)
MAX_ID = models.MAX_ID

_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_TIME = {"type": "string", "format": "date-time"}
_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_NULLABLE_ID = {"type": ["integer", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/E{code}"} for code in codes}


def _path_id(name: str, what: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": f"The {what}'s id.",
            "schema": dict(_ID)}


_PAGING = [
    {"name": "limit", "in": "query", "required": False,
     "description": "Items per page (default 50).",
     "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}},
    {"name": "cursor", "in": "query", "required": False,
     "description": "Where to continue: the `next_cursor` of the previous page.",
     "schema": {"type": "string", "minLength": 1, "maxLength": 200}},
]

_LIST_LINKS = {
    "type": "object",
    "required": ["next"],
    "properties": {"next": {"type": ["string", "null"],
                            "description": "The URL of the next page, or null on the last."}},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string",
                             "description": "Stable, machine-readable: bad_request, "
                                            "unauthorized, forbidden, not_found, conflict, "
                                            "validation_error, ..."},
                    "message": {"type": "string", "description": "For people."},
                },
            }
        },
    },
    "Reason": {
        "type": "object",
        "description": "A rule that fired (CLINICAL.md) and its plain meaning.",
        "required": ["id", "text"],
        "properties": {"id": {"type": "string"}, "text": {"type": "string"}},
    },
    "EnrollPatient": {
        "type": "object",
        "additionalProperties": False,
        "required": ["phone"],
        "properties": {
            "phone": {"type": "string", "minLength": 1, "maxLength": 40,
                      "description": "Mobile number; without +country it is read as US.",
                      "examples": ["+1 617 555 0123"]},
            "name": {"type": ["string", "null"], "maxLength": 100},
            "date_of_birth": {"type": ["string", "null"], "format": "date",
                              "description": "Skips the age question when given."},
            "language": {"type": "string", "enum": ["en", "es"], "default": "en"},
            "timezone": {"type": ["string", "null"], "maxLength": 64,
                         "description": "IANA name; default: the clinic's, else the number's."},
            "calls_allowed": {"type": "boolean", "default": False},
        },
    },
    "Patient": {
        "type": "object",
        "required": ["id", "phone", "name", "date_of_birth", "language", "timezone",
                     "calls_allowed", "consent", "consented_at", "opted_out", "opted_out_at",
                     "number_invalid", "created_at", "open_episode_id", "links"],
        "properties": {
            "id": {"type": "integer"},
            "phone": {"type": "string", "description": "E.164"},
            "name": _NULLABLE_STRING,
            "date_of_birth": {"type": ["string", "null"], "format": "date"},
            "language": {"type": "string"},
            "timezone": _NULLABLE_STRING,
            "calls_allowed": {"type": "boolean"},
            "consent": {"type": "string", "enum": ["pending", "given"]},
            "consented_at": _NULLABLE_TIME,
            "opted_out": {"type": "boolean"},
            "opted_out_at": _NULLABLE_TIME,
            "number_invalid": {"type": "boolean"},
            "created_at": _TIME,
            "open_episode_id": _NULLABLE_ID,
            "links": {
                "type": "object",
                "required": ["self", "episodes"],
                "properties": {"self": {"type": "string"}, "episodes": {"type": "string"}},
            },
        },
    },
    "PatientList": {
        "type": "object",
        "required": ["data", "next_cursor", "links"],
        "properties": {
            "data": {"type": "array", "items": _ref("Patient")},
            "next_cursor": _NULLABLE_STRING,
            "links": _LIST_LINKS,
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "direction", "channel", "body", "status", "created_at",
                     "checkin_id"],
        "properties": {
            "id": {"type": "integer"},
            "direction": {"type": "string", "enum": ["in", "out"]},
            "channel": {"type": "string", "enum": ["sms", "voice"]},
            "body": {"type": "string"},
            "status": _NULLABLE_STRING,
            "created_at": _TIME,
            "checkin_id": _NULLABLE_ID,
        },
    },
    "CheckIn": {
        "type": "object",
        "required": ["id", "kind", "channel", "status", "flow_id", "flow_version", "language",
                     "final_check", "started_at", "completed_at", "level", "reasons",
                     "answers", "missing", "messages"],
        "properties": {
            "id": {"type": "integer"},
            "kind": {"type": "string", "enum": ["intake", "followup"]},
            "channel": {"type": "string", "enum": ["sms", "voice"]},
            "status": {"type": "string",
                       "enum": ["active", "completed", "timed_out", "cancelled"]},
            "flow_id": {"type": "string"},
            "flow_version": {"type": "integer"},
            "language": {"type": "string"},
            "final_check": {"type": "boolean"},
            "started_at": _TIME,
            "completed_at": _NULLABLE_TIME,
            "level": {"enum": [*LEVELS, None], "description": "Null while active."},
            "reasons": {"type": "array", "items": _ref("Reason")},
            "answers": {"type": "object",
                        "description": "Field -> answer (CLINICAL.md section 1); null = not "
                                       "answered."},
            "missing": {"type": "array", "items": {"type": "string"},
                        "description": "Red-flag fields that were not answered."},
            "messages": {"type": "array", "items": _ref("Message")},
        },
    },
    "FollowUp": {
        "type": "object",
        "required": ["id", "episode_id", "kind", "due_at", "status"],
        "properties": {
            "id": {"type": "integer"},
            "episode_id": {"type": "integer"},
            "kind": {"type": "string", "enum": ["first", "final"]},
            "due_at": _TIME,
            "status": {"type": "string", "enum": ["scheduled", "claimed", "started", "done",
                                                  "cancelled", "paused"]},
        },
    },
    "Episode": {
        "type": "object",
        "required": ["id", "status", "opened_at", "closed_at", "closed_reason",
                     "baseline_pain_score", "intake_level", "last_level", "checkins",
                     "followups"],
        "properties": {
            "id": {"type": "integer"},
            "status": {"type": "string", "enum": ["open", "closed", "referred"]},
            "opened_at": _TIME,
            "closed_at": _NULLABLE_TIME,
            "closed_reason": _NULLABLE_STRING,
            "baseline_pain_score": {"type": ["integer", "null"], "minimum": 0, "maximum": 10},
            "intake_level": {"enum": [*LEVELS, None]},
            "last_level": {"enum": [*LEVELS, None]},
            "checkins": {"type": "array", "items": _ref("CheckIn")},
            "followups": {"type": "array", "items": _ref("FollowUp")},
        },
    },
    "PatientEpisodes": {
        "type": "object",
        "required": ["patient_id", "data", "other_checkins", "other_messages"],
        "properties": {
            "patient_id": {"type": "integer"},
            "data": {"type": "array", "items": _ref("Episode"),
                     "description": "The episodes, oldest first (under `data`, like every "
                                    "list of the API; not paged)."},
            "other_checkins": {
                "type": "array", "items": _ref("CheckIn"),
                "description": "Check-ins in no episode: an intake still running, or one "
                               "that ended without an outcome."},
            "other_messages": {
                "type": "array", "items": _ref("Message"),
                "description": "Messages of no check-in: consent, help, opt-out, ..."},
        },
    },
    "Alert": {
        "type": "object",
        "required": ["id", "patient_id", "episode_id", "checkin_id", "kind", "level",
                     "reasons", "missing", "summary", "status", "created_at",
                     "acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by",
                     "resolution_note"],
        "properties": {
            "id": {"type": "integer"},
            "patient_id": {"type": "integer"},
            "episode_id": _NULLABLE_ID,
            "checkin_id": _NULLABLE_ID,
            "kind": {"type": "string"},
            "level": {"type": "string", "enum": ALERT_LEVELS},
            "reasons": {"type": "array", "items": _ref("Reason")},
            "missing": {"type": "array", "items": {"type": "string"}},
            "summary": {"type": "string"},
            "status": {"type": "string", "enum": ALERT_STATUSES},
            "created_at": _TIME,
            "acknowledged_at": _NULLABLE_TIME,
            "acknowledged_by": {"anyOf": [_ref("Actor"), {"type": "null"}]},
            "resolved_at": _NULLABLE_TIME,
            "resolved_by": {"anyOf": [_ref("Actor"), {"type": "null"}]},
            "resolution_note": {"type": ["string", "null"],
                                "description": "Null when an info alert was resolved "
                                               "without one."},
        },
    },
    "Actor": {
        "type": "object",
        "description": "Who acted: a staff member (by email) or an API token (by its name).",
        "required": ["type", "id", "email", "name"],
        "properties": {
            "type": {"type": "string", "enum": ["staff", "api"]},
            "id": _NULLABLE_ID,
            "email": {"type": ["string", "null"],
                      "description": "The staff member's sign-in email."},
            "name": {"type": ["string", "null"],
                     "description": "The API token's name (staff accounts have no name "
                                    "field: null)."},
        },
    },
    "AlertList": {
        "type": "object",
        "required": ["data", "next_cursor", "links"],
        "properties": {
            "data": {"type": "array", "items": _ref("Alert")},
            "next_cursor": _NULLABLE_STRING,
            "links": _LIST_LINKS,
        },
    },
    "ResolveAlert": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"note": {"type": "string", "maxLength": 2000,
                                "description": "What staff did or decided: required (not "
                                               "blank) for soon, urgent and emergency "
                                               "alerts (422 otherwise), optional for info."}},
    },
    "FhirBundle": {
        "type": "object",
        "description": "A FHIR R4 Bundle (http://hl7.org/fhir/R4/bundle.html) of type "
                       "collection: the Questionnaires, then one QuestionnaireResponse per "
                       "check-in; `entry` is absent when nothing matched (FHIR forbids empty "
                       "arrays), and there is no `total` (R4 allows it on searchset and "
                       "history bundles only).",
        "required": ["resourceType", "type", "timestamp"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"const": "collection"},
            "timestamp": _TIME,
            "entry": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["fullUrl", "resource"],
                "properties": {"fullUrl": {"type": "string"},
                               "resource": {"type": "object", "required": ["resourceType"]}}}},
        },
    },
    "CheckInStarted": {
        "type": "object",
        "required": ["patient_id", "result"],
        "properties": {
            "patient_id": {"type": "integer"},
            "result": {"type": "string",
                       "enum": ["consent_requested", "continued", "intake_started",
                                "followup_started"],
                       "description": "consent_requested: consent is still pending, so the "
                                      "consent text was sent again instead of a question."},
        },
    },
    "FollowUpsChanged": {
        "type": "object",
        "required": ["patient_id", "changed", "followups"],
        "properties": {
            "patient_id": {"type": "integer"},
            "changed": {"type": "integer", "minimum": 0},
            "followups": {"type": "array", "items": _ref("FollowUp"),
                          "description": "The follow-ups still pending (scheduled, claimed "
                                         "or paused)."},
        },
    },
}

_ERROR_TEXT = {
    400: "The request is malformed (query parameter, cursor, JSON).",
    401: "No bearer token, or an unknown or revoked one.",
    403: "The token may not do this (a read-only token).",
    404: "No such resource in the token's clinic.",
    409: "The resource's state does not allow this.",
    422: "The body does not match the schema, or a value is not acceptable.",
}

_RESPONSES = {f"E{code}": _json(_ref("Error"), text) for code, text in _ERROR_TEXT.items()}
_RESPONSES["E401"]["headers"] = {
    "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}

_READ_ERRORS = (400, 401)
_PATIENT_ID = _path_id("patient_id", "patient")
_ALERT_ID = _path_id("alert_id", "alert")
_DATE = {"type": "string", "format": "date", "minLength": 10, "maxLength": 10}


def _followup_change(verb: str, description: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"{verb}_followups",
            "summary": description,
            "tags": ["follow-ups"],
            "parameters": [_PATIENT_ID],
            "responses": {"200": _json(_ref("FollowUpsChanged"), "What changed."),
                          **_errors(400, 401, 403, 404, 409)},
        }
    }


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Back-pain check-ins: clinic API",
        "version": "1.0.0",
        "description": (
            "Enroll patients, read their check-ins and advice levels, work the clinic's "
            "alerts. Authenticate with `Authorization: Bearer <token>` (`triage token create "
            "--clinic ID --name NAME`); a token sees its own clinic only. Errors are "
            "`{\"error\": {\"code\", \"message\"}}`. Lists are paged with `limit` and "
            "`cursor`; follow `links.next`. Every read of a patient's record is audited."
        ),
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "tags": [{"name": "patients"}, {"name": "alerts"}, {"name": "follow-ups"},
             {"name": "fhir"}],
    "paths": {
        "/patients": {
            "post": {
                "operationId": "enroll_patient",
                "summary": "Enroll a patient; the consent text is queued (no health question "
                           "is sent before the patient replies YES).",
                "tags": ["patients"],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("EnrollPatient")}}},
                "responses": {"201": _json(_ref("Patient"), "Enrolled."),
                              **_errors(400, 401, 403, 409, 422)},
            },
            "get": {
                "operationId": "list_patients",
                "summary": "The clinic's patients, by id.",
                "tags": ["patients"],
                "parameters": [
                    *_PAGING,
                    {"name": "phone", "in": "query", "required": False,
                     "description": "Exact number, in any usual notation.",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 40}},
                    {"name": "name", "in": "query", "required": False,
                     "description": "Part of the name, any case.",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 100}},
                ],
                "responses": {"200": _json(_ref("PatientList"), "A page of patients."),
                              **_errors(*_READ_ERRORS)},
            },
        },
        "/patients/{patient_id}": {
            "get": {
                "operationId": "get_patient",
                "summary": "One patient.",
                "tags": ["patients"],
                "parameters": [_PATIENT_ID],
                "responses": {"200": _json(_ref("Patient"), "The patient."),
                              **_errors(400, 401, 404)},
            },
            "delete": {
                "operationId": "erase_patient",
                "summary": "Erase a patient: name, number, date of birth, message texts and "
                           "answers are removed; the fact of the erasure is audited. Nothing "
                           "is sent to them again.",
                "tags": ["patients"],
                "parameters": [_PATIENT_ID],
                "responses": {"204": {"description": "Erased."},
                              **_errors(400, 401, 403, 404)},
            },
        },
        "/patients/{patient_id}/episodes": {
            "get": {
                "operationId": "list_episodes",
                "summary": "The patient's episodes with their check-ins (answers, level, "
                           "reasons, unanswered fields, messages) and follow-ups.",
                "tags": ["patients"],
                "parameters": [_PATIENT_ID],
                "responses": {"200": _json(_ref("PatientEpisodes"), "The history."),
                              **_errors(400, 401, 404)},
            },
        },
        "/patients/{patient_id}/checkins": {
            "post": {
                "operationId": "start_checkin",
                "summary": "Start a check-in now (an intake, or a follow-up of the open "
                           "episode); a running one is continued. Messages wait for quiet "
                           "hours to end.",
                "tags": ["patients"],
                "parameters": [_PATIENT_ID],
                "responses": {"202": _json(_ref("CheckInStarted"), "Queued."),
                              **_errors(400, 401, 403, 404, 409)},
            },
        },
        "/patients/{patient_id}/followups/pause": _followup_change(
            "pause", "Hold the patient's scheduled follow-ups."),
        "/patients/{patient_id}/followups/resume": _followup_change(
            "resume", "Put paused follow-ups back on the schedule (409 if opted out)."),
        "/patients/{patient_id}/followups/cancel": _followup_change(
            "cancel", "Cancel the patient's pending follow-ups."),
        "/alerts": {
            "get": {
                "operationId": "list_alerts",
                "summary": "Alerts, most pressing level first, then oldest first.",
                "tags": ["alerts"],
                "parameters": [
                    *_PAGING,
                    {"name": "status", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ALERT_STATUSES}},
                    {"name": "level", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ALERT_LEVELS}},
                    {"name": "kind", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ALERT_KINDS}},
                    {"name": "patient_id", "in": "query", "required": False,
                     "schema": dict(_ID)},
                ],
                "responses": {"200": _json(_ref("AlertList"), "A page of alerts."),
                              **_errors(*_READ_ERRORS)},
            },
        },
        "/alerts/history": {
            "get": {
                "operationId": "alert_history",
                "summary": "Resolved alerts, the most recently resolved first: who "
                           "acknowledged and resolved each (`acknowledged_by`, "
                           "`resolved_by`), when, and the note.",
                "tags": ["alerts"],
                "parameters": [
                    *_PAGING,
                    {"name": "level", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ALERT_LEVELS}},
                    {"name": "since", "in": "query", "required": False,
                     "description": "Resolved on or after this date (clinic time).",
                     "schema": dict(_DATE)},
                    {"name": "until", "in": "query", "required": False,
                     "description": "Resolved on or before this date (clinic time).",
                     "schema": dict(_DATE)},
                    {"name": "patient_id", "in": "query", "required": False,
                     "schema": dict(_ID)},
                ],
                "responses": {"200": _json(_ref("AlertList"), "A page of resolved alerts."),
                              **_errors(*_READ_ERRORS)},
            },
        },
        "/fhir/checkins": {
            "get": {
                "operationId": "export_checkins",
                "summary": "The clinic's check-ins started between two dates (inclusive, "
                           "clinic time; at most three years) as one FHIR R4 collection "
                           "Bundle: each Questionnaire answered, then one "
                           "QuestionnaireResponse per check-in. Each patient in it is "
                           "audited as read.",
                "tags": ["fhir"],
                "parameters": [
                    {"name": "start", "in": "query", "required": True, "schema": dict(_DATE)},
                    {"name": "end", "in": "query", "required": True, "schema": dict(_DATE)},
                ],
                "responses": {
                    "200": {"description": "A FHIR R4 Bundle.", "content": {
                        "application/fhir+json": {"schema": _ref("FhirBundle")}}},
                    **_errors(*_READ_ERRORS)},
            },
        },
        "/alerts/{alert_id}/acknowledge": {
            "post": {
                "operationId": "acknowledge_alert",
                "summary": "Mark an alert as seen (again: no change; resolved: 409).",
                "tags": ["alerts"],
                "parameters": [_ALERT_ID],
                "responses": {"200": _json(_ref("Alert"), "The alert."),
                              **_errors(400, 401, 403, 404, 409)},
            },
        },
        "/alerts/{alert_id}/resolve": {
            "post": {
                "operationId": "resolve_alert",
                "summary": "Resolve an alert, with a note (optional for an info alert: "
                           "`{}` resolves it). Resolving the alert of a final "
                           "follow-up check at level soon or higher closes the episode as "
                           "referred.",
                "tags": ["alerts"],
                "parameters": [_ALERT_ID],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("ResolveAlert")}}},
                "responses": {"200": _json(_ref("Alert"), "The alert."),
                              **_errors(400, 401, 403, 404, 409, 422)},
            },
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": _SCHEMAS,
        "responses": _RESPONSES,
    },
}


def document() -> dict[str, Any]:
    """A copy of the document (callers may change it)."""
    return copy.deepcopy(_DOCUMENT)


def raw() -> dict[str, Any]:
    """The document itself, for validation (do not change it)."""
    return _DOCUMENT
