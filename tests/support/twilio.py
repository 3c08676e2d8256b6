"""The one fake Twilio REST API of the tests, under the real `twilio` client, reachable two ways.

`FakeTwilio` holds the state (requests, messages, calls, status callbacks, scripted faults) and
answers `POST/GET /2010-04-01/Accounts/{sid}/Messages.json` and `Calls.json` as api.twilio.com
does: basic auth, required fields, Twilio's error JSON, 201 with an SM/CA sid, lists filtered by
`To`/`From`/`DateSent` with Twilio's paging JSON, and signed status callbacks.

- In this process: `TwilioSender(ACCOUNT_SID, AUTH_TOKEN, http_client=fake.http_client())`;
  no socket, the same handler.
- Over real HTTP on 127.0.0.1, for the product running as processes: `fake.serve()` (or `with
  FakeTwilio() as fake:`), then TWILIO_API_BASE=fake.url. Another process reads and scripts it
  with `FakeTwilioClient(fake.url)`; `python -m tests.support.twilio --port N` runs it alone.

One way to script failures, the same on the fake and on a `FakeTwilioClient`, each for the
next `count` matching requests (default 1) or for `seconds`, on creates (default), lists or all:

- `fake.fail(429, count=2)`, `fake.fail(400, code=21610)`, `fake.fail(503, gateway=True)` (a
  proxy's HTML page instead of Twilio's JSON);
- `fake.timeout(before_send=True)`: the request never reached Twilio, no answer comes;
  `fake.timeout(before_send=False)`: Twilio accepted it (it is held, its callbacks go), the
  answer is lost;
- `fake.hang(12)`: accepted and held, the answer comes 12 s late (a client with a shorter
  timeout gives up: a timed-out send that went out anyway).

Test-only endpoints when served: `GET /_fake/requests?since=N`, `/_fake/messages`,
`/_fake/calls`, `/_fake/callbacks`; `POST /_fake/fail`, `/_fake/timeout`, `/_fake/hang` (JSON
of the same arguments), `/_fake/clear`, `/_fake/callbacks` (`{"on": false}`), `/_fake/reset`.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import logging
import queue
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator

log = logging.getLogger(__name__)

# The one account of every test: the fake accepts only these, and the service's webhooks in the
# tests check signatures made with the same token.
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-twilio-auth-token"

API_VERSION = "2010-04-01"
API_BASE = "https://api.twilio.com"  # what the in-process client is pointed at
MESSAGES_URL = f"{API_BASE}/{API_VERSION}/Accounts/{ACCOUNT_SID}/Messages.json"
CALLS_URL = f"{API_BASE}/{API_VERSION}/Accounts/{ACCOUNT_SID}/Calls.json"
MAX_HANG_S = 120.0  # nothing in a test should wait longer than this
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/(?P<what>Messages|Calls)\.json$")
_APPLIES = ("create", "list", "all")


@dataclass
class Fault:
    """A scripted answer for the next `count` matching requests, or until `until`."""

    kind: str  # fail | timeout | hang
    status: int | None = None  # fail: this HTTP status ...
    code: int | None = None  # ... with this Twilio error code (a default one per status)
    gateway: bool = False  # fail: a proxy's HTML page, not Twilio's error JSON
    before_send: bool = False  # timeout: the request never reached Twilio
    delay: float = 0.0  # hang: seconds before the (normal) answer
    count: int | None = None
    until: float | None = None  # time.monotonic()
    applies: str = "create"

    def matches(self, kind: str) -> bool:
        return self.applies == "all" or self.applies == kind

    def active(self, now: float) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        return self.until is None or now < self.until

    def describe(self) -> str:
        if self.kind == "fail":
            return f"status {self.status}"
        if self.kind == "hang":
            return f"hang {self.delay:g}s"
        return "timeout before send" if self.before_send else "timeout after send"


class NoAnswer(Exception):
    """The answer never comes; `before_send` says whether Twilio had not got the request."""

    def __init__(self, before_send: bool) -> None:
        super().__init__("no answer (fake timeout)")
        self.before_send = before_send


@dataclass
class Answer:
    status: int
    body: str
    delay: float = 0.0  # a hang: the answer is this late (the transport calls `answered`)
    record: dict[str, Any] | None = field(default=None, repr=False)


@dataclass
class Callback:
    """A status callback as Twilio sends it: the form and its X-Twilio-Signature."""

    url: str
    params: dict[str, str]
    signature: str
    sid: str
    status: str


Sink = Callable[[Callback], int | None]  # delivers a callback; the service's HTTP status


@dataclass
class _State:
    requests: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    callbacks_on: bool = True
    queued: bool = False  # messages wait in Twilio's queue: no date_sent yet


class FakeTwilio:
    """The fake API; thread-safe. Served over HTTP by `serve()`, in-process by `http_client()`.

    Status callbacks: when served they are POSTed to their URL from a background thread
    (`callback_delay` after the create, as Twilio does); in-process they go to the sink set by
    `callbacks_to(...)` before the create's answer returns (so one can beat the sender's own
    record of the SID), and without a sink they are only recorded (answer None)."""

    def __init__(self, *, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN,
                 callback_statuses: tuple[str, ...] = ("sent", "delivered"),
                 callback_delay: float = 0.05) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.callback_statuses = callback_statuses
        self.callback_delay = callback_delay
        self._state = _State()
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._sink: Sink | None = None
        self._server: _Server | None = None

    # ---- scripting failures ---------------------------------------------------------------

    def fail(self, status: int, *, code: int | None = None, gateway: bool = False,
             count: int | None = None, seconds: float | None = None,
             applies: str = "create") -> None:
        """Answer `status` (Twilio's error JSON with `code`, or a gateway's HTML page)."""
        self._add(Fault("fail", status=int(status), code=code, gateway=gateway),
                  count, seconds, applies)

    def timeout(self, *, before_send: bool, count: int | None = None,
                seconds: float | None = None, applies: str = "create") -> None:
        """No answer comes; with before_send=False Twilio accepted the request first."""
        self._add(Fault("timeout", before_send=bool(before_send)), count, seconds, applies)

    def hang(self, delay: float, *, count: int | None = None, seconds: float | None = None,
             applies: str = "create") -> None:
        """Accept and hold the request, then answer `delay` seconds late."""
        self._add(Fault("hang", delay=min(float(delay), MAX_HANG_S)), count, seconds, applies)

    def _add(self, fault: Fault, count: int | None, seconds: float | None, applies: str) -> None:
        if applies not in _APPLIES:
            raise ValueError("applies is create, list or all")
        if count is not None and seconds is not None:
            raise ValueError("say count=N requests or seconds=T, not both")
        fault.count = 1 if count is None and seconds is None else count
        fault.until = None if seconds is None else time.monotonic() + float(seconds)
        fault.applies = applies
        with self._lock:
            self._state.faults.append(fault)

    def clear(self) -> None:
        """Drops the scripted faults."""
        with self._lock:
            self._state.faults.clear()

    def reset(self) -> None:
        """Forgets everything: requests, messages, calls, callbacks, faults."""
        with self._lock:
            self._state = _State()

    def keep_queued(self, on: bool = True) -> None:
        """Messages created from now on stay in Twilio's queue (a Messaging Service or a
        number's throughput queue): their `date_sent` is empty, so a `DateSent` filter of the
        list leaves them out, as Twilio's does."""
        with self._lock:
            self._state.queued = on

    def set_callbacks(self, on: bool) -> None:
        with self._lock:
            self._state.callbacks_on = on

    def callbacks_to(self, client, base_url: str) -> None:
        """In-process: status callbacks are POSTed, signed, to this Flask test client (their
        URLs start with `base_url`, what Twilio sees) before the create answers."""

        def post(callback: Callback) -> int:
            assert callback.url.startswith(base_url), callback.url
            response = client.post(callback.url[len(base_url):], data=callback.params,
                                   headers={"X-Twilio-Signature": callback.signature})
            return response.status_code

        self._sink = post

    # ---- seeding and reading --------------------------------------------------------------

    def add_message(self, *, to: str, from_: str, body: str, sent: datetime) -> dict[str, Any]:
        """A message Twilio already holds (sent earlier, or by someone else)."""
        message = self._message_resource({"To": to, "From": from_, "Body": body}, when=sent,
                                         status="sent")
        with self._lock:
            self._state.messages.append({**message, "_sent_at": sent.timestamp()})
        return message

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """Every request received, oldest first: n, method, url, path, query, form, auth,
        answer (None when none came), fault, sid."""
        with self._lock:
            return [dict(r) for r in self._state.requests[since:]]

    def posts(self, to: str | None = None) -> list[dict[str, Any]]:
        """The creates received (to `to` only, if given), whatever they were answered."""
        return [r for r in self.requests() if r["method"] == "POST"
                and (to is None or r["form"].get("To") == to)]

    def lists(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["method"] == "GET"]

    def messages(self) -> list[dict[str, Any]]:
        """The messages Twilio holds (accepted creates and added ones), oldest first."""
        with self._lock:
            return [dict(m) for m in self._state.messages]

    def sent_bodies(self, to: str | None = None) -> list[str]:
        """The texts Twilio holds (to `to` only, if given), oldest first."""
        return [m["body"] for m in self.messages() if to is None or m["to"] == to]

    def calls(self) -> list[dict[str, Any]]:
        """The calls Twilio placed, oldest first (`_url`: the TwiML URL it was given)."""
        with self._lock:
            return [dict(c) for c in self._state.calls]

    def callbacks(self) -> list[dict[str, Any]]:
        """The status callbacks sent and how the service answered each."""
        with self._lock:
            return [dict(c) for c in self._state.callbacks]

    # ---- the two ways to reach it -----------------------------------------------------------

    def http_client(self, *, timeout: float | None = None) -> FakeTwilioHttpClient:
        """The `twilio` client's transport in this process."""
        return FakeTwilioHttpClient(self, timeout=timeout)

    def serve(self, port: int = 0) -> FakeTwilio:
        """Serves the API on 127.0.0.1 (background threads) until `stop()`."""
        if self._server is None:
            self._server = _Server(self, port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeTwilio:
        return self.serve()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake Twilio is not served: call serve() first")
        return self._server.port

    @property
    def url(self) -> str:
        """The API base for TWILIO_API_BASE (the `twilio` client adds /2010-04-01/...)."""
        return f"http://127.0.0.1:{self.port}"

    # ---- the API ----------------------------------------------------------------------------

    def handle(self, method: str, url: str, query: Mapping[str, Any], form: Mapping[str, Any],
               auth: tuple[str, str] | None) -> Answer:
        """The answer to one request; raises NoAnswer for a scripted timeout."""
        path = urlsplit(url).path
        record = {"n": next(self._counter), "method": method, "url": url, "path": path,
                  "query": dict(query), "form": dict(form),
                  "auth": list(auth) if auth else None, "received_at": time.time(),
                  "answer": None, "fault": None, "sid": None}
        with self._lock:
            self._state.requests.append(record)
        try:
            answer = self._answer(method, path, dict(query), dict(form), auth, record)
        except NoAnswer:
            raise
        except Exception as exc:  # a bug in the fake must show as a 500, not a hang
            log.exception("fake twilio failed")
            answer = _error(500, 20500, f"fake twilio bug: {exc}")
        answer.record = record
        if not answer.delay:
            self.answered(answer)
        return answer

    def answered(self, answer: Answer) -> None:
        """Records that `answer` went back to the client (a hang's, only once it is sent)."""
        with self._lock:
            answer.record["answer"], answer.record["answered_at"] = answer.status, time.time()

    def _answer(self, method, path, query, form, auth, record) -> Answer:
        match = _PATH.match(path)
        if match is None:
            return _error(404, 20404, "The requested resource was not found")
        if auth is None or tuple(auth) != (self.account_sid, self.auth_token):
            return _error(401, 20003, "Authenticate")
        if match["sid"] != self.account_sid:
            return _error(404, 20404, f"The requested resource {path} was not found")
        if method not in ("GET", "POST"):
            return _error(405, 20004, "Method not allowed")
        what = match["what"]
        fault = self._fault_for("create" if method == "POST" else "list")
        if fault is not None:
            with self._lock:
                record["fault"] = fault.describe()
            if fault.kind == "fail":
                return _fault_error(fault)
            if fault.kind == "timeout" and (fault.before_send or method == "GET"):
                raise NoAnswer(before_send=True)
        delay = fault.delay if fault is not None else 0.0
        if method == "GET":
            answer = self._list(path, query, "messages" if what == "Messages" else "calls")
            answer.delay = delay
            return answer
        problem = _check_message(form) if what == "Messages" else _check_call(form)
        if problem is not None:
            return problem
        resource = self._create_message(form) if what == "Messages" else self._create_call(form)
        with self._lock:
            record["sid"] = resource["sid"]
        if fault is not None and fault.kind == "timeout":
            raise NoAnswer(before_send=False)
        return Answer(201, json.dumps(resource), delay=delay)

    def _fault_for(self, kind: str) -> Fault | None:
        now = time.monotonic()
        with self._lock:
            self._state.faults[:] = [f for f in self._state.faults if f.active(now)]
            for fault in self._state.faults:
                if fault.matches(kind):
                    if fault.count is not None:
                        fault.count -= 1
                    return fault
        return None

    def _message_resource(self, form, *, when: datetime, status: str) -> dict[str, Any]:
        sid = "SM" + uuid.uuid4().hex
        stamp = format_datetime(when.astimezone(UTC), usegmt=True)
        base = f"/{API_VERSION}/Accounts/{self.account_sid}"
        return {
            "account_sid": self.account_sid, "api_version": API_VERSION,
            "body": form.get("Body", ""), "date_created": stamp, "date_sent": stamp,
            "date_updated": stamp, "direction": "outbound-api", "error_code": None,
            "error_message": None, "from": form.get("From") or None,
            "messaging_service_sid": form.get("MessagingServiceSid"), "num_media": "0",
            "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid,
            "status": status, "to": form["To"],
            "subresource_uris": {"media": f"{base}/Messages/{sid}/Media.json"},
            "uri": f"{base}/Messages/{sid}.json",
        }  # fmt: skip

    def _create_message(self, form: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC)
        service_only = form.get("MessagingServiceSid") and not form.get("From")
        message = self._message_resource(form, when=now,
                                         status="accepted" if service_only else "queued")
        with self._lock:
            if self._state.queued:
                message["date_sent"] = None
            self._state.messages.append(
                {**message, "_sent_at": None if self._state.queued else now.timestamp()})
        if form.get("StatusCallback"):
            self._send_callbacks("message", form["StatusCallback"], message)
        return message

    def _create_call(self, form: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC)
        sid = "CA" + uuid.uuid4().hex
        stamp = format_datetime(now, usegmt=True)
        call = {
            "account_sid": self.account_sid, "api_version": API_VERSION,
            "date_created": stamp, "date_updated": stamp, "direction": "outbound-api",
            "from": form["From"], "from_formatted": form["From"], "to": form["To"],
            "to_formatted": form["To"], "sid": sid, "status": "queued", "duration": None,
            "start_time": None, "end_time": None, "price": None, "price_unit": "USD",
            "answered_by": None, "parent_call_sid": None, "phone_number_sid": None,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json",
            "subresource_uris": {},
        }  # fmt: skip
        with self._lock:
            self._state.calls.append({**call, "_url": form.get("Url"), "_twiml": form.get("Twiml"),
                                      "_sent_at": now.timestamp()})
        if form.get("StatusCallback"):
            self._send_callbacks("call", form["StatusCallback"], call)
        return call

    def _list(self, path: str, query: dict[str, str], key: str) -> Answer:
        size = max(1, min(1000, int(query.get("PageSize") or 50)))
        page = max(0, int(query.get("Page") or 0))
        with self._lock:
            held = self._state.messages if key == "messages" else self._state.calls
            found = [r for r in reversed(held) if _listed(r, query)]
        chunk = found[page * size:(page + 1) * size]
        keep = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}

        def uri(n: int) -> str:
            return path + "?" + urlencode({**keep, "PageSize": size, "Page": n})

        more = (page + 1) * size < len(found)
        return Answer(200, json.dumps({
            key: [{k: v for k, v in r.items() if not k.startswith("_")} for r in chunk],
            "start": page * size, "end": page * size + max(len(chunk) - 1, 0),
            "page": page, "page_size": size, "uri": uri(page), "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) + f"&PageToken=PA{page + 1}" if more else None,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
        }))  # fmt: skip

    # ---- status callbacks -------------------------------------------------------------------

    def _send_callbacks(self, what: str, url: str, resource: dict[str, Any]) -> None:
        with self._lock:
            if not self._state.callbacks_on:
                return
        validator = RequestValidator(self.auth_token)
        statuses = self.callback_statuses if what == "message" else ("completed",)
        server = self._server
        for status in statuses:
            params = _callback_params(what, resource, status)
            callback = Callback(url, params, validator.compute_signature(url, params),
                                resource["sid"], status)
            if server is not None and self._sink is None:
                server.callbacks.put(callback)  # sent later, from the server's thread
            else:
                self.deliver(callback)

    def deliver(self, callback: Callback) -> None:
        """Sends one callback through the sink (or records it undelivered) and records it."""
        entry = {"sid": callback.sid, "status": callback.status, "url": callback.url,
                 "at": time.time(), "answer": None}
        if self._sink is None and self._server is None:
            entry["error"] = "not delivered: no sink in this process"
        else:
            try:
                entry["answer"] = (self._sink or _post_over_http)(callback)
            except OSError as exc:
                entry["error"] = type(exc).__name__
        with self._lock:
            self._state.callbacks.append(entry)


