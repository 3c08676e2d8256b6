"""The staff dashboard in a real browser: headless Debian Chromium driven by Playwright, against
a real HTTP server (werkzeug, in a thread) on a real PostgreSQL database, fed by real SMS
conversations through the signed /twilio/sms webhook.

Screenshots of the alert queue and of a patient page go to artifacts/screenshots/.
"""

from __future__ import annotations

import csv
import io
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from service import create_app
from service.accounts.clinics import create_clinic
from service.accounts.staff import create_staff
from service.conversations import consent
from service.store import get_db, migrate
from tests.service.sms_helpers import (
    ACCOUNT_SID,
    FOLLOWUP_CLEAR_EN,
    SELF_CARE_EN,
    followup_answers,
    intake_answers,
    new_sid,
    sign,
)

pytestmark = [pytest.mark.browser, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
AUTH_TOKEN = "browser-test-token"
CLINIC_A, CLINIC_B = "+16175550110", "+16175550120"
PASSWORD = "browser-test-password"
XSS = "<script>window.__pwned = 1</script>"


class LiveServer:
    def __init__(self, app) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join(5)

    def text(self, phone: str, clinic_number: str, body: str) -> None:
        """A patient's SMS, posted and signed as Twilio does."""
        form = {"MessageSid": new_sid(), "AccountSid": ACCOUNT_SID, "From": phone,
                "To": clinic_number, "Body": body, "NumMedia": "0", "SmsStatus": "received"}
        url = self.url + "/twilio/sms"
        request = urllib.request.Request(
            url, data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"X-Twilio-Signature": sign(url, form, AUTH_TOKEN),
                     "Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


@pytest.fixture(scope="module")
def live(postgres_server, tmp_path_factory) -> Iterator[LiveServer]:
    url = postgres_server.create_database()
    migrate.upgrade(url)
    tmp = tmp_path_factory.mktemp("browser")
    app = create_app({"ENV": "development", "DATABASE_URL": url,
                      "SECRET_KEY": "browser-test-secret",
                      "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "BROKER_DIR": str(tmp / "broker"),
                      "SPOOL_DIR": str(tmp / "spool"), "DASHBOARD_POLL_SECONDS": 0.5})
    now = datetime.now(UTC)
    with get_db(app).transaction() as session:
        a = create_clinic(session, name="Clinic A", numbers=[CLINIC_A])
        b = create_clinic(session, name="Clinic B", numbers=[CLINIC_B])
        create_staff(session, clinic_id=a.id, email="admin@a.example.org", password=PASSWORD,
                     role="admin", now=now)
        other = consent.enroll_patient(session, b, phone="+16175550199", name="B Patient",
                                        now=now)
    app.config["CLINIC_B_PATIENT"] = other.id
    with LiveServer(app) as server:
        yield server
    get_db(app).dispose()
    postgres_server.drop_database(url)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live):
    context = browser.new_context(base_url=live.url, accept_downloads=True,
                                  viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/dashboard/login")
    page.get_by_label("Email").fill("admin@a.example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/")
    yield page
    context.close()
    # A CSP violation or a script error shows up in the console.
    assert [e for e in errors if "404" not in e] == []


def test_alerts_from_sms_are_handled_and_patients_followed(page, live):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert page.locator("#alert-queue").inner_text().strip() == "No open alerts."

    # Two real conversations while the queue page stays open: an urgent intake (weight loss),
    # and an emergency (chest pain) after an unclear reply that carries a script tag.
    urgent_phone, emergency_phone = "+16175550142", "+16175550143"
    live.text(urgent_phone, CLINIC_A, "PAIN")
    for body in intake_answers({**SELF_CARE_EN, "weight_loss": "yes", "pain_score": "7"}):
        live.text(urgent_phone, CLINIC_A, body)
    live.text(emergency_phone, CLINIC_A, "PAIN")
    live.text(emergency_phone, CLINIC_A, XSS)
    live.text(emergency_phone, CLINIC_A, "yes")

    # They appear without a reload, the emergency first and standing out.
    emergency = page.locator("li.alert.level-emergency")
    emergency.wait_for()
    page.locator("li.alert.level-urgent").wait_for()
    assert page.locator("li.alert").first.get_attribute("data-level") == "emergency"
    assert "CHEST" in emergency.inner_text() and "Not answered" in emergency.inner_text()
    assert "SYSTEMIC" in page.locator("li.alert.level-urgent").inner_text()
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(SCREENSHOTS / "alert_queue.png"), full_page=True)

    # Acknowledge, then resolve with a note.
    emergency.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url("**/dashboard/")
    emergency = page.locator("li.alert.level-emergency")
    assert "acknowledged by admin@a.example.org" in emergency.inner_text()
    emergency.get_by_label("Note").fill("Called the patient: on the way to the ER.")
    emergency.get_by_role("button", name="Resolve").click()
    page.wait_for_url("**/dashboard/")
    assert page.locator("li.alert.level-emergency").count() == 0
    assert page.locator("li.alert.level-urgent").count() == 1

    # The emergency patient's page shows the script text as text.
    page.goto("/dashboard/patients?q=0143")
    page.get_by_role("link", name="(no name)").click()
    page.get_by_text(XSS).first.wait_for()
    assert page.evaluate("window.__pwned") is None

    # The urgent patient: start a follow-up from the dashboard, answer it by SMS, and see two
    # points on the pain chart.
    page.goto("/dashboard/patients?q=0142")
    page.get_by_role("link", name="(no name)").click()
    patient_url = page.url
    page.get_by_role("button", name="Start a check-in now").click()
    page.get_by_text("Follow-up check started").wait_for()
    for body in followup_answers({**FOLLOWUP_CLEAR_EN, "status": "2", "pain_score": "4"}):
        live.text(urgent_phone, CLINIC_A, body)
    page.goto(patient_url)
    chart = page.locator("svg.pain-chart")
    assert chart.locator("circle.point").count() == 2
    assert "baseline 7" in chart.text_content()
    context = page.locator("section.clinician-context").first
    assert "MRI, preferred when a tumour" in context.inner_text()
    page.set_viewport_size({"width": 1280, "height": 1500})  # the record down to the context
    page.screenshot(path=str(SCREENSHOTS / "patient_page.png"))
    page.set_viewport_size({"width": 1280, "height": 900})

    # Enroll a patient.
    page.get_by_role("link", name="Enroll", exact=True).click()
    page.get_by_label("Mobile phone").fill("(617) 555-0177")
    page.get_by_label("Name").fill("Ana Rivera")
    page.get_by_label("Date of birth").fill("1961-04-02")
    page.get_by_label("Language").select_option("es")
    page.get_by_label("The patient agreed").check()
    page.get_by_role("button", name="Enroll").click()
    page.get_by_role("heading", name="Ana Rivera").wait_for()
    assert "+16175550177" in page.locator("dl.facts").inner_text()
    assert "waiting for YES" in page.locator("dl.facts").inner_text()

    # Export the episodes of the last 30 days as CSV.
    page.get_by_role("link", name="Exports").click()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    text = Path(download.value.path()).read_text()
    table = list(csv.DictReader(io.StringIO(text)))
    assert sorted(row["intake_level"] for row in table) == ["emergency", "urgent"]

    # Another clinic's patient does not exist for this clinic's staff.
    response = page.goto(f"/dashboard/patients/{live.app.config['CLINIC_B_PATIENT']}")
    assert response.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()

    # The admin sees the views of patient records in the audit log.
    page.get_by_role("link", name="Audit log").click()
    assert page.locator("table.audit td", has_text="patient_viewed").count() >= 3
