"""POST /twilio/status: delivery status of a text, or the status of a call (both are posted
here), recorded idempotently."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, request

from service import clock
from service.conversations import consent
from service.messaging import delivery
from service.messaging.senders import OPTED_OUT
from service.store import get_db
from service.web.twilio import params, voice
from service.web.twilio.signature import verify_signature

bp = Blueprint("twilio_status", __name__, url_prefix="/twilio")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.post("/status")
def status():
    verify_signature()
    form = request.form
    if form.get("CallSid") and form.get("CallStatus") and not form.get("MessageSid"):
        return voice.call_status()
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    state = form.get("MessageStatus") or form.get("SmsStatus") or ""
    if not sid or not state:
        return Response("MessageSid and MessageStatus are required", status=400,
                        mimetype="text/plain")
    if len(sid) > 64 or "\x00" in sid:  # as the SMS webhook: SIDs of any length we store
        return params.bad_request("MessageSid is not a Twilio SID")
    if (refused := params.check(form, short=("MessageStatus", "SmsStatus", "To", "ErrorCode"))
            ) is not None:
        return refused
    code = form.get("ErrorCode")
    try:
        error_code = int(code) if code else None
    except ValueError:
        error_code = None
    # `reply` (in the URL): a TwiML reply's key, from its <Message action> (sms.twiml).
    reply = request.args.get("reply") or None
    if reply is not None and (len(reply) > 64 or not reply.isascii()):
        return Response("reply is not a reply key", status=400, mimetype="text/plain")
    # A race lost to the sender recording this message while we did (a callback that came
    # quickly) is run again and finds its row: Twilio does not retry a callback we fail.
    get_db().run(delivery.record_status, sid=sid, status=state, error_code=error_code,
                 now=clock.now(), to=form.get("To"), reply=reply,
                 on_failed=consent.after_failed_delivery)
    if error_code == OPTED_OUT and form.get("To") and form.get("From"):
        # Opted out at Twilio: during an outage this patient gets no holding reply either.
        current_app.extensions["spool"].remember_opt_out(form["From"], form["To"], True)
    return Response("", status=204)
