"""Twilio's request signature: every webhook is checked against PUBLIC_BASE_URL (what Twilio
saw and signed) with TWILIO_AUTH_TOKEN; a bad or missing one gets 403.

Twilio signs the URL it was given. A webhook URL on the number may end in connection overrides
(`#rc=3&rp=all`: retries, timeouts) that never reach us, since a fragment is not sent; whether
Twilio's signature covers them is not documented, so with TWILIO_URL_OVERRIDES set a signature
of the URL with that fragment is accepted as well as one without. Twilio's own validator tries
each with and without the port (https://host/... and https://host:443/...)."""

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
    validator, url, form = RequestValidator(token), public_url(), request.form.to_dict()
    overrides = current_app.config.get("TWILIO_URL_OVERRIDES")
    if not (validator.validate(url, form, signature)
            or (overrides and validator.validate(f"{url}#{overrides}", form, signature))):
        log.warning("rejected a webhook with a bad signature on %s", request.path)
        abort(403, description="bad Twilio signature")


