"""A patient's phone as Twilio's webhooks bring it to the service: forms signed with
`RequestValidator.compute_signature` on what Twilio sees (PUBLIC_BASE_URL), posted to a Flask
test client or to a live URL, and the TwiML reply read as XML."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

import requests
from twilio.request_validator import RequestValidator

from tests.support.twilio import ACCOUNT_SID, API_VERSION, AUTH_TOKEN

# What Twilio sees; the test client talks to http://localhost, as an app behind a proxy does.
PUBLIC_BASE_URL = "https://triage.example.org"
# The app settings under which the webhooks accept what these phones sign.
WEBHOOK_CONFIG = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "PUBLIC_BASE_URL": PUBLIC_BASE_URL}


def new_sid(prefix: str = "SM") -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + uuid.uuid4().hex


def sign(url: str, form: Mapping[str, str], token: str = AUTH_TOKEN) -> str:
    """The X-Twilio-Signature Twilio sends with `form` posted to `url`."""
    return RequestValidator(token).compute_signature(url, dict(form))


def body_of(response) -> bytes:
    """The body of a Flask test response or of a `requests` response."""
    return response.get_data() if hasattr(response, "get_data") else response.content


def mimetype_of(response) -> str:
    if hasattr(response, "mimetype"):
        return response.mimetype
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip()


def twiml_messages(response) -> list[str]:
    """The texts of a TwiML <Response> of <Message>s; fails on anything else."""
    text = body_of(response).decode(errors="replace")
    assert response.status_code == 200, (response.status_code, text)
    assert mimetype_of(response) == "text/xml", mimetype_of(response)
    root = ET.fromstring(body_of(response))
    assert root.tag == "Response", root.tag
    texts = []
    for child in root:
        assert child.tag == "Message", ET.tostring(root)
        assert len(child) == 0, ET.tostring(child)  # plain text, no <Media> or <Body> children
        texts.append(child.text or "")
    return texts


class Phone:
    """A patient's phone texting a clinic's Twilio number through the signed webhooks.

    `client` is a Flask test client, or the URL of a live service (e.g. gunicorn on
    127.0.0.1); `base_url` is what Twilio sees, the URL the signature is computed on."""

    def __init__(self, client, number: str, clinic_number: str, *,
                 base_url: str = PUBLIC_BASE_URL, token: str = AUTH_TOKEN,
                 timeout: float = 15.0) -> None:
        self.client, self.number, self.clinic_number = client, number, clinic_number
        self.base_url, self.token, self.timeout = base_url, token, timeout
        self.last_sid: str | None = None

    def form(self, body: str | None, *, sid: str | None = None, **fields: str) -> dict[str, str]:
        form = {
            "MessageSid": sid or new_sid(), "AccountSid": ACCOUNT_SID, "From": self.number,
            "To": self.clinic_number, "NumMedia": "0", "NumSegments": "1",
            "SmsStatus": "received", "ApiVersion": API_VERSION,
        }
        if body is not None:
            form["Body"] = body
        form.update(fields)
        return form

    def post(self, form: Mapping[str, str], *, path: str = "/twilio/sms",
             signature: str | None = None, headers: Mapping[str, str] | None = None) -> Any:
        """POSTs `form` to `path`, signed (or with `signature`); the raw response."""
        if signature is None:
            signature = sign(self.base_url + path, form, self.token)
        sent_headers = {"X-Twilio-Signature": signature, **(headers or {})}
        if isinstance(self.client, str):  # a live service
            return requests.post(self.client.rstrip("/") + path, data=dict(form),
                                 headers=sent_headers, timeout=self.timeout)
        return self.client.post(path, data=dict(form), headers=sent_headers)

    def send(self, body: str | None, *, sid: str | None = None, **fields: str):
        """Posts one inbound text; returns the raw response."""
        form = self.form(body, sid=sid, **fields)
        self.last_sid = form["MessageSid"]
        return self.post(form)

    def text(self, body: str | None, *, sid: str | None = None, **fields: str) -> list[str]:
        """Texts the clinic; returns the reply texts."""
        return twiml_messages(self.send(body, sid=sid, **fields))

    def conversation(self, bodies: Sequence[str]) -> list[list[str]]:
        return [self.text(body) for body in bodies]

    def status(self, message_sid: str, status: str, error_code: str | int | None = None):
        """Twilio's status callback for a message the clinic sent this phone."""
        form = {"MessageSid": message_sid, "MessageStatus": status, "AccountSid": ACCOUNT_SID,
                "To": self.number, "From": self.clinic_number, "ApiVersion": API_VERSION}
        if error_code:
            form["ErrorCode"] = str(error_code)
        return self.post(form, path="/twilio/status")
