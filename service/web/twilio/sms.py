"""POST /twilio/sms: verify the signature, run the inbound text's use case, answer TwiML; the
text is spooled when the database is away."""

from __future__ import annotations

import logging
import threading
import time

from flask import Blueprint, Flask, Response, current_app, request
from twilio.twiml.messaging_response import MessagingResponse

from flows import keywords
from service import clock, taskqueue
from service.conversations import inbound
from service.logs import mask_phone
from service.messaging.spool import Spool
from service.store import get_db
from service.store.queries import DB_UNAVAILABLE
from service.web.health import add_check
from service.web.twilio.signature import verify_signature

log = logging.getLogger(__name__)
bp = Blueprint("twilio", __name__, url_prefix="/twilio")

# After the database failed a text, this process sends the next texts straight to the spool for
# this long instead of making each wait for its own timeout (service/store/session.py): during
# an outage every text is answered in milliseconds. The replay brings them in, in order.
DB_AWAY_FOR_S = 5.0


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.extensions["spool"] = Spool.from_config(app.config)
    app.extensions["db_away"] = _Away()
    # Spooled texts that failed for good (service/spool.py): each is a patient's text nobody
    # has read; ops look at them by hand.
    add_check(app, "spool_dead", lambda: app.extensions["spool"].dead_count(), critical=False)


class _Away:
    """Since when this process knows the database is away (monotonic time), if it does."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def now(self) -> bool:
        return time.monotonic() < self._until

    def seen(self) -> None:
        with self._lock:
            self._until = time.monotonic() + DB_AWAY_FOR_S


def twiml(texts: list[str]) -> Response:
    resp = MessagingResponse()
    for text in texts:
        resp.message(text)
    return Response(str(resp), mimetype="text/xml")


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
    away = current_app.extensions["db_away"]
    if away.now():
        where = spool.push(record)
        log.error("database away: inbound %s spooled to %s", sid, where)
        return _holding(spool, record)
    if spool.holds(from_):
        # This sender's earlier texts wait for the replay (the database was away): this one
        # queues behind them, so the conversation gets the answers in the order they were sent.
        where = spool.push(record)
        log.warning("inbound %s spooled to %s behind earlier spooled texts", sid, where)
        if current_app.config.get("REDIS_URL"):
            taskqueue.send_task("tasks.replay_spool", config=current_app.config)
        return _holding(spool, record)
    try:
        result = get_db().run(inbound.handle_inbound_sms, to=to, from_=from_, body=body,
                              sid=sid, now=now, opt_out_type=form.get("OptOutType"))
    except DB_UNAVAILABLE as exc:
        away.seen()
        where = spool.push(record)
        log.error("database unavailable (%s): inbound %s spooled to %s", type(exc).__name__,
                  sid, where)
        return _holding(spool, record)
    _remember_opt_out(spool, record, result)
    log.info("inbound sms %s from %s: %d repl%s%s", sid, mask_phone(from_), len(result.replies),
             "y" if len(result.replies) == 1 else "ies",
             f" ({result.reason})" if result.reason else "")
    if current_app.config.get("REDIS_URL") and result.send_soon:
        # On-call texts of an alert this text raised go out now, not at the next beat; an
        # answer that only moved the conversation on leaves the worker alone.
        taskqueue.send_task("tasks.send_now", config=current_app.config)
    return twiml(result.replies)


def _holding(spool: Spool, record: dict) -> Response:
    """The holding reply, except to an opt-out (the replay sends its one confirmation) and to a
    sender known to have opted out (CLINICAL.md §7: no reply; the database cannot say now)."""
    word = keywords.classify(record["body"] or "")
    if word == "stop" or (record.get("opt_out_type") or "").upper() == "STOP" \
            or spool.opted_out(record["to"], record["from"]):
        return twiml([])
    return twiml([inbound.text_for_holding()])


def _remember_opt_out(spool: Spool, record: dict, result: inbound.InboundResult) -> None:
    """Keeps the spool's list of opted-out senders in step with what the database just said:
    a sender who is opted out, or who opted back in with this text."""
    if result.duplicate or result.reason == "unknown_clinic":
        return
    word = keywords.classify(record["body"] or "")
    twilio_says = (record.get("opt_out_type") or "").upper()
    patient = result.patient
    if patient is None:  # a number no patient has: its STOP is remembered all the same
        if word == "stop" or twilio_says == "STOP":
            spool.remember_opt_out(record["to"], record["from"], True)
        return
    if patient.opted_out or word == "start" or twilio_says == "START":
        spool.remember_opt_out(record["to"], record["from"], patient.opted_out)