class FakeTwilioHttpClient(HttpClient):
    """The `twilio` client's transport in this process: the fake's own handler, no socket.
    A scripted timeout raises what `requests` raises (ConnectTimeout before the request
    reached Twilio, ReadTimeout after); a hang longer than `timeout` waits `timeout`, then
    raises ReadTimeout."""

    def __init__(self, fake: FakeTwilio, *, timeout: float | None = None) -> None:
        super().__init__(logging.getLogger("tests.support.twilio"), is_async=False,
                         timeout=timeout)
        self.fake = fake

    def request(self, method, uri, params=None, data=None, headers=None, auth=None,
                timeout=None, allow_redirects=False) -> Response:
        timeout = timeout if timeout is not None else self.timeout
        parts = urlsplit(uri)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        query.update({k: _text(v) for k, v in (params or {}).items()})
        form = {k: _text(v) for k, v in (data or {}).items()}
        try:
            answer = self.fake.handle(method, uri.split("?", 1)[0], query, form,
                                      tuple(auth) if auth else None)
        except NoAnswer as exc:
            if exc.before_send:
                raise requests.exceptions.ConnectTimeout("connect timed out (fake)") from None
            raise requests.exceptions.ReadTimeout("read timed out (fake)") from None
        if answer.delay:
            if timeout is not None and answer.delay >= timeout:
                time.sleep(timeout)
                raise requests.exceptions.ReadTimeout("read timed out (fake hang)")
            time.sleep(answer.delay)
            self.fake.answered(answer)
        return Response(answer.status, answer.body)


