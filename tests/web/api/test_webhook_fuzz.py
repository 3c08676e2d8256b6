"""Fuzzing POST /twilio/sms with random form fields, signed and unsigned: the webhook never
answers 500, an unsigned or wrongly signed request always gets 403, and a signed one gets
TwiML (or 400 when MessageSid, From or To is missing)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from service.conversations import consent
from tests.web.api.conftest import NOW, Patients

AUTH_TOKEN = "fuzz-twilio-auth-token"
PUBLIC_BASE_URL = "https://triage.example.org"
URL = PUBLIC_BASE_URL + "/twilio/sms"
CLINIC_NUMBER = "+16175550400"
PATIENTS = ["+16175550401", "+16175550402", "+16175550403"]  # consent pending, mid-intake, out

# Any text, and text made of the characters that trouble storage (NUL, long, non-ASCII).
text = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=60),
                 st.text(st.sampled_from("\x00a1+ \u00e9\U0001f600\n"), max_size=80))
phone = st.one_of(st.sampled_from([*PATIENTS, CLINIC_NUMBER, "+16175550499",
                                   "(617) 555-0402", "+15551234567", ""]), text)
body = st.one_of(st.sampled_from(["YES", "no", "STOP", "start", "HELP", "PAIN", "7",
                                  "3 weeks", "not sure", "stop texting me", "ALTO", ""]),
                 text, st.text(max_size=2000))
twilio_sid = st.from_regex(r"\ASM[0-9a-f]{32}\Z")
sid = st.one_of(twilio_sid, text, st.text(min_size=60, max_size=70))
twilio_fields = st.fixed_dictionaries(
    {},
    optional={"MessageSid": sid, "SmsSid": sid, "From": phone, "To": phone, "Body": body,
              "OptOutType": st.sampled_from(["STOP", "START", "HELP", "", "x"]),
              "NumMedia": st.sampled_from(["0", "1", "-1", "x"]), "AccountSid": text})
form = st.builds(lambda known, extra: {**extra, **known}, twilio_fields,
                 st.dictionaries(text, text, max_size=4))
# Mostly well-formed: the clinic's number, a known patient, a real-looking SID (or not).
signed_form = st.builds(lambda f, to, frm, s: {**f, "To": to, "From": frm, "MessageSid": s},
                        form, st.sampled_from([CLINIC_NUMBER, "+16175550499"]),
                        st.sampled_from(PATIENTS), st.one_of(twilio_sid, twilio_sid, sid))

# No shrinking: a failure is reported as found, so a broken webhook fails in seconds, not
# minutes (shrinking against a database that keeps every earlier example's rows is slow).
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture
def sms_app(make_app, db):
    app = make_app(TWILIO_AUTH_TOKEN=AUTH_TOKEN, PUBLIC_BASE_URL=PUBLIC_BASE_URL,
                   LOG_LEVEL="WARNING")
    from service.accounts.clinics import create_clinic
    from service.store import get_db

    database = get_db(app)
    with database.transaction() as session:
        clinic = create_clinic(session, name="Fuzz Clinic", numbers=[CLINIC_NUMBER])
        for number in PATIENTS:
            consent.enroll_patient(session, clinic, phone=number, now=NOW)
    driver = Patients(database)
    driver.text(clinic, PATIENTS[1], "YES")
    driver.text(clinic, PATIENTS[2], "STOP")
    return app


def _sign(fields: dict[str, str], token: str = AUTH_TOKEN, url: str = URL) -> str:
    return RequestValidator(token).compute_signature(url, fields)


def _post(app, fields, signature: str | None):
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    return app.test_client().post("/twilio/sms", data=fields, headers=headers)


def _assert_twiml(response) -> None:
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.get_data())
    assert root.tag == "Response"
    assert all(child.tag == "Message" for child in root)


@FUZZ
@given(fields=st.one_of(form, signed_form))
def test_signed_requests_never_fail(sms_app, fields):
    response = _post(sms_app, fields, _sign(fields))
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    if response.status_code == 200:
        _assert_twiml(response)
    else:
        given_sid = fields.get("MessageSid") or fields.get("SmsSid") or ""
        assert not (fields.get("To") and fields.get("From") and given_sid) or \
            len(given_sid) > 64 or "\x00" in given_sid


@FUZZ
@given(fields=st.one_of(form, signed_form),
       how=st.sampled_from(["none", "empty", "garbage", "other_token", "other_url",
                            "tampered"]),
       garbage=text)
def test_unsigned_or_badly_signed_requests_are_always_403(sms_app, fields, how, garbage):
    signature = {
        "none": None,
        "empty": "",
        "garbage": garbage,
        "other_token": _sign(fields, token="not-the-token"),
        "other_url": _sign(fields, url="https://elsewhere.example.org/twilio/sms"),
        "tampered": _sign({**fields, "Body": fields.get("Body", "") + "!"}),
    }[how]
    response = _post(sms_app, fields, signature)
    assert response.status_code == 403


# ---- the voice and status webhooks, and the dashboard's login form --------------------------

call_sid = st.one_of(st.sampled_from(["CA" + "1" * 32, "CA" + "2" * 32]),  # calls that go on
                     st.from_regex(r"\ACA[0-9a-f]{32}\Z"), sid, st.just("CA" + "3" * 33))
voice_fields = st.fixed_dictionaries(
    {},
    optional={"CallSid": call_sid, "From": phone, "To": phone, "AccountSid": text,
              "Digits": st.one_of(st.from_regex(r"\A[0-9*#]{0,6}\Z"), text),
              "SpeechResult": body, "AnsweredBy": st.sampled_from(["human", "machine_start", "",
                                                                   "x" * 40]),
              "CallStatus": st.sampled_from(["ringing", "in-progress", "completed", "busy",
                                             "no-answer", "", "x" * 40]),
              "CallDuration": st.one_of(st.integers(-5, 10**12).map(str), text),
              "ErrorCode": st.one_of(st.integers(0, 10**12).map(str), text)})
signed_voice = st.builds(lambda f, to, frm, s: {**f, "To": to, "From": frm, "CallSid": s},
                         voice_fields, st.sampled_from([CLINIC_NUMBER, "+16175550499"]),
                         st.sampled_from(PATIENTS), call_sid)
voice_path = st.sampled_from(["", "/lang", "/answer", "/confirm", "/offer", "/advice",
                              "/silence"])
turn = st.one_of(st.integers(-1, 40).map(str), text)


def _signed_post(app, path: str, fields: dict[str, str], query: str = ""):
    url = PUBLIC_BASE_URL + path + (f"?{query}" if query else "")
    return app.test_client().post(path + (f"?{query}" if query else ""), data=fields,
                                  headers={"X-Twilio-Signature": _sign(fields, url=url)})


@FUZZ
@given(fields=st.one_of(voice_fields, signed_voice, signed_voice), path=voice_path, n=turn)
def test_signed_voice_requests_never_fail(sms_app, fields, path, n):
    from urllib.parse import urlencode

    response = _signed_post(sms_app, "/twilio/voice" + path, fields, urlencode({"n": n}))
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    if response.status_code == 200:
        root = ET.fromstring(response.get_data())
        assert root.tag == "Response"
    else:
        assert response.mimetype == "text/plain"
        # Refused only for what Twilio never sends: no CallSid, or a parameter unlike its own.
        assert not _like_twilio_voice(fields), fields


TWILIO_SID = re.compile(r"[A-Za-z]{2}[0-9A-Za-z]{1,32}")  # at most 34 characters, no NUL


def _like_twilio_voice(fields: dict[str, str]) -> bool:
    short = ("From", "To", "AnsweredBy", "Digits", "CallStatus", "CallDuration", "ErrorCode")
    return bool(fields.get("CallSid")) and all(
        TWILIO_SID.fullmatch(fields[k]) for k in ("CallSid", "AccountSid") if fields.get(k)
    ) and all(len(fields[k]) <= 32 and fields[k].isprintable() for k in short
              if fields.get(k)) and "\x00" not in fields.get("SpeechResult", "") \
        and len(fields.get("SpeechResult", "")) <= 4000


status_fields = st.fixed_dictionaries(
    {},
    optional={"MessageSid": sid, "SmsSid": sid, "To": phone, "AccountSid": text,
              "MessageStatus": st.sampled_from(["queued", "sent", "delivered", "failed",
                                                "undelivered", "", "x" * 40]),
              "SmsStatus": text, "ErrorCode": st.one_of(st.sampled_from(["30003", "30005"]),
                                                        text),
              "CallSid": call_sid, "CallStatus": st.sampled_from(["completed", "busy", ""]),
              "CallDuration": text})


@FUZZ
@given(fields=status_fields)
def test_signed_status_callbacks_never_fail(sms_app, fields):
    response = _signed_post(sms_app, "/twilio/status", fields)
    assert response.status_code in (204, 400), response.get_data(as_text=True)


login_text = st.one_of(text, st.text(st.characters(exclude_categories=("Cs",)), max_size=300))
next_target = st.one_of(st.sampled_from([
    "/dashboard/%0A//evil.example", "/dashboard/\n//evil.example", "//evil.example",
    "/dashboard//evil.example", "https://evil.example/dashboard", "/dashboard/patients",
    "/\\evil.example", "/dashboard\r\nSet-Cookie: x=1", "", "/dashboard"]), login_text)


@pytest.fixture
def login_app(make_app, db):
    from service.accounts.clinics import create_clinic
    from tests.web.dashboard.helpers import make_staff

    app = make_app(LOG_LEVEL="WARNING")
    with db.transaction() as session:
        clinic = create_clinic(session, name="Fuzz Clinic", numbers=[CLINIC_NUMBER])
    make_staff(db, clinic.id, "fuzz@a.example.org")
    return app


@settings(FUZZ, max_examples=30)  # each example hashes a password with argon2
@given(email=st.one_of(st.just("fuzz@a.example.org"), login_text),
       password=st.one_of(st.just("correct-horse-battery"), login_text),
       target=next_target, address=st.ip_addresses(v=4).map(str),
       with_token=st.sampled_from([True, True, True, False]))
def test_the_login_form_never_fails_nor_leaves_the_site(login_app, email, password, target,
                                                        address, with_token):
    from tests.web.dashboard.helpers import csrf_token

    client = login_app.test_client()
    form = {"email": email, "password": password}
    if with_token:
        form["csrf_token"] = csrf_token(client.get("/dashboard/login").get_data(as_text=True))
    response = client.post("/dashboard/login", data=form, query_string={"next": target},
                           environ_base={"REMOTE_ADDR": address})
    assert response.status_code in (302, 400, 401, 429), response.status_code
    if response.status_code == 302:
        location = response.headers["Location"]
        assert location.startswith("/dashboard") and "//" not in location
        assert location.isprintable() and " " not in location
    elif response.status_code == 400:
        assert not with_token
