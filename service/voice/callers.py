"""Places outgoing phone calls: Twilio over REST, or a dry-run that only records (no credentials).

The calling twin of `service.messaging.senders`: the same `SendError` says whether a failure may be
retried and whether the call may have been placed after all.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from service.messaging.senders import SendError, twilio_errors

log = logging.getLogger(__name__)

# Twilio's answering machine detection. "DetectMessageEnd" (rather than "Enable") waits for
# the greeting's beep, so the short message we leave is recorded whole; a person is still
# detected at once.
MACHINE_DETECTION = "DetectMessageEnd"
RING_SECONDS = 30
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


@dataclass(frozen=True)
class PlacedCall:
    sid: str
    status: str


class Caller(Protocol):
    name: str
    base_url: str  # where Twilio fetches the call's TwiML and posts its status

    def call(self, *, to: str, from_: str, url: str, status_callback: str) -> PlacedCall: ...

    def find_placed(self, *, to: str, from_: str, since: datetime) -> str | None:
        """The SID of a call already placed to `to` since `since`, if any."""


class DryRunCaller:
    """Used without Twilio credentials or a public URL: the call is recorded, no phone rings."""

    name = "dry-run"

    def __init__(self, base_url: str = "http://localhost") -> None:
        self.base_url = base_url.rstrip("/")

    def call(self, *, to, from_, url, status_callback) -> PlacedCall:
        sid = "CA" + uuid.uuid4().hex
        log.info("dry-run call %s placed", sid)
        return PlacedCall(sid, "queued")

    def find_placed(self, *, to, from_, since) -> str | None:
        return None


class TwilioCaller:
    """Places calls through the `twilio` REST client; `http_client` lets tests fake the transport."""

    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, *, base_url: str, http_client=None,
                 timeout: float = 10.0, api_base: str | None = None) -> None:
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        self.base_url = base_url.rstrip("/")
        http_client = http_client or TwilioHttpClient(timeout=timeout)
        self.client = Client(account_sid, auth_token, http_client=http_client)
        if api_base:  # a fake Twilio server for multi-process tests
            self.client.api.base_url = api_base.rstrip("/")

    def call(self, *, to, from_, url, status_callback) -> PlacedCall:
        with twilio_errors():
            placed = self.client.calls.create(
                to=to, from_=from_, url=url, method="POST", status_callback=status_callback,
                status_callback_method="POST", status_callback_event=STATUS_EVENTS,
                machine_detection=MACHINE_DETECTION, timeout=RING_SECONDS)
        return PlacedCall(placed.sid, placed.status or "queued")

    def find_placed(self, *, to, from_, since) -> str | None:
        from twilio.base.exceptions import TwilioException

        try:
            found = self.client.calls.list(to=to, from_=from_, limit=20)
        except (TwilioException, OSError) as exc:
            raise SendError(f"could not list calls: {type(exc).__name__}", transient=True,
                            unknown=True) from None
        for placed in found:
            if placed.date_created is None or placed.date_created >= since:
                return placed.sid
        return None


def caller_from_config(config) -> Caller:
    """Twilio when credentials and PUBLIC_BASE_URL (Twilio must reach us) are set, else dry-run;
    DRY_RUN=1 always dry-run (no phone rings)."""
    sid, token = config.get("TWILIO_ACCOUNT_SID"), config.get("TWILIO_AUTH_TOKEN")
    base = config.get("PUBLIC_BASE_URL")
    if sid and token and base and not config.get("DRY_RUN"):
        return TwilioCaller(sid, token, base_url=base, api_base=config.get("TWILIO_API_BASE"))
    return DryRunCaller(base or "http://localhost")
