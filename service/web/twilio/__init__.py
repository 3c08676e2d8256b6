"""Twilio webhooks: signature (every request), sms (inbound texts), voice (calls), status
(delivery and call status callbacks)."""

from __future__ import annotations

from flask import Flask

from flows.loader import load_all
from service.web.twilio import sms, status, voice


def init_app(app: Flask) -> None:
    # The flows and texts are read and validated now, in each web process as it starts, not by
    # its first webhook: under load that took seconds, with a patient's row locked meanwhile.
    load_all()
    sms.init_app(app)
    status.init_app(app)
    voice.init_app(app)
