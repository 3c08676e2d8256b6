"""Twilio webhooks: signature (every request), sms (inbound texts), voice (calls), status
(delivery and call status callbacks)."""

from __future__ import annotations

from flask import Flask

from service.web.twilio import sms, status, voice


def init_app(app: Flask) -> None:
    sms.init_app(app)
    status.init_app(app)
    voice.init_app(app)
