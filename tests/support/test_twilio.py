"""The one fake Twilio answers the real `twilio` client (through the product's TwilioSender) as
api.twilio.com does, the same in this process and over HTTP: auth, required fields, SIDs, the
message and call lists, scripted failures, signed status callbacks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from service.messaging.senders import SendError, TwilioSender
from service.voice.callers import TwilioCaller
from tests.support.phones import PUBLIC_BASE_URL, WEBHOOK_CONFIG, Phone
from tests.support.twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    MESSAGES_URL,
    FakeTwilio,
    FakeTwilioClient,
)

PATIENT = "+16175550123"
CLINIC = "+16175550199"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake():
    with FakeTwilio(callback_delay=0.0) as served:
        yield served


@pytest.fixture(params=["in-process", "http"])
def reach(request):
    """The two ways to the same fake: its in-process transport, or its HTTP server."""
    return request.param


def sender(fake: FakeTwilio, reach: str = "http", **kw) -> TwilioSender:
    kw.setdefault("timeout", 5.0)
    token = kw.pop("token", fake.auth_token)
    if reach == "in-process":
        return TwilioSender(fake.account_sid, token, from_number=CLINIC,
                            http_client=fake.http_client(timeout=kw.pop("timeout")), **kw)
    return TwilioSender(fake.account_sid, token, from_number=CLINIC, api_base=fake.url, **kw)


def raw_post(fake: FakeTwilio, what: str, form: dict, auth=(ACCOUNT_SID, AUTH_TOKEN)):
    """POSTs like Twilio's client would, without the client's own argument checks."""
    import base64

    request = urllib.request.Request(
        f"{fake.url}/2010-04-01/Accounts/{ACCOUNT_SID}/{what}.json",
        data=urlencode(form).encode(), method="POST",
        headers={"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode(),
                 "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_send_is_accepted_recorded_and_listed(fake, reach):
    result = sender(fake, reach).send(to=PATIENT, from_=None, body="How is your back?",
                               status_callback=None)
    assert result.sid.startswith("SM") and len(result.sid) == 34
    assert result.status == "queued"
    (request,) = fake.requests()
    assert request["method"] == "POST" and request["answer"] == 201
    assert request["path"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request["url"] == (MESSAGES_URL if reach == "in-process"
                              else fake.url + request["path"])
    assert request["auth"] == [ACCOUNT_SID, AUTH_TOKEN]
    assert request["form"] == {"To": PATIENT, "From": CLINIC, "Body": "How is your back?"}
    (message,) = fake.messages()
    assert (message["sid"], message["to"], message["from"]) == (result.sid, PATIENT, CLINIC)


def test_a_wrong_token_gets_401_which_is_not_retried(fake, reach):
    with pytest.raises(SendError) as caught:
        sender(fake, reach, token="not-the-token").send(to=PATIENT, from_=None, body="hi",
                                                 status_callback=None)
    assert caught.value.http_status == 401 and caught.value.code == 20003
    assert not caught.value.transient
    assert fake.messages() == []


@pytest.mark.parametrize(("form", "code"), [
    ({"From": CLINIC, "Body": "hi"}, 21604),
    ({"To": PATIENT, "Body": "hi"}, 21603),
    ({"To": PATIENT, "From": CLINIC}, 21602),
    ({"To": "12345", "From": CLINIC, "Body": "hi"}, 21211),
])
def test_missing_or_bad_fields_get_twilio_error_json(fake, form, code):
    status, body = raw_post(fake, "Messages", form)
    assert status == 400
    assert body["code"] == code and body["status"] == 400 and body["message"]
    assert fake.messages() == []


def test_a_messaging_service_sid_stands_in_for_from(fake):
    status, body = raw_post(fake, "Messages", {"To": PATIENT, "Body": "hi",
                                               "MessagingServiceSid": "MG" + "0" * 32})
    assert status == 201 and body["status"] == "accepted" and body["from"] is None


def test_bad_basic_auth_on_raw_requests(fake):
    status, body = raw_post(fake, "Messages", {"To": PATIENT, "From": CLINIC, "Body": "x"},
                            auth=(ACCOUNT_SID, "wrong"))
    assert (status, body["code"]) == (401, 20003)


def test_calls_are_accepted_with_a_url_and_rejected_without(fake, reach):
    client = sender(fake, reach).client
    call = client.calls.create(to=PATIENT, from_=CLINIC, url="https://example.org/twiml")
    assert call.sid.startswith("CA") and call.status == "queued"
    with pytest.raises(TwilioRestException) as caught:
        client.calls.create(to=PATIENT, from_=CLINIC)
    assert (caught.value.status, caught.value.code) == (400, 21205)
    assert [c["sid"] for c in fake.calls()] == [call.sid]
    assert fake.calls()[0]["_url"] == "https://example.org/twiml"


def test_placed_calls_are_listed_for_the_look_before_a_second_call(fake, reach):
    """The product's TwilioCaller finds a call it placed (an unknown result) in Twilio's list."""
    caller = TwilioCaller(fake.account_sid, fake.auth_token, base_url=PUBLIC_BASE_URL,
                          **({"http_client": fake.http_client(timeout=5)} if reach == "in-process"
                             else {"api_base": fake.url, "timeout": 5}))
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert caller.find_placed(to=PATIENT, from_=CLINIC, since=since) is None
    placed = caller.call(to=PATIENT, from_=CLINIC, url=PUBLIC_BASE_URL + "/twilio/voice?call=1",
                         status_callback=None)
    caller.call(to="+16175550124", from_=CLINIC, url=PUBLIC_BASE_URL + "/twilio/voice?call=2",
                status_callback=None)
    assert caller.find_placed(to=PATIENT, from_=CLINIC, since=since) == placed.sid
    assert caller.find_placed(to=PATIENT, from_="+16175550100", since=since) is None
    (create, *_) = fake.posts()
    assert create["form"]["MachineDetection"] == "DetectMessageEnd"
    assert create["form"]["StatusCallbackEvent"] == ["initiated", "ringing", "answered",
                                                     "completed"]


def test_429_for_the_next_n_requests_then_201(fake, reach):
    fake.fail(429, count=2)
    s = sender(fake, reach)
    for _ in range(2):
        with pytest.raises(SendError) as caught:
            s.send(to=PATIENT, from_=None, body="hi", status_callback=None)
        assert caught.value.transient and not caught.value.unknown
        assert (caught.value.http_status, caught.value.code) == (429, 20429)
    assert s.send(to=PATIENT, from_=None, body="hi", status_callback=None).sid.startswith("SM")
    assert [r["answer"] for r in fake.requests()] == [429, 429, 201]
    assert len(fake.messages()) == 1
    s.send(to="+16175550124", from_=None, body="other", status_callback=None)
    assert [len(fake.posts()), len(fake.posts(to=PATIENT))] == [4, 3]
    assert (fake.sent_bodies(), fake.sent_bodies(to=PATIENT)) == (["hi", "other"], ["hi"])


def test_500_for_a_while_then_201(fake, reach):
    fake.fail(500, seconds=0.4)
    s = sender(fake, reach)
    with pytest.raises(SendError) as caught:
        s.send(to=PATIENT, from_=None, body="hi", status_callback=None)
    assert caught.value.http_status == 500 and caught.value.transient
    time.sleep(0.5)
    assert s.send(to=PATIENT, from_=None, body="hi", status_callback=None).sid
    assert [r["answer"] for r in fake.requests()] == [500, 201]


def test_a_programmed_permanent_error_code(fake, reach):
    fake.fail(400, code=21610)
    s = sender(fake, reach)
    with pytest.raises(SendError) as caught:
        s.send(to=PATIENT, from_=None, body="hi", status_callback=None)
    assert caught.value.code == 21610 and not caught.value.transient
    assert s.send(to=PATIENT, from_=None, body="hi", status_callback=None).sid  # once only


def test_a_gateway_error_page_is_not_twilio_json(fake, reach):
    fake.fail(503, gateway=True)
    with pytest.raises(SendError) as caught:
        sender(fake, reach).send(to=PATIENT, from_=None, body="hi", status_callback=None)
    assert (caught.value.code, caught.value.http_status) == (503, 503)
    assert caught.value.transient and not caught.value.unknown


@pytest.mark.parametrize("before_send", [True, False], ids=["never-arrived", "answer-lost"])
def test_a_timeout_is_an_unknown_result_and_twilio_holds_what_arrived(fake, reach, before_send):
    fake.timeout(before_send=before_send)
    s = sender(fake, reach)
    since = datetime.now(UTC) - timedelta(minutes=1)
    with pytest.raises(SendError) as caught:
        s.send(to=PATIENT, from_=None, body="Any numbness?", status_callback=None)
    assert caught.value.transient and caught.value.unknown
    (request,) = fake.requests()
    assert request["answer"] is None
    assert len(fake.messages()) == (0 if before_send else 1)
    found = s.find_sent(to=PATIENT, from_=CLINIC, body="Any numbness?", since=since)
    assert (found is None) == before_send
    assert s.send(to=PATIENT, from_=None, body="next", status_callback=None).sid  # once only


def test_a_hang_past_the_client_timeout_went_out_and_is_found_in_the_list(fake, reach):
    """The send times out (result unknown), but Twilio had it: find_sent finds it, no resend."""
    fake.hang(3)
    s = sender(fake, reach, timeout=0.5)
    since = datetime.now(UTC) - timedelta(minutes=1)
    started = time.monotonic()
    with pytest.raises(SendError) as caught:
        s.send(to=PATIENT, from_=None, body="Any numbness?", status_callback=None)
    assert time.monotonic() - started < 2.5
    assert caught.value.transient and caught.value.unknown
    (message,) = fake.messages()
    assert fake.requests()[0]["answer"] is None  # still hanging when the client gave up
    assert s.find_sent(to=PATIENT, from_=CLINIC, body="Any numbness?", since=since) == \
        message["sid"]
    assert s.find_sent(to=PATIENT, from_=CLINIC, body="Something else", since=since) is None


def test_the_message_list_filters_by_to_and_date_and_pages(fake, reach):
    s = sender(fake, reach)
    for n in range(7):
        s.send(to=PATIENT, from_=None, body=f"text {n}", status_callback=None)
    s.send(to="+16175550124", from_=None, body="someone else", status_callback=None)
    listed = s.client.messages.list(to=PATIENT, page_size=3)
    assert [m.body for m in listed] == [f"text {n}" for n in reversed(range(7))]  # newest first
    gets = [r for r in fake.requests() if r["method"] == "GET"]
    assert len(gets) == 3 and gets[1]["query"]["Page"] == "1"
    future = datetime.now(UTC) + timedelta(minutes=5)
    assert s.client.messages.list(to=PATIENT, date_sent_after=future) == []
    past = datetime.now(UTC) - timedelta(minutes=5)
    assert len(s.client.messages.list(to=PATIENT, date_sent_after=past, limit=50)) == 7
    assert "DateSent>" in fake.requests()[-1]["query"]


def test_a_queued_message_has_no_date_sent_and_a_date_sent_filter_leaves_it_out(fake, reach):
    s = sender(fake, reach)
    fake.keep_queued()
    s.send(to=PATIENT, from_=None, body="waiting", status_callback=None)
    past = datetime.now(UTC) - timedelta(minutes=5)
    assert s.client.messages.list(to=PATIENT, date_sent_after=past) == []
    (listed,) = s.client.messages.list(to=PATIENT)
    assert listed.date_sent is None and listed.date_created >= past
    assert s.find_sent(to=PATIENT, from_=CLINIC, body="waiting", since=past) == listed.sid


def test_faults_can_apply_to_the_list_only(fake, reach):
    s = sender(fake, reach)
    s.send(to=PATIENT, from_=None, body="hi", status_callback=None)
    fake.fail(503, applies="list")
    with pytest.raises(SendError) as caught:
        s.find_sent(to=PATIENT, from_=CLINIC, body="hi", since=datetime.now(UTC) - timedelta(1))
    assert caught.value.unknown
    assert s.find_sent(to=PATIENT, from_=CLINIC, body="hi",
                       since=datetime.now(UTC) - timedelta(1))


class _Receiver:
    """A tiny webhook receiver that checks X-Twilio-Signature the way the product does."""

    def __init__(self) -> None:
        self.received: list[tuple[dict, bool]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
                url = f"http://127.0.0.1:{receiver.port}{self.path}"
                ok = RequestValidator(AUTH_TOKEN).validate(
                    url, form, self.headers.get("X-Twilio-Signature", ""))
                receiver.received.append((form, ok))
                self.send_response(204 if ok else 403)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_status_callbacks_are_signed_and_follow_the_send(fake):
    with _Receiver() as receiver:
        url = f"http://127.0.0.1:{receiver.port}/twilio/status"
        result = sender(fake).send(to=PATIENT, from_=None, body="hi", status_callback=url)
        deadline = time.monotonic() + 5
        while len(fake.callbacks()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert [(f["MessageSid"], f["MessageStatus"], ok) for f, ok in receiver.received] == [
        (result.sid, "sent", True), (result.sid, "delivered", True)]
    assert [c["answer"] for c in fake.callbacks()] == [204, 204]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_runs_as_its_own_process_and_is_driven_over_http():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.twilio", "--port",
                             str(port)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert "listening on" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        remote = FakeTwilioClient(url)
        remote.fail(429)
        s = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, from_number=CLINIC, api_base=url, timeout=5)
        with pytest.raises(SendError):
            s.send(to=PATIENT, from_=None, body="hi", status_callback=None)
        sid = s.send(to=PATIENT, from_=None, body="hi", status_callback=None).sid
        assert [r["answer"] for r in remote.requests()] == [429, 201]
        assert [m["sid"] for m in remote.messages()] == [sid]
        remote.reset()
        assert remote.requests() == []
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        proc.stdout.close()


@pytest.fixture
def app_config(app_config, database_url):
    # database_url is named so that its SQLite and PostgreSQL params reach this override.
    return {**app_config, **WEBHOOK_CONFIG}


def test_in_process_callbacks_reach_the_service_signed_before_the_send_returns(client):
    """Without a socket, the callbacks go to the Flask test client: the service's signature
    check accepts them (a bad signature would get 403)."""
    fake = FakeTwilio()
    fake.callbacks_to(client, PUBLIC_BASE_URL)
    s = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, from_number=CLINIC, http_client=fake.http_client())
    result = s.send(to=PATIENT, from_=None, body="hi",
                    status_callback=PUBLIC_BASE_URL + "/twilio/status")
    assert [(c["sid"], c["status"], c["answer"]) for c in fake.callbacks()] == [
        (result.sid, "sent", 204), (result.sid, "delivered", 204)]


def test_in_process_callbacks_without_a_sink_are_recorded_not_sent():
    fake = FakeTwilio()
    s = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, from_number=CLINIC, http_client=fake.http_client())
    s.send(to=PATIENT, from_=None, body="hi", status_callback=PUBLIC_BASE_URL + "/twilio/status")
    assert [c["answer"] for c in fake.callbacks()] == [None, None]
    fake.set_callbacks(False)
    s.send(to=PATIENT, from_=None, body="hi", status_callback=PUBLIC_BASE_URL + "/twilio/status")
    assert len(fake.callbacks()) == 2


def test_a_phone_signs_for_a_live_url_as_twilio_does():
    with _Receiver() as receiver:
        url = f"http://127.0.0.1:{receiver.port}"
        phone = Phone(url, PATIENT, CLINIC, base_url=url)
        assert phone.status("SM" + "1" * 32, "delivered").status_code == 204
        forged = Phone(url, PATIENT, CLINIC, base_url="https://elsewhere.example")
        assert forged.status("SM" + "1" * 32, "delivered").status_code == 403
    assert [(form["MessageStatus"], ok) for form, ok in receiver.received] == [
        ("delivered", True), ("delivered", False)]


def test_every_scripted_failure_can_be_set_from_another_process(fake):
    remote = FakeTwilioClient(fake.url)
    remote.timeout(before_send=False)
    remote.hang(0.2)
    remote.fail(400, code=21211)
    s = sender(fake, timeout=2)
    with pytest.raises(SendError):
        s.send(to=PATIENT, from_=None, body="hi", status_callback=None)
    started = time.monotonic()
    assert s.send(to=PATIENT, from_=None, body="hi", status_callback=None).sid  # late
    assert time.monotonic() - started >= 0.2
    with pytest.raises(SendError):
        s.send(to=PATIENT, from_=None, body="hi", status_callback=None)
    assert [(r["answer"], r["fault"]) for r in remote.requests()] == [
        (None, "timeout after send"), (201, "hang 0.2s"), (400, "status 400")]
    assert len(remote.messages()) == 2
    with pytest.raises(urllib.error.HTTPError) as caught:
        remote.fail(429, applies="nowhere")
    assert caught.value.code == 400
    remote.set_callbacks(False)
    remote.fail(500, count=5)
    remote.clear()
    assert s.send(to=PATIENT, from_=None, body="hi", status_callback=None).sid
