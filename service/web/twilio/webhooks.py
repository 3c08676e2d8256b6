"""POST /twilio/sms and /twilio/status: verify the signature, call the use case, answer TwiML."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, abort, current_app, request
from sqlalchemy.exc import InterfaceError, OperationalError
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from service import clock
from service import taskqueue as jobs
from service.conversations import checkins
from service.logs import mask_phone
from service.messaging import delivery
from service.messaging.spool import Spool
from service.store import get_db
from service.web.health import add_check

log = logging.getLogger(__name__)
bp = Blueprint("twilio", __name__, url_prefix="/twilio")

DB_UNAVAILABLE = (OperationalError, InterfaceError)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.extensions["spool"] = Spool(redis_url=app.config.get("REDIS_URL"),
                                    spool_dir=app.config["SPOOL_DIR"])
    # Spooled texts that failed for good (service/spool.py): each is a patient's text nobody
    # has read; ops look at them by hand.
    add_check(app, "spool_dead", lambda: app.extensions["spool"].dead_count(), critical=False)


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


@bp.post("/sms")
def sms():
    verify_signature()
    form = request.form
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    to, from_ = form.get("To", ""), form.get("From", "")
    if not sid or not to or not from_:
        return Response("MessageSid, From and To are required", status=400,
                        mimetype="text/plain")
    if len(sid) > 64 or "\x00" in sid:
        return Response("MessageSid is not a Twilio SID", status=400, mimetype="text/plain")
    body = form.get("Body", "")
    now = clock.now()
    spool = current_app.extensions["spool"]
    record = {"sid": sid, "to": to, "from": from_, "body": body,
              "opt_out_type": form.get("OptOutType"), "received_at": now.isoformat()}
    if spool.holds(from_):
        # This sender's earlier texts wait for the replay (the database was away): this one
        # queues behind them, so the conversation gets the answers in the order they were sent.
        where = spool.push(record)
        log.warning("inbound %s spooled to %s behind earlier spooled texts", sid, where)
        if current_app.config.get("REDIS_URL"):
            jobs.send_task("tasks.replay_spool", config=current_app.config)
        return twiml([checkins.text_for_holding()])
    try:
        result = get_db().run(checkins.handle_inbound_sms, to=to, from_=from_, body=body,
                              sid=sid, now=now, opt_out_type=form.get("OptOutType"))
    except DB_UNAVAILABLE as exc:
        where = spool.push(record)
        log.error("database unavailable (%s): inbound %s spooled to %s", type(exc).__name__,
                  sid, where)
        return twiml([checkins.text_for_holding()])
    log.info("inbound sms %s from %s: %d repl%s%s", sid, mask_phone(from_), len(result.replies),
             "y" if len(result.replies) == 1 else "ies",
             f" ({result.reason})" if result.reason else "")
    if current_app.config.get("REDIS_URL") and result.send_soon:
        # On-call texts of an alert this text raised go out now, not at the next beat; an
        # answer that only moved the conversation on leaves the worker alone.
        jobs.send_task("tasks.send_now", config=current_app.config)
    return twiml(result.replies)


@bp.post("/status")
def status():
    verify_signature()
    form = request.form
    if form.get("CallSid") and form.get("CallStatus") and not form.get("MessageSid"):
        from service.web.twilio.voice import call_status  # imported here: voice imports this module

        return call_status()
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
    # A race lost to the sender recording this message while we did (a callback that came
    # quickly) is run again and finds its row: Twilio does not retry a callback we fail.
    get_db().run(delivery.record_status, sid=sid, status=state, error_code=error_code,
                 now=clock.now(), to=form.get("To"))
    return Response("", status=204)
