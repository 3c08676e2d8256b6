"""Test helpers for voice calls: a caller's phone that signs requests as Twilio does (the
signing, SIDs and account of tests.support), follows the TwiML it gets (the <Gather> action, the
<Redirect> on silence) and reads it as XML. Calls are placed on tests.support.twilio's fake."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

from tests.support.phones import PUBLIC_BASE_URL, Phone, new_sid, sign
from tests.support.twilio import ACCOUNT_SID, API_VERSION, AUTH_TOKEN

CLINIC_LINE = "+16175559000"  # the clinic's own phone line, which <Dial> connects to


class Twiml:
    """A TwiML <Response> parsed as XML."""

    def __init__(self, response) -> None:
        assert response.status_code == 200, (response.status_code, response.get_data(True))
        assert response.mimetype == "text/xml"
        self.xml = response.get_data(as_text=True)
        self.root = ET.fromstring(response.get_data())
        assert self.root.tag == "Response", self.root.tag

    @property
    def verbs(self) -> list[str]:
        return [child.tag for child in self.root]

    @property
    def gather(self) -> ET.Element | None:
        return self.root.find("Gather")

    @property
    def says(self) -> list[ET.Element]:
        return list(self.root.iter("Say"))

    @property
    def texts(self) -> list[str]:
        return [say.text or "" for say in self.says]

    @property
    def text(self) -> str:
        return " ".join(self.texts)

    @property
    def redirect(self) -> str | None:
        element = self.root.find("Redirect")
        return element.text if element is not None else None

    @property
    def dial(self) -> str | None:
        element = self.root.find("Dial")
        return element.text if element is not None else None

    @property
    def hangup(self) -> bool:
        return self.root.find("Hangup") is not None

    def step(self) -> str | None:
        """The follow-on path the <Gather> posts to: lang, answer, confirm, offer, advice."""
        if self.gather is None:
            return None
        return urlsplit(self.gather.get("action")).path.rsplit("/", 1)[-1]

    def describe(self) -> str:
        """What happens after the words, in a few characters ("answer en-US 1", "hangup")."""
        gather = self.gather
        if gather is not None:
            keys = (f"{gather.get('numDigits')} key" if gather.get("numDigits")
                    else f"ends {gather.get('finishOnKey')}")
            return f"{self.step()} {gather.get('language')} {keys}"
        if self.dial:
            return f"dial {self.dial}"
        return "hangup" if self.hangup else "continue"


class VoicePhone:
    """A patient's phone on a call with the clinic, through the signed voice webhooks."""

    def __init__(self, client, number: str, clinic_number: str, *, call_sid: str | None = None,
                 base_url: str = PUBLIC_BASE_URL, token: str = AUTH_TOKEN) -> None:
        self.client, self.number, self.clinic_number = client, number, clinic_number
        self.call_sid = call_sid or new_sid("CA")
        self.base_url, self.token = base_url, token
        self.outbound = False
        self.last: Twiml | None = None

    def form(self, **fields: str) -> dict[str, str]:
        caller, called = (self.clinic_number, self.number) if self.outbound else (
            self.number, self.clinic_number)
        form = {"CallSid": self.call_sid, "AccountSid": ACCOUNT_SID, "From": caller,
                "To": called, "CallStatus": "in-progress", "ApiVersion": API_VERSION,
                "Direction": "outbound-api" if self.outbound else "inbound"}
        form.update(fields)
        return form

    def post(self, url: str, form: Mapping[str, str], *, signature: str | None = None):
        assert url.startswith(self.base_url), url
        if signature is None:
            signature = sign(url, form, self.token)
        return self.client.post(url[len(self.base_url):], data=dict(form),
                                headers={"X-Twilio-Signature": signature})

    def _follow(self, url: str, **fields: str) -> Twiml:
        self.last = Twiml(self.post(url, self.form(**fields)))
        return self.last

    def dial(self) -> Twiml:
        """Calls the clinic's number."""
        return self._follow(f"{self.base_url}/twilio/voice")

    def pick_up(self, call_id: int, *, answered_by: str = "human") -> Twiml:
        """Answers the reminder call `call_id` placed by the service."""
        self.outbound = True
        return self._follow(f"{self.base_url}/twilio/voice?call={call_id}", AnsweredBy=answered_by)

    def _action(self) -> str:
        assert self.last is not None and self.last.gather is not None, self.last and self.last.xml
        return self.last.gather.get("action")

    def press(self, digits: str) -> Twiml:
        return self._follow(self._action(), Digits=digits)

    def say(self, words: str) -> Twiml:
        return self._follow(self._action(), SpeechResult=words, Confidence="0.91")

    def silent(self) -> Twiml:
        assert self.last is not None and self.last.redirect, self.last and self.last.xml
        return self._follow(self.last.redirect)

    def status(self, status: str, *, call_id: int | None = None, **fields: str):
        url = f"{self.base_url}/twilio/status" + (f"?call={call_id}" if call_id else "")
        return self.post(url, self.form(CallStatus=status, **fields))

    def hang_up(self, **fields: str):
        """The caller hangs up: Twilio reports the call completed."""
        response = self.status("completed", CallDuration="61", **fields)
        assert response.status_code == 204, response.get_data(as_text=True)
        return response


def text_sms(client, number: str, clinic_number: str, body: str) -> list[str]:
    """Texts the clinic through the signed SMS webhook; the reply texts."""
    return Phone(client, number, clinic_number).text(body)


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
