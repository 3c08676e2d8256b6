"""Twilio webhooks: inbound SMS and delivery status (voice lives beside them)."""

from __future__ import annotations

from flask import Flask

from service.web.twilio import voice, webhooks
from service.web.twilio.webhooks import bp

__all__ = ["bp", "init_app"]


def init_app(app: Flask) -> None:
    webhooks.init_app(app)
    voice.init_app(app)
