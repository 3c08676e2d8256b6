"""The staff side against bad input and its own links, from a review (2026-12-03): the
on-call text's link opens the alert; the bulk FHIR Bundle is valid R4; ids, dates, cursors,
query parameters and NULs that no row can match are 4xx, never 500; a second acknowledgement
is audited as the read it is. Each of these failed before its fix.

The API's and the dashboard's fixtures are imported from their modules, so pytest's fixture
arguments shadow the imported names (F811)."""
# ruff: noqa: F811

from __future__ import annotations

import base64
import json

import pytest
import sqlalchemy as sa

from service.followups.oncall import alert_link
from service.store.models import Alert, AuditLog
from tests.support.db import rows
from tests.web.api.conftest import (  # noqa: F401  (fixtures)
    NOW,
    Api,
    api,
    clinic,
    enroll,
    error_of,
    make_token,
    patients,
)
from tests.web.dashboard.test_dashboard import (  # noqa: F401  (fixtures)
    admin_a,
    admin_web,
    app,
    clinic_a,
    emergency_by_sms,
    staff_a,
    web,
)

HUGE = "99999999999999999999"  # Flask's <int:> takes it; neither database does


def _cursor(values: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


# ---- 1. the on-call page's link goes nowhere ------------------------------------------------

def test_the_oncall_text_link_opens_the_alert_for_signed_in_staff(client, web, db):
    """followups/oncall.py texts https://.../dashboard/alerts/<id> for every emergency/urgent
    alert; the dashboard has no such GET route, so the on-call clinician gets a 404."""
    emergency_by_sms(client)
    (alert,) = rows(db, Alert)
    path = alert_link("http://localhost", alert.id).removeprefix("http://localhost")
    response = web.get(path)
    assert response.status_code in (200, 302), (path, response.status_code)
    if response.status_code == 302:
        assert response.headers["Location"].startswith("/dashboard/patients/")


# ---- 2. FHIR: a collection Bundle may not carry `total` (R4 invariant bdl-1) ----------------

def test_the_bulk_fhir_export_is_a_valid_r4_collection_bundle(api, enroll):
    bundle = json.loads(api.get("/fhir/checkins?start=2026-03-01&end=2026-03-03").get_data())
    assert bundle["type"] == "collection"
    # bdl-1: total.empty() or (type = 'searchset') or (type = 'history')
    assert "total" not in bundle, bundle


# ---- 3. API: malformed input gets a 500 ------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/alerts/history?until=9999-12-31",                       # end + 1 day overflows
    "/fhir/checkins?start=9999-12-31&end=9999-12-31",         # day_bounds overflows
    "/alerts?cursor=" + _cursor({"rank": 0, "created_at": "0001-01-01T00:00:00+14:00", "id": 1}),
    "/alerts?cursor=" + _cursor({"rank": 0, "created_at": "9999-12-31T23:59:59-14:00", "id": 1}),
    "/alerts/history?cursor=" + _cursor({"resolved_at": "0001-01-01T00:00:00+14:00", "id": 1}),
])
def test_api_out_of_range_dates_are_400_not_500(api, path):
    error_of(api.get(path), 400)


@pytest.mark.parametrize("extra", ["endpoint=x", "_method=POST"])
def test_an_unknown_query_parameter_on_a_paged_list_is_not_a_500(api, enroll, extra):
    """_page() passes every query argument to url_for(): 'endpoint' -> TypeError,
    '_method' -> BuildError (and '_scheme=javascript' rewrites links.next)."""
    enroll(), enroll()
    response = api.get(f"/patients?limit=1&{extra}")
    assert response.status_code in (200, 400), response.status_code


# ---- 4. dashboard: malformed input gets a 500 ------------------------------------------------

@pytest.mark.parametrize("path", [
    f"/dashboard/patients/{HUGE}",
    f"/dashboard/checkins/{HUGE}/fhir.json",
    f"/dashboard/alerts/history?patient={HUGE}",
    "/dashboard/alerts/history?end=9999-12-31",
    "/dashboard/alerts/history?before_at=0001-01-01T00:00:00%2B14:00&before_id=1",
    "/dashboard/exports/episodes.csv?start=9999-12-31&end=9999-12-31",
    "/dashboard/exports/checkins.fhir.json?start=9999-12-31&end=9999-12-31",
])
def test_dashboard_bad_ids_and_dates_are_not_500(web, path):
    assert web.get(path).status_code < 500, path


@pytest.mark.parametrize("path", [f"/dashboard/alerts/{HUGE}/acknowledge",
                                  f"/dashboard/alerts/{HUGE}/resolve",
                                  f"/dashboard/patients/{HUGE}/checkin",
                                  f"/dashboard/patients/{HUGE}/followups/pause"])
def test_dashboard_actions_on_a_huge_id_are_404(web, path):
    assert web.post(path, {"note": "x"}).status_code == 404, path


@pytest.mark.parametrize("path", [f"/dashboard/admin/audit?before={HUGE}",
                                  f"/dashboard/admin/audit?patient={HUGE}"])
def test_the_audit_page_with_a_huge_number_is_not_500(admin_web, path):
    assert admin_web.get(path).status_code < 500, path


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("path", ["/dashboard/patients?q=ab%00c",
                                  "/dashboard/alerts/history?q=ab%00c"])
def test_a_nul_in_a_dashboard_search_is_not_500(web, path, database_url):
    assert web.get(path).status_code < 500, path


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_nul_in_a_dashboard_form_is_not_500(client, web, db, database_url):
    emergency_by_sms(client)
    (alert,) = rows(db, Alert)
    note = web.post(f"/dashboard/alerts/{alert.id}/resolve", {"note": "called\x00her"})
    name = web.post("/dashboard/patients/new", {"phone": "+16175550188", "name": "A\x00B",
                                                "consent": "yes"})
    assert (note.status_code < 500, name.status_code < 500) == (True, True)


# ---- 5. audit: a read that writes no audit row ----------------------------------------------

def test_acknowledging_again_returns_the_alert_and_is_audited(api, db, clinic, enroll,
                                                              patients):
    from tests.web.api.conftest import SOON_NIGHT_PAIN
    patient = enroll()
    patients.complete_intake(clinic, patient["phone"], SOON_NIGHT_PAIN)
    (alert,) = rows(db, Alert)
    assert api.post(f"/alerts/{alert.id}/acknowledge").status_code == 200
    with db.transaction() as session:
        before = session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
    again = api.post(f"/alerts/{alert.id}/acknowledge")
    assert again.status_code == 200 and "reasons" in again.get_json()  # patient data shown
    with db.transaction() as session:
        after = session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
    assert after > before, "the second response showed the alert but wrote no audit row"
