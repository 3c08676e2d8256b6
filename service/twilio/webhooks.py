"""POST /twilio/sms and /twilio/status: verify the signature, call the use case, answer TwiML."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, abort, current_app, request
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from service import checkins, delivery
from service.logging import mask_phone
from service.spool import Spool
from service.store import get_db

log = logging.getLogger(__name__)
bp = Blueprint("twilio", __name__, url_prefix="/twilio")

DB_UNAVAILABLE = (OperationalError, InterfaceError)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.extensions["spool"] = Spool(redis_url=app.config.get("REDIS_URL"),
                                    spool_dir=app.config["SPOOL_DIR"])


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


def twiml(texts: list[str]) -> Response:
    resp = MessagingResponse()
    for text in texts:
        resp.message(text)
    return Response(str(resp), mimetype="text/xml")


def status_callback_url(app: Flask) -> str | None:
    base = app.config.get("PUBLIC_BASE_URL")
    return base.rstrip("/") + "/twilio/status" if base else None


def run_inbound(db, *, to, from_, body, sid, now, opt_out_type=None, attempts: int = 3):
    """The inbound use case in its own transaction; a lost race on a unique key is retried."""
    for attempt in range(attempts):
        try:
            with db.transaction() as session:
                return checkins.handle_inbound_sms(session, to=to, from_=from_, body=body,
                                                   sid=sid, now=now, opt_out_type=opt_out_type)
        except IntegrityError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))


@bp.post("/sms")
def sms():
    verify_signature()
    form = request.form
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    to, from_ = form.get("To", ""), form.get("From", "")
    if not sid or not to or not from_:
        return Response("MessageSid, From and To are required", status=400,
                        mimetype="text/plain")
    body = form.get("Body", "")
    now = datetime.now(UTC)
    try:
        result = run_inbound(get_db(), to=to, from_=from_, body=body, sid=sid, now=now,
                             opt_out_type=form.get("OptOutType"))
    except DB_UNAVAILABLE as exc:
        where = current_app.extensions["spool"].push(
            {"sid": sid, "to": to, "from": from_, "body": body,
             "opt_out_type": form.get("OptOutType"), "received_at": now.isoformat()})
        log.error("database unavailable (%s): inbound %s spooled to %s", type(exc).__name__,
                  sid, where)
        return twiml([checkins.text_for_holding()])
    log.info("inbound sms %s from %s: %d repl%s%s", sid, mask_phone(from_), len(result.replies),
             "y" if len(result.replies) == 1 else "ies",
             f" ({result.reason})" if result.reason else "")
    return twiml(result.replies)


@bp.post("/status")
def status():
    verify_signature()
    form = request.form
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    state = form.get("MessageStatus") or form.get("SmsStatus") or ""
    if not sid or not state:
        return Response("MessageSid and MessageStatus are required", status=400,
                        mimetype="text/plain")
    code = form.get("ErrorCode")
    try:
        error_code = int(code) if code else None
    except ValueError:
        error_code = None
    with get_db().transaction() as session:
        delivery.record_status(session, sid=sid, status=state, error_code=error_code,
                               now=datetime.now(UTC))
    return Response("", status=204)
