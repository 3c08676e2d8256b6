"""Bearer tokens: missing, malformed, unknown, revoked, read-only; the document is public."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from service.accounts import api_tokens
from service.store.models import ApiToken, AuditLog
from tests.web.api.conftest import API, NOW, Api, error_of

# (method, path, JSON body) of every operation; ids that exist do not matter for auth.
OPERATIONS = [
    ("post", "/patients", {"phone": "+16175550199"}),
    ("get", "/patients", None),
    ("get", "/patients/1", None),
    ("delete", "/patients/1", None),
    ("get", "/patients/1/episodes", None),
    ("post", "/patients/1/checkins", None),
    ("post", "/patients/1/followups/pause", None),
    ("post", "/patients/1/followups/resume", None),
    ("post", "/patients/1/followups/cancel", None),
    ("get", "/alerts", None),
    ("post", "/alerts/1/acknowledge", None),
    ("post", "/alerts/1/resolve", {"note": "called the patient"}),
]
WRITES = [op for op in OPERATIONS if op[0] != "get"]


def _call(api: Api, method: str, path: str, body, headers=None):
    return getattr(api, method)(path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
def test_no_token_is_401_with_a_bearer_challenge(client, method, path, body):
    response = _call(Api(client, None), method, path, body)
    error = error_of(response, 401)
    assert error["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "tri_abc",
                                    "Bearer tri_not-a-real-token", "Bearer " + "x" * 5000])
def test_malformed_or_unknown_tokens_are_401(client, clinic, make_token, header):
    make_token(clinic.id)
    response = client.get(API + "/patients", headers={"Authorization": header})
    assert error_of(response, 401)["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
def test_a_revoked_token_is_401(api, db, method, path, body):
    assert api.get("/patients").status_code == 200
    with db.transaction() as session:
        row = session.execute(sa.select(ApiToken)).scalar_one()
        api_tokens.revoke_token(session, row.id, NOW)
    response = _call(api, method, path, body)
    assert error_of(response, 401)["message"] == "the token is unknown or revoked"


def test_only_the_hash_of_a_token_is_stored(api, db):
    with db.transaction() as session:
        row = session.execute(sa.select(ApiToken)).scalar_one()
        assert row.token_hash == api_tokens.hash_token(api.token)
        assert api.token not in row.token_hash
        assert len(api.token) >= 40  # 256 random bits, base64url


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_read_only_token_may_not_write(client, clinic, make_token, method, path, body):
    api = Api(client, make_token(clinic.id, read_only=True))
    assert api.get("/patients").status_code == 200
    assert api.get("/alerts").status_code == 200
    assert error_of(_call(api, method, path, body), 403)["code"] == "forbidden"


def test_the_openapi_document_needs_no_token(client):
    response = client.get(API + "/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/patients", "/patients/{patient_id}", "/patients/{patient_id}/episodes",
        "/patients/{patient_id}/checkins", "/patients/{patient_id}/followups/pause",
        "/patients/{patient_id}/followups/resume", "/patients/{patient_id}/followups/cancel",
        "/alerts", "/alerts/history", "/alerts/{alert_id}/acknowledge",
        "/alerts/{alert_id}/resolve", "/fhir/checkins"}


def test_every_operation_of_the_document_is_served(app):
    from service.web.api.openapi import raw
    from service.web.api.validation import openapi_path

    served = {(openapi_path(rule.rule, API), method.lower())
              for rule in app.url_map.iter_rules() if rule.rule.startswith(API + "/")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in raw()["paths"].items() for method in item}
    assert documented == served - {("/openapi.json", "get")}


def test_unknown_paths_and_methods_answer_json(api):
    assert error_of(api.get("/nothing-here"), 404)["code"] == "not_found"
    response = api.client.put(API + "/patients", headers={"Authorization": f"Bearer {api.token}"})
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_head_and_options_do_not_fail(api):
    assert api.client.head(API + "/patients?limit=1",
                           headers={"Authorization": f"Bearer {api.token}"}).status_code == 200
    assert api.client.options(API + "/alerts",
                              headers={"Authorization": f"Bearer {api.token}"}).status_code == 200


def test_other_paths_keep_their_own_errors(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype != "application/json"


def test_failed_authentication_writes_no_audit_row(client, db):
    Api(client, "tri_wrong").get("/patients")
    with db.transaction() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(AuditLog)).scalar() == 0
