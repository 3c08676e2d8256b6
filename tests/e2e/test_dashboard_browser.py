"""The staff dashboard in a real browser: headless Debian Chromium driven by Playwright, against
a real HTTP server (werkzeug, in a thread) on a real PostgreSQL database, fed by real SMS
conversations through the signed /twilio/sms webhook.

axe-core (from npm, tests/e2e/package.json) checks every page state for WCAG 2.1 A and AA; a
serious or critical violation fails the test. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from werkzeug.serving import make_server

from service import create_app
from service.accounts.clinics import create_clinic
from service.accounts.staff import create_staff
from service.conversations import consent
from service.store import get_db, migrate
from service.web.dashboard.forms import timezones
from tests.e2e.harness import RedisServer, Stack
from tests.e2e.npm_tools import AXE_JS, npm_tool
from tests.support.answers import FOLLOWUP_CLEAR_EN, SELF_CARE_EN, followup_answers, intake_answers
from tests.support.phones import new_sid, sign
from tests.support.twilio import ACCOUNT_SID
from tests.web.api.fhir_check import validate_fhir

pytestmark = [pytest.mark.browser, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
AUTH_TOKEN = "browser-test-token"
CLINIC_A, CLINIC_B = "+16175550110", "+16175550120"
PASSWORD = "browser-test-password"
XSS = "<script>window.__pwned = 1</script>"
NEWS = "My back feels a little better today."


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
    # A real worker on a private Redis: what the dashboard asks to send goes out at once.
    broker = RedisServer(tmp).start()
    stack = Stack(database_url=url, redis=broker, fake_url="", account_sid="", auth_token="",
                  log_dir=tmp)  # no Twilio credentials: the worker's dry-run sender
    stack.worker("browser", concurrency=1)
    app = create_app({"ENV": "development", "DATABASE_URL": url,
                      "SECRET_KEY": "browser-test-secret", "REDIS_URL": broker.url,
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
    try:
        with LiveServer(app) as server:
            yield server
    finally:
        stack.stop()
        broker.stop()
        get_db(app).dispose()
        postgres_server.drop_database(url)


@pytest.fixture(scope="module")
def axe_script() -> Path:
    """axe-core, installed from the npm registry by its lock file when it is not there yet."""
    return npm_tool(AXE_JS)


def assert_accessible(page, state: str) -> None:
    """axe-core on the page as it is now: no serious or critical WCAG 2.1 A/AA violation."""
    found = page.evaluate("""async (tags) => {
        const result = await axe.run(document, {runOnly: {type: "tag", values: tags},
                                                resultTypes: ["violations"]});
        return result.violations
          .filter((v) => v.impact === "serious" || v.impact === "critical")
          .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 5).map(
                          (n) => n.target.join(" ") + " :: " + (n.failureSummary || ""))}));
    }""", WCAG_AA)
    assert found == [], f"axe on {state}:\n{json.dumps(found, indent=1)}"


def daytime_zone() -> str:
    """A timezone of the enrolment form's list where it is early afternoon now."""
    now = datetime.now(UTC)
    return next(zone for zone in timezones()
                if 12 <= now.astimezone(ZoneInfo(zone)).hour <= 15)