class FakeTwilioClient:
    """Reads and scripts a served fake Twilio from another process, over its /_fake API; the
    same methods as FakeTwilio."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def fail(self, status: int, **kw: Any) -> None:
        self._call("POST", "/_fake/fail", {"status": status, **kw})

    def timeout(self, *, before_send: bool, **kw: Any) -> None:
        self._call("POST", "/_fake/timeout", {"before_send": before_send, **kw})

    def hang(self, delay: float, **kw: Any) -> None:
        self._call("POST", "/_fake/hang", {"delay": delay, **kw})

    def clear(self) -> None:
        self._call("POST", "/_fake/clear", {})

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})

    def set_callbacks(self, on: bool) -> None:
        self._call("POST", "/_fake/callbacks", {"on": on})

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", f"/_fake/requests?since={since}")["requests"]

    def messages(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_fake/messages")["messages"]

    def calls(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_fake/calls")["calls"]

    def callbacks(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_fake/callbacks")["callbacks"]


# ---- serving over HTTP ----------------------------------------------------------------------


class _Server:
    """The fake's HTTP server and its callback sender, in daemon threads."""

    def __init__(self, fake: FakeTwilio, port: int) -> None:
        self.fake = fake
        self.callbacks: queue.Queue[Callback | None] = queue.Queue()
        self.stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(fake, self))
        self.httpd.daemon_threads = True
        self.threads = [threading.Thread(target=target, daemon=True, name="fake-twilio")
                        for target in (lambda: self.httpd.serve_forever(poll_interval=0.05),
                                       self._send_callbacks)]
        for thread in self.threads:
            thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def stop(self) -> None:
        self.stopping.set()
        self.callbacks.put(None)
        self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self.threads:
            thread.join(timeout=5)

    def _send_callbacks(self) -> None:
        while not self.stopping.is_set():
            callback = self.callbacks.get()
            if callback is None or self.stopping.wait(self.fake.callback_delay):
                return
            self.fake.deliver(callback)


