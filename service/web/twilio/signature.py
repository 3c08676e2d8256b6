"""Twilio's request signature: every webhook is checked against PUBLIC_BASE_URL (what Twilio
saw and signed) with TWILIO_AUTH_TOKEN; a bad or missing one gets 403."""

from __future__ import annotations

import logging

from flask import abort, current_app, request
from twilio.request_validator import RequestValidator

log = logging.getLogger(__name__)


def public_url() -> str:
    """The URL Twilio signed: behind a proxy, PUBLIC_BASE_URL says what Twilio saw."""
    base = current_app.config.get("PUBLIC_BASE_URL")
    if not base:
        return request.url
    query = request.query_string.decode()
    return base.rstrip("/") + request.path + (f"?{query}" if query else "")


def verify_signature() -> None:
    token = current_app.config.get("TWILIO_AUTH_TOKEN")
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not signature:
        abort(403, description="missing Twilio signature")
    if not RequestValidator(token).validate(public_url(), request.form.to_dict(), signature):
        log.warning("rejected a webhook with a bad signature on %s", request.path)
        abort(403, description="bad Twilio signature")


