"""POST /twilio/sms: verify the signature, run the inbound text's use case, answer TwiML; the
text is spooled when the database is away."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, request
from twilio.twiml.messaging_response import MessagingResponse

from flows import keywords
from service import clock, taskqueue
from service.config import status_callback_url
from service.conversations import inbound
from service.logs import mask_phone
from service.messaging.delivery import reply_key
from service.messaging.spool import Spool
from service.store import get_db
from service.store.queries import DB_UNAVAILABLE
from service.web.health import add_check
from service.web.twilio.signature import verify_signature

log = logging.getLogger(__name__)
bp = Blueprint("twilio", __name__, url_prefix="/twilio")

# After the database failed a text, the web processes of this machine send the next texts
# straight to the spool for this long instead of making each wait for its own timeout
# (service/store/session.py): during an outage every text is answered in milliseconds. The
# replay brings them in, in order.
DB_AWAY_FOR_S = 5.0


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    spool = app.extensions["spool"] = Spool.from_config(app.config)
    # Beside this deployment's spool file (its name carries REDIS_KEY_PREFIX).
    app.extensions["db_away"] = _Away(spool.path.with_suffix(".database-away"))
    # Spooled texts that failed for good (service/spool.py): each is a patient's text nobody
    # has read; ops look at them by hand.
    add_check(app, "spool_dead", lambda: app.extensions["spool"].dead_count(), critical=False)


class _Away:
    """Whether the database was found away in the last DB_AWAY_FOR_S seconds: by this process
    (in memory), or by another web process of this machine (the mtime of a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker
        self._until = 0.0

    def now(self) -> bool:
        if time.monotonic() < self._until:
            return True
        try:
            return time.time() - self.marker.stat().st_mtime < DB_AWAY_FOR_S
        except OSError:
            return False

    def seen(self) -> None:
        self._until = time.monotonic() + DB_AWAY_FOR_S
        try:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.touch()
        except OSError:
            pass  # this process still knows


def twiml(texts: list[str], *, inbound_sid: str | None = None) -> Response:
    """<Message>s; replies to a stored text each carry an `action` (Twilio's status callback
    for a TwiML message) whose `reply` names the reply's row (delivery.reply_key), so that its
    delivery, or its failure, is recorded as an outbox text's is."""
    resp = MessagingResponse()
    for index, text in enumerate(texts):
        if inbound_sid:
            resp.message(text, action=status_url(reply=reply_key(inbound_sid, index)),
                         method="POST")
        else:
            resp.message(text)
    return Response(str(resp), mimetype="text/xml")


def status_url(**query: str) -> str:
    """/twilio/status under PUBLIC_BASE_URL (what Twilio requests and signs)."""
    return status_callback_url(current_app.config.get("PUBLIC_BASE_URL") or request.url_root,
                               **query)


@bp.post("/sms")
@bp.post("/sms/fallback")  # the number's fallback URL: the same text, signed on this path
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
        if not _server_answered(exc):
            away.seen()
        where = spool.push(record)
        log.error("database unavailable (%s): inbound %s spooled to %s", type(exc).__name__,
                  sid, where)
        return _holding(spool, record)
    inbound.remember_opt_out(spool, record, result)
    log.info("inbound sms %s from %s: %d repl%s%s", sid, mask_phone(from_), len(result.replies),
             "y" if len(result.replies) == 1 else "ies",
             f" ({result.reason})" if result.reason else "")
    if current_app.config.get("REDIS_URL") and result.send_soon:
        # On-call texts of an alert this text raised go out now, not at the next beat; an
        # answer that only moved the conversation on leaves the worker alone.
        taskqueue.send_task("tasks.send_now", config=current_app.config)
    return twiml(result.replies, inbound_sid=sid)


# PostgreSQL's own timeouts (statement_timeout, lock_timeout): the server answers, this text
# waited too long; the next texts need not go to the spool.
SERVER_TIMEOUTS = ("57014", "55P03")


def _server_answered(exc: Exception) -> bool:
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in SERVER_TIMEOUTS


def _holding(spool: Spool, record: dict) -> Response:
    """The holding reply, except to an opt-out (the replay sends its one confirmation) and to a
    sender known to have opted out (CLINICAL.md §7: no reply; the database cannot say now)."""
    word = keywords.classify(record["body"] or "")
    if word == "stop" or (record.get("opt_out_type") or "").upper() == "STOP":
        # Remembered now, not at the replay: the sender's next texts in this outage get no
        # holding reply either (one confirmation, then silence).
        spool.remember_opt_out(record["to"], record["from"], True)
        return twiml([])
    if spool.opted_out(record["to"], record["from"]):
        return twiml([])
    return twiml([inbound.text_for_holding()])


