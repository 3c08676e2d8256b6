"""The one sender interface: Twilio over REST, or a dry-run that only records (no credentials)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from service.config import ConfigError

log = logging.getLogger(__name__)

# Twilio error codes that will never succeed on retry.
OPTED_OUT = 21610  # the recipient replied STOP
INVALID_NUMBERS = {21211, 21614}  # not a valid number / not a mobile number
TRANSIENT_HTTP = {429, 500, 502, 503, 504}
# A gateway's answer (a proxy on the way, or Twilio's edge in front of its API) does not say
# whether the API behind it created the message: looked up before any resend.
GATEWAY_HTTP = {502, 504}


@dataclass(frozen=True)
class SendResult:
    sid: str
    status: str


class SendError(Exception):
    """A send that failed. `transient` ones may be retried; `unknown` ones may have gone out."""

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None,
                 transient: bool = False, unknown: bool = False):
        super().__init__(message)
        self.code, self.http_status = code, http_status
        self.transient, self.unknown = transient, unknown


class Sender(Protocol):
    name: str
    messaging_service_sid: str | None  # set: texts without a From go through this service

    def send(self, *, to: str, from_: str | None, body: str,
             status_callback: str | None) -> SendResult: ...

    def find_sent(self, *, to: str, from_: str | None, body: str, since: datetime,
                  taken: Collection[str] = ()) -> str | None:
        """The SID of a message already sent with this body since `since`, if any, other than
        those in `taken` (the SIDs of texts already recorded: the same words sent before,
        such as a question asked again, are not this one)."""


@contextmanager
def twilio_errors():
    """Turns what the `twilio` client raises into SendError: an HTTP answer is transient or
    permanent by status; anything else may have reached Twilio, so its result is unknown."""
    from twilio.base.exceptions import TwilioException, TwilioRestException

    try:
        yield
    except TwilioRestException as exc:
        raise SendError(f"twilio {exc.status} code={exc.code}", code=exc.code,
                        http_status=exc.status, transient=exc.status in TRANSIENT_HTTP,
                        unknown=exc.status in GATEWAY_HTTP) from None
    except TwilioException as exc:  # the request may have reached Twilio: look before resending
        raise SendError(f"twilio request failed: {type(exc).__name__}", transient=True,
                        unknown=True) from None
    except (OSError, TimeoutError) as exc:
        raise SendError(f"connection error: {type(exc).__name__}", transient=True,
                        unknown=True) from None


class DryRunSender:
    """Used when no Twilio credentials are set (development) or DRY_RUN=1: messages are
    recorded, nothing leaves. On a laptop they are shown as delivered (the simulator is the
    phone); in production a message that never left must not look delivered to anyone, so it
    keeps the status NOT_SENT."""

    name = "dry-run"
    NOT_SENT = "not_sent"
    messaging_service_sid = None

    def __init__(self, *, production: bool = False) -> None:
        self.status = self.NOT_SENT if production else "delivered"

    def send(self, *, to, from_, body, status_callback) -> SendResult:
        sid = "DR" + uuid.uuid4().hex
        log.info("dry-run send %s (%d chars) %s", sid, len(body), self.status)
        return SendResult(sid, self.status)

    def find_sent(self, *, to, from_, body, since, taken=()) -> str | None:
        return None  # a dry-run send is recorded in the same transaction as its result


class TwilioSender:
    """Sends through the `twilio` REST client; `http_client` lets tests fake the transport."""

    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, *, from_number: str | None = None,
                 messaging_service_sid: str | None = None, http_client=None,
                 timeout: float = 10.0, api_base: str | None = None):
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        self.from_number, self.messaging_service_sid = from_number, messaging_service_sid
        if http_client is None:
            http_client = TwilioHttpClient(timeout=timeout)
            _settle_environment(http_client.session, api_base or "https://api.twilio.com")
        self.client = Client(account_sid, auth_token, http_client=http_client)
        if api_base:  # a fake Twilio server for multi-process tests
            self.client.api.base_url = api_base.rstrip("/")

    def send(self, *, to, from_, body, status_callback) -> SendResult:
        kwargs = {"to": to, "body": body}
        if self.messaging_service_sid and not from_:
            kwargs["messaging_service_sid"] = self.messaging_service_sid
        else:
            kwargs["from_"] = from_ or self.from_number
        if status_callback:
            kwargs["status_callback"] = status_callback
        with twilio_errors():
            msg = self.client.messages.create(**kwargs)
        return SendResult(msg.sid, msg.status or "queued")

    def find_sent(self, *, to, from_, body, since, taken=()) -> str | None:
        from twilio.base.exceptions import TwilioException

        # By creation time, not DateSent: a message still in Twilio's queue (a Messaging
        # Service's, or a number's at its throughput) has no date_sent yet, and the list's
        # DateSent filter would leave out the very message looked for. One patient gets few
        # texts: their 50 newest cover the window.
        try:
            found = self.client.messages.list(to=to, limit=50)
        except (TwilioException, OSError) as exc:
            raise SendError(f"could not list messages: {type(exc).__name__}", transient=True,
                            unknown=True) from None
        for msg in found:
            if msg.body == body and (not from_ or msg.from_ == from_) and msg.sid not in taken \
                    and msg.date_created is not None and msg.date_created >= since:
                return msg.sid
        return None


def _settle_environment(session, url: str) -> None:
    """Reads the proxy and CA settings of the environment (HTTPS_PROXY, NO_PROXY,
    REQUESTS_CA_BUNDLE ...) once for Twilio's host instead of on every request: `requests`
    scans the whole environment per request, which was 2 ms of CPU per text."""
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.trust_env = False
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]


def sender_from_config(config) -> Sender:
    """DRY_RUN=1: the dry-run sender, whatever else is set. Production otherwise always sends
    through Twilio (service.config refuses to start without its credentials; a config that
    lacks them anyway is refused here rather than silently dry-run). Development: Twilio with
    both credentials, else the dry-run sender."""
    production = config.get("ENV") == "production"
    if config.get("DRY_RUN"):
        return DryRunSender(production=production)
    sid, token = config.get("TWILIO_ACCOUNT_SID"), config.get("TWILIO_AUTH_TOKEN")
    if production and not (sid and token):
        raise ConfigError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set when "
                          "ENV=production (or DRY_RUN=1)")
    if sid and token:
        return TwilioSender(sid, token, from_number=config.get("TWILIO_FROM_NUMBER"),
                            messaging_service_sid=config.get("TWILIO_MESSAGING_SERVICE_SID"),
                            api_base=config.get("TWILIO_API_BASE"))
    return DryRunSender()