def _post_over_http(callback: Callback) -> int | None:
    request = urllib.request.Request(
        callback.url, data=urlencode(callback.params).encode(), method="POST",
        headers={"X-Twilio-Signature": callback.signature,
                 "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


_CONTROL_FAULTS = {"fail": ("status", "code", "gateway"), "timeout": ("before_send",),
                   "hang": ("delay",)}


def _handler_for(fake: FakeTwilio, server: _Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the `requests` session of the client
        # The headers and the body go out in two writes: without TCP_NODELAY the body waits for
        # the client's delayed ACK of the headers, 40 ms on every answer (Twilio has no such
        # pause; a sender measured against the fake would be timing the fake).
        disable_nagle_algorithm = True

        def log_message(self, format, *args):  # noqa: A002 - quiet; the log is /_fake/requests
            log.debug("fake twilio: " + format, *args)

        def do_GET(self):  # noqa: N802
            self._serve("GET")

        def do_POST(self):  # noqa: N802
            self._serve("POST")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if parts.path.startswith("/_fake/"):
                return self._control(method, parts.path, query, raw)
            form = {k: v[0] if len(v) == 1 else v
                    for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
            url = f"http://127.0.0.1:{server.port}{parts.path}"
            try:
                answer = fake.handle(method, url, query, form,
                                     _basic_auth(self.headers.get("Authorization")))
            except NoAnswer:
                self.close_connection = True  # no answer at all: the client times out
                return
            if answer.delay:
                if server.stopping.wait(answer.delay):
                    return
                fake.answered(answer)  # sent, whether or not the client still waits
            self._json(answer.status, answer.body.encode(), answer.body.startswith("{"))

        def _control(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
            name = path.removeprefix("/_fake/")
            readers = {"requests": lambda: fake.requests(int(query.get("since", 0))),
                       "messages": fake.messages, "calls": fake.calls,
                       "callbacks": fake.callbacks}
            if method == "GET" and name in readers:
                return self._reply(200, {name: readers[name]()})
            if method != "POST":
                return self._reply(404, {"error": "unknown fake endpoint"})
            try:
                spec = json.loads(raw or b"{}")
                if name in _CONTROL_FAULTS:
                    getattr(fake, name)(**spec)
                elif name == "clear":
                    fake.clear()
                elif name == "reset":
                    fake.reset()
                elif name == "callbacks":
                    fake.set_callbacks(bool(spec["on"]))
                else:
                    return self._reply(404, {"error": "unknown fake endpoint"})
            except (ValueError, TypeError, KeyError) as exc:
                return self._reply(400, {"error": str(exc)})
            return self._reply(200, {"ok": True})

        def _reply(self, status: int, body: dict) -> None:
            self._json(status, json.dumps(body).encode(), True)

        def _json(self, status: int, data: bytes, is_json: bool) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if is_json else "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout): Twilio would not notice either

    return Handler


# ---- Twilio's rules and answers -------------------------------------------------------------


def _callback_params(what: str, resource: dict[str, Any], status: str) -> dict[str, str]:
    common = {"AccountSid": resource["account_sid"], "ApiVersion": API_VERSION,
              "From": resource.get("from") or "", "To": resource["to"]}
    if what == "call":
        return {**common, "CallSid": resource["sid"], "CallStatus": status,
                "Direction": "outbound-api", "CallDuration": "12"}
    return {**common, "MessageSid": resource["sid"], "SmsSid": resource["sid"],
            "MessageStatus": status, "SmsStatus": status}


def _check_message(form: dict[str, Any]) -> Answer | None:
    to = form.get("To", "")
    if not to:
        return _error(400, 21604, "A 'To' phone number is required.")
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return _error(400, 21603, "A 'From' phone number is required.")
    if not (form.get("Body") or form.get("MediaUrl") or form.get("ContentSid")):
        return _error(400, 21602, "Message body is required.")
    if not E164.match(to):
        return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    if len(form.get("Body", "")) > 1600:
        return _error(400, 21617, "The concatenated message body exceeds the 1600 character "
                                  "limit.")
    return None


def _check_call(form: dict[str, Any]) -> Answer | None:
    if not form.get("To"):
        return _error(400, 21201, "No 'To' number is specified")
    if not form.get("From"):
        return _error(400, 21213, "No 'From' number is specified")
    if not (form.get("Url") or form.get("Twiml") or form.get("ApplicationSid")):
        return _error(400, 21205, "Url parameter is required.")
    if not E164.match(form["To"]):
        return _error(400, 21211, f"The 'To' number {form['To']} is not a valid phone number.")
    return None


def _listed(resource: dict[str, Any], query: dict[str, str]) -> bool:
    if query.get("To") and resource["to"] != query["To"]:
        return False
    if query.get("From") and resource["from"] != query["From"]:
        return False
    sent = (None if resource.get("_sent_at") is None
            else datetime.fromtimestamp(resource["_sent_at"], UTC))
    # The client sends `DateSent>=2026-01-01T00:00:00Z` as the parameter "DateSent>".
    for key, keep in (("DateSent>", lambda when: sent >= when),
                      ("DateSent<", lambda when: sent < when + timedelta(seconds=1)),
                      ("DateSent", lambda when: sent.date() == when.date())):
        value = query.get(key)
        if value and (sent is None or not keep(_when(value.lstrip("=")))):
            return False  # a message still queued has no date_sent to match
    return True


def _when(value: str) -> datetime:
    if "T" not in value:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _fault_error(fault: Fault) -> Answer:
    if fault.gateway:  # a proxy in front of Twilio: not Twilio's JSON
        return Answer(fault.status, "<html><body>Service Unavailable</body></html>")
    code = fault.code or {429: 20429, 500: 20500, 503: 20503, 400: 21604,
                          401: 20003}.get(fault.status, fault.status)
    message = {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
               401: "Authenticate", 21610: "Attempt to send to unsubscribed recipient",
               21211: "Invalid 'To' Phone Number"}
    return _error(fault.status, code, message.get(code) or message.get(fault.status, "Error"))


def _error(status: int, code: int, message: str) -> Answer:
    return Answer(status, json.dumps({
        "code": code, "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}))


def _text(value: Any) -> Any:
    """A form value as it goes over the wire: text, or a list of texts for a repeated key."""
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return str(value)


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Twilio REST API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default=ACCOUNT_SID)
    parser.add_argument("--auth-token", default=AUTH_TOKEN)
    parser.add_argument("--callback-delay", type=float, default=0.05)
    args = parser.parse_args(argv)
    fake = FakeTwilio(account_sid=args.account_sid, auth_token=args.auth_token,
                      callback_delay=args.callback_delay).serve(args.port)
    print(f"fake twilio listening on {fake.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
