"""A fake Twilio REST API in-process, under the real `twilio` client: an `HttpClient` subclass
that records every request and answers like api.twilio.com (201 JSON, error JSON, timeouts)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import requests
from twilio.http import HttpClient
from twilio.http.response import Response

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "fake-twilio-auth-token"
MESSAGES_URI = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


@dataclass
class Recorded:
    method: str
    uri: str
    params: dict[str, Any]
    data: dict[str, Any]
    headers: dict[str, str]
    auth: tuple[str, str] | None


@dataclass(frozen=True)
class Fail:
    """An error answer: HTTP status and Twilio error code, as Twilio's JSON error body."""

    status: int
    code: int | None = None
    message: str = "error"


@dataclass(frozen=True)
class Timeout:
    """The request times out; `after_send` says whether Twilio had already accepted it."""

    after_send: bool


@dataclass
class FakeTwilio(HttpClient):
    """Answers POST/GET on the Messages list; `answers` are used, in order, for the next POSTs."""

    answers: list[Fail | Timeout] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)  # what Twilio holds
    list_answers: list[Fail] = field(default_factory=list)
    # Called with each accepted message before the answer returns: Twilio's status callbacks
    # can reach the service before the sender has recorded the SID.
    on_create: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        super().__init__(logger=logging.getLogger("tests.fake_twilio"), is_async=False)

    def request(self, method, uri, params=None, data=None, headers=None, auth=None,
                timeout=None, allow_redirects=False) -> Response:
        self.requests.append(Recorded(method, uri, dict(params or {}), dict(data or {}),
                                      dict(headers or {}), auth))
        if uri != MESSAGES_URI:
            return _error(Fail(404, 20404, "The requested resource was not found"))
        if method == "POST":
            return self._create(dict(data or {}))
        if method == "GET":
            if self.list_answers:
                return _error(self.list_answers.pop(0))
            return self._list(dict(params or {}))
        return _error(Fail(405, 20004, "Method not allowed"))

    @property
    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    def add_message(self, *, to: str, from_: str, body: str, sent: datetime) -> dict[str, Any]:
        """A message Twilio already holds (sent earlier, or by someone else)."""
        message = _message(to=to, from_=from_, body=body, service=None, when=sent, status="sent")
        self.messages.append(message)
        return message

    def _create(self, data: dict[str, Any]) -> Response:
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Fail):
            return _error(answer)
        if isinstance(answer, Timeout) and not answer.after_send:
            raise requests.exceptions.ConnectTimeout("connect timed out (fake)")
        if not data.get("To") or not data.get("Body"):
            return _error(Fail(400, 21604, "A 'To' phone number is required."))
        service = data.get("MessagingServiceSid")
        message = _message(to=data["To"], from_=data.get("From"), body=data["Body"],
                           service=service, when=datetime.now(UTC),
                           status="accepted" if service and not data.get("From") else "queued")
        self.messages.append(message)
        if self.on_create is not None:
            self.on_create(message)
        if isinstance(answer, Timeout):
            raise requests.exceptions.ReadTimeout("read timed out (fake)")
        return Response(201, json.dumps(message))

    def _list(self, params: dict[str, Any]) -> Response:
        found = [m for m in reversed(self.messages) if _matches(m, params)]
        page = {
            "messages": found[: int(params.get("PageSize", 50))],
            "end": max(len(found) - 1, 0), "first_page_uri": "/2010-04-01/x", "next_page_uri": None,
            "page": 0, "page_size": int(params.get("PageSize", 50)), "previous_page_uri": None,
            "start": 0, "uri": "/2010-04-01/x",
        }  # fmt: skip
        return Response(200, json.dumps(page))


def _matches(message: dict[str, Any], params: dict[str, Any]) -> bool:
    if params.get("To") and message["to"] != params["To"]:
        return False
    after = params.get("DateSent>")
    if after:
        since = datetime.strptime(after, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if parsedate_to_datetime(message["date_sent"]) < since:
            return False
    return True


def _message(*, to, from_, body, service, when: datetime, status: str) -> dict[str, Any]:
    sid = "SM" + uuid.uuid4().hex
    stamp = format_datetime(when.astimezone(UTC), usegmt=True)
    base = f"/2010-04-01/Accounts/{ACCOUNT_SID}"
    return {
        "account_sid": ACCOUNT_SID, "api_version": "2010-04-01", "body": body,
        "date_created": stamp, "date_sent": stamp, "date_updated": stamp,
        "direction": "outbound-api", "error_code": None, "error_message": None, "from": from_,
        "messaging_service_sid": service, "num_media": "0", "num_segments": "1", "price": None,
        "price_unit": "USD", "sid": sid, "status": status, "to": to,
        "subresource_uris": {"media": f"{base}/Messages/{sid}/Media.json"},
        "uri": f"{base}/Messages/{sid}.json",
    }  # fmt: skip


def _error(fail: Fail) -> Response:
    if fail.code is None:  # a gateway error: not Twilio's JSON
        return Response(fail.status, "<html><body>Service Unavailable</body></html>")
    body = {"code": fail.code, "message": fail.message,
            "more_info": f"https://www.twilio.com/docs/errors/{fail.code}", "status": fail.status}
    return Response(fail.status, json.dumps(body))
