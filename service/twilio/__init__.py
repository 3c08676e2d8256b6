"""Twilio webhooks: inbound SMS and delivery status (voice lives beside them)."""

from __future__ import annotations

from service.twilio.webhooks import bp, init_app

__all__ = ["bp", "init_app"]
