"""A fake Twilio REST API for the real `twilio` client: an `HttpClient` subclass for in-process
workers, and the same behaviour behind a small HTTP server for worker subprocesses.

Each POST to Messages.json takes the next scripted answer (default 201): 201, 429, 500,
("error", code) for a 400 with a Twilio error code, "timeout" (the request never arrived) or
"timeout_after" (Twilio created the message, the answer was lost). GET Messages.json lists the
created messages for a `To`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from twilio.http import HttpClient
from twilio.http.response import Response

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "fake-twilio-auth-token"


class FakeTwilioApi:
    """The state and behaviour of the fake API (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests: list[dict] = []  # method, path, params, data, at (time.time())
            self.created: list[dict] = []
            self.script: deque = deque()

    def answer(self, *answers) -> None:
        """Scripts the next POST answers, in order; afterwards every POST gets 201."""
        with self.lock:
            self.script.extend(answers)

    def posts(self, to: str | None = None) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["method"] == "POST"
                    and (to is None or r["data"].get("To") == to)]

    def lists(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["method"] == "GET"]

    def sent_bodies(self, to: str | None = None) -> list[str]:
        with self.lock:
            return [m["body"] for m in self.created if to is None or m["to"] == to]

    def handle(self, method: str, path: str, params: dict, data: dict) -> tuple[int, str]:
        """(status, JSON text); raises TimeoutError for the timeout answers."""
        with self.lock:
            self.requests.append({"method": method, "path": path, "params": dict(params),
                                  "data": dict(data), "at": time.time()})
            if not path.endswith("/Messages.json"):
                return 404, json.dumps({"code": 20404, "message": "not found", "status": 404})
            if method == "GET":
                found = [m for m in self.created if m["to"] == params.get("To")]
                return 200, json.dumps({"messages": found, "next_page_uri": None, "page": 0,
                                        "page_size": 50, "uri": path})
            action = self.script.popleft() if self.script else 201
            if action == "timeout":
                raise TimeoutError("read timed out")
            if action in (201, "timeout_after"):
                message = {"sid": "SM" + uuid.uuid4().hex, "status": "queued",
                           "to": data.get("To"), "from": data.get("From"),
                           "body": data.get("Body"), "account_sid": ACCOUNT_SID,
                           "messaging_service_sid": data.get("MessagingServiceSid"),
                           "date_created": None, "date_sent": None, "date_updated": None,
                           "direction": "outbound-api", "num_segments": "1"}
                self.created.append(message)
                if action == "timeout_after":
                    raise TimeoutError("read timed out")
                return 201, json.dumps(message)
            if isinstance(action, tuple):
                _, code = action
                return 400, json.dumps({"code": code, "message": f"error {code}",
                                        "more_info": f"https://www.twilio.com/docs/errors/{code}",
                                        "status": 400})
            return action, json.dumps({"code": 20000 + action, "message": f"HTTP {action}",
                                       "status": action})


class FakeTwilioHttpClient(HttpClient):
    """The `twilio` client's transport, answering from a FakeTwilioApi in this process."""

    def __init__(self, api: FakeTwilioApi) -> None:
        import logging

        super().__init__(logging.getLogger("tests.fake_twilio"), is_async=False, timeout=None)
        self.api = api

    def request(self, method, uri, params=None, data=None, headers=None, auth=None,
                timeout=None, allow_redirects=False):
        status, text = self.api.handle(method, urlparse(uri).path, dict(params or {}),
                                       {k: v for k, v in (data or {}).items()})
        return Response(status, text)


class FakeTwilioServer:
    """The fake API over HTTP on 127.0.0.1 (for workers in other processes: TWILIO_API_BASE).
    A "timeout" answer closes the connection without a reply."""

    def __init__(self, api: FakeTwilioApi) -> None:
        self.api = api
        fake = api

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method):
                parsed = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                data = {k: v[0] for k, v in parse_qs(body).items()}
                try:
                    status, text = fake.handle(method, parsed.path, params, data)
                except TimeoutError:
                    self.close_connection = True
                    return
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeTwilioServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