def tab_to(page, target, *, limit: int = 120) -> None:
    """Presses Tab until `target` has the focus, as a keyboard user gets there."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("(el) => el === document.activeElement"):
            return
    raise AssertionError(f"{target} is not reachable with Tab")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def new_context(browser, live, axe_script):
    context = browser.new_context(base_url=live.url, accept_downloads=True,
                                  viewport={"width": 1280, "height": 900})
    # An init script runs outside the page's Content-Security-Policy, which allows no inline
    # script: axe is there on every page without loosening the policy under test.
    context.add_init_script(path=str(axe_script))
    return context


@pytest.fixture
def page(browser, live, axe_script):
    context = new_context(browser, live, axe_script)
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    # Nothing the pages load fails (the favicon included), except what the test does on
    # purpose: visit another clinic's patient (404), send the enrolment form with mistakes (400).
    expected = {(404, f"/dashboard/patients/{live.app.config['CLINIC_B_PATIENT']}"),
                (400, "/dashboard/patients/new")}
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400
            and (r.status, urllib.parse.urlsplit(r.url).path) not in expected else None)
    page.goto("/dashboard/login")
    page.get_by_label("Email").fill("admin@a.example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/")
    yield page
    context.close()
    # A CSP violation or a script error shows up in the console (failed loads are above).
    assert [e for e in errors if not e.startswith("Failed to load resource")] == []
    assert failed == []


def test_a_nurses_shift_by_keyboard_and_mouse(page, live):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert page.locator("#alert-queue").inner_text().strip() == "No open alerts."
    assert_accessible(page, "the empty queue")

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
    # The number to call is on the card, in full, with the patient's local time and zone.
    call = emergency.get_by_role("link", name="Call +1 617 555 0143")
    assert call.get_attribute("href") == f"tel:{emergency_phone}"
    assert "America/New_York" in emergency.locator(".local-time").inner_text()
    assert page.locator("li.alert.level-urgent a[href^='tel:']").get_attribute("href") == \
        f"tel:{urgent_phone}"
    page.screenshot(path=str(SCREENSHOTS / "alert_queue.png"), full_page=True)
    assert_accessible(page, "the queue with an emergency and an urgent alert")

    # Work the queue by keyboard: Tab to Acknowledge, Enter; Tab to the note, type, Enter.
    tab_to(page, emergency.get_by_role("button", name="Acknowledge"))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    emergency = page.locator("li.alert.level-emergency")
    assert "acknowledged by admin@a.example.org" in emergency.inner_text()
    tab_to(page, emergency.get_by_label("Note"))
    page.keyboard.type("Called the patient: on the way to the ER.")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator("li.alert.level-emergency").count() == 0
    assert page.locator("li.alert.level-urgent").count() == 1

    # A text out of the blue from the emergency patient: an info alert (and an early
    # check-in), resolved in one click, no note.
    live.text(emergency_phone, CLINIC_A, NEWS)
    info = page.locator("li.alert.level-info")
    info.wait_for()
    assert NEWS in info.inner_text()
    with page.expect_navigation():
        info.get_by_role("button", name="Resolve").click()
    assert page.locator("li.alert.level-info").count() == 0
    assert page.get_by_text("resolved.").first.is_visible()

    # The history: what was resolved, by whom, when, and the note.
    page.get_by_role("link", name="History").click()
    history = page.locator("table.history tbody tr")
    assert history.count() == 2
    assert "INFO" in history.nth(0).inner_text() and "(no note)" in history.nth(0).inner_text()
    assert "Called the patient: on the way to the ER." in history.nth(1).inner_text()
    assert "admin@a.example.org" in history.nth(1).inner_text()
    page.get_by_label("Level").select_option("emergency")
    page.get_by_role("button", name="Show").click()
    assert page.locator("table.history tbody tr").count() == 1
    page.screenshot(path=str(SCREENSHOTS / "alert_history.png"), full_page=True)
    assert_accessible(page, "the alert history")

    # The emergency patient's page (named by the masked number: they texted in) shows the
    # script text as text.
    page.goto("/dashboard/patients?q=0143")
    page.get_by_role("link", name="+1******0143").first.click()
    # Their text started a follow-up: the intake is the second group, collapsed; open it.
    page.locator("details.checkin-group", has_text="Intake check-in (SMS)").locator(
        "summary").click()
    page.get_by_text(XSS).first.wait_for()
    assert page.evaluate("window.__pwned") is None

    # The urgent patient: start a follow-up from the dashboard, answer it by SMS, and see two
    # points on the pain chart and a timeline of two check-ins, the latest open.
    page.goto("/dashboard/patients?q=0142")
    page.get_by_role("link", name="+1******0142").first.click()
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
    assert "America/New_York" in page.locator("dl.facts").inner_text()
    groups = page.locator("details.checkin-group")
    assert groups.count() == 3  # the follow-up, the intake, and what was outside both
    assert groups.nth(0).get_attribute("open") is not None
    assert groups.nth(1).get_attribute("open") is None
    assert "Follow-up check-in" in groups.nth(0).locator("summary").inner_text()
    assert "URGENT" in groups.nth(1).locator("summary").inner_text()  # the badge
    assert not groups.nth(1).locator("ol.timeline").is_visible()  # collapsed until opened
    print("patient page height, the latest check-in open:",
          page.evaluate("document.documentElement.scrollHeight"))
    groups.nth(1).locator("summary").click()
    assert groups.nth(1).get_by_text("Intake check-in completed: Urgent").is_visible()
    page.set_viewport_size({"width": 1280, "height": 1500})  # the record down to the context
    page.screenshot(path=str(SCREENSHOTS / "patient_page.png"))
    page.set_viewport_size({"width": 1280, "height": 900})
    assert_accessible(page, "a patient page with two check-ins")

    # Enroll a patient: first with mistakes, then right.
    page.get_by_role("link", name="Enroll", exact=True).click()
    page.get_by_label("Mobile phone").fill("(617) 555-0177")
    page.get_by_label("Name").fill("Ana Rivera")
    page.get_by_label("Date of birth").fill("04/02/1961")
    page.get_by_role("button", name="Enroll").click()
    assert page.get_by_text("use the form YYYY-MM-DD").is_visible()
    assert page.get_by_text("the patient must agree to receive texts").is_visible()
    assert page.get_by_label("Date of birth").get_attribute("aria-invalid") == "true"
    consent_box = page.get_by_label("The patient agreed").bounding_box()
    consent_words = page.get_by_text("The patient agreed").bounding_box()
    assert abs(consent_box["y"] - consent_words["y"]) < 20  # the box sits by its words
    page.screenshot(path=str(SCREENSHOTS / "enroll_errors.png"), full_page=True)
    assert_accessible(page, "the enrolment form with errors")
    page.get_by_label("Date of birth").fill("1961-04-02")
    page.get_by_label("Language").select_option("es")
    zone = daytime_zone()  # where texts may go now (quiet hours would hold the consent text)
    page.get_by_label("Timezone").select_option(zone)
    page.get_by_label("The patient agreed").check()
    enrolled_at = time.monotonic()
    page.get_by_role("button", name="Enroll").click()
    page.get_by_role("heading", name="Ana Rivera").wait_for()
    assert "going out now" in page.locator("p.flash").inner_text()
    assert "+16175550177" in page.locator("dl.facts").inner_text()
    assert "waiting for YES" in page.locator("dl.facts").inner_text()
    assert zone in page.locator("dl.facts").inner_text()
    assert page.get_by_role("button", name="Pause follow-ups").count() == 0  # none pending
    # The consent text goes at once (the worker is woken), not at the next beat: there is no
    # beat here at all.
    sent = page.locator("li.entry-message_out", has_text="Responda SÍ para empezar")
    for _ in range(40):
        if sent.count():
            break
        page.wait_for_timeout(250)
        page.reload()
    assert sent.count() == 1, "the consent text was not sent"
    print(f"consent text sent {time.monotonic() - enrolled_at:.1f} s after Enroll")

    # Export the episodes of the last 30 days as CSV.
    page.get_by_role("link", name="Exports").click()
    assert_accessible(page, "the exports page")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    text = Path(download.value.path()).read_text()
    table = list(csv.DictReader(io.StringIO(text)))
    assert sorted(row["intake_level"] for row in table) == ["emergency", "urgent"]
    # ... and their check-ins as one FHIR Bundle, valid for an independent validator.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download FHIR Bundle").click()
    bundle = json.loads(Path(download.value.path()).read_text())
    validate_fhir(bundle)
    responses = [e for e in bundle["entry"]
                 if e["resource"]["resourceType"] == "QuestionnaireResponse"]
    assert len(responses) == 4  # two intakes, two follow-ups (one begun by NEWS)

    # Another clinic's patient does not exist for this clinic's staff.
    response = page.goto(f"/dashboard/patients/{live.app.config['CLINIC_B_PATIENT']}")
    assert response.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()

    # The admin sees the views of patient records in the audit log, and the shown numbers.
    page.get_by_role("link", name="Audit log").click()
    assert page.locator("table.audit td", has_text="patient_viewed").count() >= 3
    assert page.locator("table.audit td", has_text="patient_phone_shown").count() >= 2
    assert_accessible(page, "the audit log")


def test_sign_in_and_simulator_pages_meet_wcag_aa(browser, live, axe_script):
    context = new_context(browser, live, axe_script)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto("/dashboard/login")
        assert_accessible(page, "the sign-in page")
        page.get_by_label("Email").fill("admin@a.example.org")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        assert_accessible(page, "the sign-in page with an error")

        page.goto("/simulator/")
        assert page.get_by_role("heading", level=1).inner_text() == "Patient phone simulator"
        page.get_by_label("Your number").fill("+16175550188")
        page.get_by_label("Message").fill("PAIN")
        page.get_by_role("button", name="Send").click()
        page.locator("#thread li.in").first.wait_for()
        page.locator("#thread li.out").first.wait_for()
        page.screenshot(path=str(SCREENSHOTS / "simulator.png"), full_page=True)
        assert_accessible(page, "the simulator with a conversation")
    finally:
        context.close()
