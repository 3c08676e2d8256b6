"""A fake Twilio REST API as a real HTTP server on 127.0.0.1, for multi-process tests.

The product's `TwilioSender` (the real `twilio` client) is pointed at it with TWILIO_API_BASE.
It answers `POST /2010-04-01/Accounts/{sid}/Messages.json` and `Calls.json` as Twilio does
(basic auth, required fields, Twilio's error JSON, 201 with an SM/CA sid), lists messages
filtered by `To`/`From`/`DateSent` with Twilio's paging JSON, sends signed status callbacks,
and can be programmed to fail (429/500 for the next N requests or for T seconds) or to hang
(the message is accepted and recorded first, the answer comes late: a timed-out send that went
out anyway).

Test-only endpoints, usable from another process (the test drives a server it started as a
subprocess, or one in its own thread):

- `GET  /_fake/requests?since=N` — every request received (and its answer), from index N;
- `GET  /_fake/messages` — the messages Twilio "holds" (accepted creates), oldest first;
- `GET  /_fake/callbacks` — the status callbacks sent and how the service answered them;
- `POST /_fake/program` — JSON: `{"status": 429, "count": 5}`, `{"status": 500, "seconds": 3}`,
  `{"hang": 12, "count": 1}`, optional `"code"`, `"applies": "create" | "list" | "all"`;
  `{"clear": true}` drops the programmed faults; `{"callbacks": false}` turns callbacks off;
- `POST /_fake/reset` — forgets everything.

Run it alone: `python -m tests.fake_twilio.server --port 8765` (prints its URL).
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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from twilio.request_validator import RequestValidator

log = logging.getLogger(__name__)

ACCOUNT_SID = "AC" + "f" * 32
AUTH_TOKEN = "fake-twilio-auth-token-for-tests"
API_VERSION = "2010-04-01"
MAX_HANG_S = 120.0  # nothing in a test should wait longer than this
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/(?P<what>Messages|Calls)\.json$")


@dataclass
class Fault:
    """A programmed answer: an HTTP error, or a hang before the normal answer."""

    status: int | None = None  # answer this status (429, 500, ...) instead of the normal one
    code: int | None = None  # the Twilio error code in the error JSON
    hang: float = 0.0  # accept, record, then wait this long before answering
    count: int | None = None  # for the next N matching requests ...
    until: float | None = None  # ... or until this time.monotonic()
    applies: str = "create"  # create | list | all

    def matches(self, kind: str) -> bool:
        return self.applies == "all" or self.applies == kind

    def active(self, now: float) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        return self.until is None or now < self.until


@dataclass
class State:
    account_sid: str
    auth_token: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    callbacks_on: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeTwilioServer:
    """`start()` serves on 127.0.0.1 in background threads; `stop()` ends it (hangs cut short)."""

    def __init__(self, port: int = 0, *, account_sid: str = ACCOUNT_SID,
                 auth_token: str = AUTH_TOKEN, callback_delay: float = 0.05,
                 callback_statuses: tuple[str, ...] = ("sent", "delivered")) -> None:
        self.state = State(account_sid, auth_token)
        self.callback_delay = callback_delay
        self.callback_statuses = callback_statuses
        self._stopping = threading.Event()
        self._callbacks: queue.Queue = queue.Queue()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The API base for TWILIO_API_BASE (the `twilio` client adds /2010-04-01/...)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def account_sid(self) -> str:
        return self.state.account_sid

    @property
    def auth_token(self) -> str:
        return self.state.auth_token

    def start(self) -> FakeTwilioServer:
        for target in (lambda: self._httpd.serve_forever(poll_interval=0.05),
                       self._send_callbacks):
            thread = threading.Thread(target=target, daemon=True, name="fake-twilio")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._callbacks.put(None)
        self._httpd.shutdown()
        self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FakeTwilioServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- programming and reading (in-process; the same as the /_fake endpoints) -------------

    def program(self, *, status: int | None = None, code: int | None = None,
                hang: float = 0.0, count: int | None = None, seconds: float | None = None,
                applies: str = "create") -> None:
        if count is None and seconds is None:
            raise ValueError("say for how long: count=N requests or seconds=T")
        if applies not in ("create", "list", "all"):
            raise ValueError("applies is create, list or all")
        fault = Fault(status=status, code=code, hang=min(float(hang), MAX_HANG_S), count=count,
                      until=None if seconds is None else time.monotonic() + float(seconds),
                      applies=applies)
        with self.state.lock:
            self.state.faults.append(fault)

    def clear(self) -> None:
        with self.state.lock:
            self.state.faults.clear()

    def reset(self) -> None:
        with self.state.lock:
            for name in ("requests", "messages", "calls", "callbacks", "faults"):
                getattr(self.state, name).clear()
            self.state.callbacks_on = True

    def set_callbacks(self, on: bool) -> None:
        with self.state.lock:
            self.state.callbacks_on = on

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(r) for r in self.state.requests[since:]]

    def messages(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(m) for m in self.state.messages]

    def calls(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(c) for c in self.state.calls]

    def callbacks(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(c) for c in self.state.callbacks]

    # ---- the API ----------------------------------------------------------------------------

    def _fault_for(self, kind: str) -> Fault | None:
        now = time.monotonic()
        with self.state.lock:
            self.state.faults[:] = [f for f in self.state.faults if f.active(now)]
            for fault in self.state.faults:
                if fault.matches(kind):
                    if fault.count is not None:
                        fault.count -= 1
                    return fault
        return None

    def handle_api(self, method: str, path: str, query: dict[str, str], form: dict[str, str],
                   auth: tuple[str, str] | None, record: dict[str, Any]) -> tuple[int, dict]:
        match = _PATH.match(path)
        if match is None:
            return _error(404, 20404, "The requested resource was not found")
        if auth != (self.state.account_sid, self.state.auth_token):
            return _error(401, 20003, "Authenticate")
        if match["sid"] != self.state.account_sid:
            return _error(404, 20404, f"The requested resource {path} was not found")
        what = match["what"]
        kind = "create" if method == "POST" else "list"
        if method not in ("GET", "POST") or (method == "GET" and what == "Calls"):
            return _error(405, 20004, "Method not allowed")
        fault = self._fault_for(kind)
        if fault is not None and fault.status is not None:
            record["fault"] = f"status {fault.status}"
            return _error(fault.status, fault.code or _default_code(fault.status),
                          _default_message(fault.status))
        if method == "GET":
            return self._list(path, query)
        problem = _check_message(form) if what == "Messages" else _check_call(form)
        if problem is not None:
            return problem
        resource = (self._message if what == "Messages" else self._call)(form)
        record["sid"] = resource["sid"]
        if fault is not None and fault.hang:
            record["fault"] = f"hang {fault.hang:g}s"
            # Accepted and recorded (and its callbacks on their way) before the late answer.
            self._stopping.wait(fault.hang)
        return 201, resource

    def _message(self, form: dict[str, str]) -> dict[str, Any]:
        now = datetime.now(UTC)
        service = form.get("MessagingServiceSid")
        sid = "SM" + uuid.uuid4().hex
        stamp = format_datetime(now, usegmt=True)
        message = {
            "account_sid": self.state.account_sid, "api_version": API_VERSION,
            "body": form.get("Body", ""), "date_created": stamp, "date_sent": stamp,
            "date_updated": stamp, "direction": "outbound-api", "error_code": None,
            "error_message": None, "from": form.get("From") or None,
            "messaging_service_sid": service, "num_media": "0", "num_segments": "1",
            "price": None, "price_unit": "USD", "sid": sid,
            "status": "accepted" if service and not form.get("From") else "queued",
            "to": form["To"],
            "subresource_uris": {"media": f"/{API_VERSION}/Accounts/{self.state.account_sid}"
                                          f"/Messages/{sid}/Media.json"},
            "uri": f"/{API_VERSION}/Accounts/{self.state.account_sid}/Messages/{sid}.json",
        }  # fmt: skip
        with self.state.lock:
            self.state.messages.append({**message, "_sent_at": now.timestamp()})
        if form.get("StatusCallback"):
            self._callbacks.put(("message", form["StatusCallback"], message))
        return message

    def _call(self, form: dict[str, str]) -> dict[str, Any]:
        now = datetime.now(UTC)
        sid = "CA" + uuid.uuid4().hex
        stamp = format_datetime(now, usegmt=True)
        call = {
            "account_sid": self.state.account_sid, "api_version": API_VERSION,
            "date_created": stamp, "date_updated": stamp, "direction": "outbound-api",
            "from": form["From"], "from_formatted": form["From"], "to": form["To"],
            "to_formatted": form["To"], "sid": sid, "status": "queued", "duration": None,
            "start_time": None, "end_time": None, "price": None, "price_unit": "USD",
            "answered_by": None, "parent_call_sid": None, "phone_number_sid": None,
            "uri": f"/{API_VERSION}/Accounts/{self.state.account_sid}/Calls/{sid}.json",
            "subresource_uris": {},
        }  # fmt: skip
        with self.state.lock:
            self.state.calls.append({**call, "_url": form.get("Url"), "_twiml": form.get("Twiml"),
                                     "_sent_at": now.timestamp()})
        if form.get("StatusCallback"):
            self._callbacks.put(("call", form["StatusCallback"], call))
        return call

    def _list(self, path: str, query: dict[str, str]) -> tuple[int, dict]:
        size = max(1, min(1000, int(query.get("PageSize") or 50)))
        page = max(0, int(query.get("Page") or 0))
        with self.state.lock:
            found = [m for m in reversed(self.state.messages) if _listed(m, query)]
        chunk = found[page * size:(page + 1) * size]
        keep = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}

        def uri(n: int) -> str:
            return path + "?" + urlencode({**keep, "PageSize": size, "Page": n})

        more = (page + 1) * size < len(found)
        return 200, {
            "messages": [{k: v for k, v in m.items() if not k.startswith("_")} for m in chunk],
            "start": page * size, "end": page * size + max(len(chunk) - 1, 0),
            "page": page, "page_size": size, "uri": uri(page), "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) + f"&PageToken=PA{page + 1}" if more else None,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
        }  # fmt: skip

    # ---- status callbacks -------------------------------------------------------------------

    def _send_callbacks(self) -> None:
        validator = RequestValidator(self.state.auth_token)
        while not self._stopping.is_set():
            item = self._callbacks.get()
            if item is None:
                return
            what, url, resource = item
            if self._stopping.wait(self.callback_delay):
                return
            with self.state.lock:
                if not self.state.callbacks_on:
                    continue
            statuses = self.callback_statuses if what == "message" else ("completed",)
            for status in statuses:
                params = _callback_params(what, resource, status)
                signature = validator.compute_signature(url, params)
                request = urllib.request.Request(
                    url, data=urlencode(params).encode(), method="POST",
                    headers={"X-Twilio-Signature": signature,
                             "Content-Type": "application/x-www-form-urlencoded"})
                entry = {"sid": resource["sid"], "status": status, "url": url,
                         "at": time.time()}
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        entry["answer"] = answer.status
                except urllib.error.HTTPError as exc:
                    entry["answer"] = exc.code
                except OSError as exc:
                    entry["answer"] = None
                    entry["error"] = type(exc).__name__
                with self.state.lock:
                    self.state.callbacks.append(entry)


def _callback_params(what: str, resource: dict[str, Any], status: str) -> dict[str, str]:
    common = {"AccountSid": resource["account_sid"], "ApiVersion": API_VERSION,
              "From": resource.get("from") or "", "To": resource["to"]}
    if what == "call":
        return {**common, "CallSid": resource["sid"], "CallStatus": status,
                "Direction": "outbound-api", "CallDuration": "12"}
    return {**common, "MessageSid": resource["sid"], "SmsSid": resource["sid"],
            "MessageStatus": status, "SmsStatus": status}


def _check_message(form: dict[str, str]) -> tuple[int, dict] | None:
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


def _check_call(form: dict[str, str]) -> tuple[int, dict] | None:
    if not form.get("To"):
        return _error(400, 21201, "No 'To' number is specified")
    if not form.get("From"):
        return _error(400, 21213, "No 'From' number is specified")
    if not (form.get("Url") or form.get("Twiml") or form.get("ApplicationSid")):
        return _error(400, 21205, "Url parameter is required.")
    if not E164.match(form["To"]):
        return _error(400, 21211, f"The 'To' number {form['To']} is not a valid phone number.")
    return None


def _listed(message: dict[str, Any], query: dict[str, str]) -> bool:
    if query.get("To") and message["to"] != query["To"]:
        return False
    if query.get("From") and message["from"] != query["From"]:
        return False
    sent = datetime.fromtimestamp(message["_sent_at"], UTC)
    # The client sends `DateSent>=2026-01-01T00:00:00Z` as the parameter "DateSent>".
    for key, keep in (("DateSent>", lambda when: sent >= when),
                      ("DateSent<", lambda when: sent < when + timedelta(seconds=1)),
                      ("DateSent", lambda when: sent.date() == when.date())):
        value = query.get(key)
        if value and not keep(_when(value.lstrip("="))):
            return False
    return True


def _when(value: str) -> datetime:
    if "T" not in value:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _default_code(status: int) -> int:
    return {429: 20429, 500: 20500, 503: 20503, 400: 21604}.get(status, status)


def _default_message(status: int) -> str:
    return {429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}.get(status, "Error")


def _error(status: int, code: int, message: str) -> tuple[int, dict]:
    return status, {"code": code, "message": message,
                    "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


def _handler_for(server: FakeTwilioServer) -> type[BaseHTTPRequestHandler]:
    counter = itertools.count()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the `requests` session of the client

        def log_message(self, format, *args):  # noqa: A002 - quiet; the log is /_fake/requests
            log.debug("fake twilio: " + format, *args)

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if parts.path.startswith("/_fake/"):
                return self._control(method, parts.path, query, raw)
            form = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
            record = {"n": next(counter), "method": method, "path": parts.path, "query": query,
                      "form": form, "received_at": time.time(), "answer": None}
            with server.state.lock:
                server.state.requests.append(record)
            try:
                status, body = server.handle_api(method, parts.path, query, form,
                                                 _basic_auth(self.headers.get("Authorization")),
                                                 record)
            except Exception as exc:  # a bug in the fake must show as a 500, not a hang
                log.exception("fake twilio failed")
                status, body = _error(500, 20500, f"fake twilio bug: {exc}")
            with server.state.lock:
                record["answer"], record["answered_at"] = status, time.time()
            self._json(status, body)

        def _control(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
            if method == "GET" and path == "/_fake/requests":
                return self._json(200, {"requests": server.requests(int(query.get("since", 0)))})
            if method == "GET" and path == "/_fake/messages":
                return self._json(200, {"messages": server.messages()})
            if method == "GET" and path == "/_fake/calls":
                return self._json(200, {"calls": server.calls()})
            if method == "GET" and path == "/_fake/callbacks":
                return self._json(200, {"callbacks": server.callbacks()})
            if method == "POST" and path == "/_fake/reset":
                server.reset()
                return self._json(200, {"ok": True})
            if method == "POST" and path == "/_fake/program":
                try:
                    spec = json.loads(raw or b"{}")
                    if spec.get("clear"):
                        server.clear()
                    if "callbacks" in spec:
                        server.set_callbacks(bool(spec["callbacks"]))
                    if "status" in spec or "hang" in spec:
                        server.program(status=spec.get("status"), code=spec.get("code"),
                                       hang=spec.get("hang", 0.0), count=spec.get("count"),
                                       seconds=spec.get("seconds"),
                                       applies=spec.get("applies", "create"))
                except (ValueError, TypeError) as exc:
                    return self._json(400, {"error": str(exc)})
                return self._json(200, {"ok": True})
            return self._json(404, {"error": "unknown fake endpoint"})

        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout): Twilio would not notice either

    return Handler


class FakeTwilioClient:
    """Reads and programs a fake Twilio server from another process, over its /_fake API."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", f"/_fake/requests?since={since}")["requests"]

    def messages(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_fake/messages")["messages"]

    def callbacks(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_fake/callbacks")["callbacks"]

    def program(self, **spec: Any) -> None:
        self._call("POST", "/_fake/program", spec)

    def clear(self) -> None:
        self._call("POST", "/_fake/program", {"clear": True})

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default=ACCOUNT_SID)
    parser.add_argument("--auth-token", default=AUTH_TOKEN)
    parser.add_argument("--callback-delay", type=float, default=0.05)
    args = parser.parse_args(argv)
    server = FakeTwilioServer(args.port, account_sid=args.account_sid,
                              auth_token=args.auth_token, callback_delay=args.callback_delay)
    server.start()
    print(f"fake twilio listening on {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
