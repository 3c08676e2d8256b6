"""POST /twilio/voice and its follow-on paths: verify the signature, call the voice use case,
answer TwiML. Call status callbacks arrive at /twilio/status (status.py hands them here).

Each follow-on URL carries `n`, the number of the prompt it answers, so a late or repeated
request is answered with the current prompt instead of being taken as an answer to it.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import Blueprint, Flask, Response, current_app, request
from twilio.twiml.voice_response import VoiceResponse

from flows.loader import messages
from service import clock, taskqueue
from service.conversations import consent
from service.store import get_db
from service.store.models import Call
from service.store.queries import DB_UNAVAILABLE
from service.voice import calls, ivr, replies
from service.web.twilio import params
from service.web.twilio.signature import verify_signature

log = logging.getLogger(__name__)
bp = Blueprint("twilio_voice", __name__, url_prefix="/twilio/voice")

# Speech recognition and text-to-speech per language (Amazon Polly voices through Twilio).
LANGUAGE_TAGS = {"en": "en-US", "es": "es-MX"}
VOICES = {"en": "Polly.Joanna", "es": "Polly.Mia"}
STEPS = {"lang": ivr.choose_language, "answer": ivr.answer,
         "confirm": ivr.confirm, "offer": ivr.offer,
         "advice": ivr.advice, "unanswered": ivr.unanswered}
# Longest message a caller can leave for the clinic when its line does not answer.
MESSAGE_MAX_SECONDS = 120


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


def step_url(step: str, **query) -> str:
    """Absolute under PUBLIC_BASE_URL (what Twilio sees and signs), else relative to this app."""
    base = (current_app.config.get("PUBLIC_BASE_URL") or "").rstrip("/")
    return f"{base}/twilio/voice/{step}" + (f"?{urlencode(query)}" if query else "")


def to_twiml(reply: replies.VoiceReply) -> str:
    """A VoiceReply as TwiML: <Say>s, then a <Gather> with the prompt and a <Redirect> for no
    input; or <Dial> (its action says whether the clinic answered), or <Record>; and <Hangup>."""
    resp = VoiceResponse()
    for line in reply.say:
        _say(resp, line)
    listen = reply.listen
    if listen is not None:
        gather = resp.gather(
            input="dtmf speech", action=step_url(listen.step, n=reply.turn), method="POST",
            language=LANGUAGE_TAGS[listen.lang], hints=", ".join(listen.hints) or None,
            timeout=listen.timeout, speech_timeout="auto", num_digits=listen.num_digits,
            finish_on_key=listen.finish_on_key, action_on_empty_result=False)
        for line in reply.prompt:
            _say(gather, line)
        # Reached only when the <Gather> heard nothing.
        resp.redirect(step_url("silence", n=reply.turn), method="POST")
        return str(resp)
    for line in reply.prompt:
        _say(resp, line)
    if reply.dial:
        # Without an action the caller is hung up on when nobody answers in 30 s.
        resp.dial(reply.dial, timeout=30, action=step_url("dialed", n=reply.turn),
                  method="POST")
    if reply.record:
        resp.record(action=step_url("recorded", n=reply.turn), method="POST",
                    max_length=MESSAGE_MAX_SECONDS, timeout=5, finish_on_key="#",
                    play_beep=True)
    if reply.hangup:
        resp.hangup()
    return str(resp)


def _say(verb, line: replies.Line) -> None:
    verb.say(line.text, voice=VOICES[line.lang], language=LANGUAGE_TAGS[line.lang])


def _twiml(reply: replies.VoiceReply) -> Response:
    ending = reply.listen is None or reply.listen.step == "advice"
    if ending and current_app.config.get("REDIS_URL"):
        # An outcome's on-call text, or the texts of a call finished by SMS, go out now rather
        # than at the next beat.
        taskqueue.send_task("tasks.send_now", config=current_app.config)
    return Response(to_twiml(reply), mimetype="text/xml")


def _unavailable() -> Response:
    """The database is away: a call cannot wait for it. Both languages, then hang up."""
    lines = tuple(replies.Line(messages().get("voice.unavailable", lang), lang)
                  for lang in ("en", "es"))
    return _twiml(replies.VoiceReply(say=lines, hangup=True))


def _turn() -> int | None:
    try:
        return int(request.args.get("n", ""))
    except ValueError:
        return None


def _call_id() -> int | None:
    try:
        return int(request.args.get("call", ""))
    except ValueError:
        return None


def _bad_request(form) -> Response | None:
    """400 for a request without a CallSid or with a parameter Twilio never sends."""
    if not form.get("CallSid"):
        return params.bad_request("CallSid is required")
    return params.check(form, sids=("CallSid", "AccountSid", "ParentCallSid"),
                        short=("From", "To", "AnsweredBy", "Digits", "CallStatus",
                               "CallDuration", "ErrorCode"),
                        text=("SpeechResult",))


@bp.post("")
def incoming():
    """A call to the clinic's number, or our reminder call answered (`?call=<id>`)."""
    verify_signature()
    form = request.form
    sid = form.get("CallSid", "")
    if (refused := _bad_request(form)) is not None:
        return refused
    try:
        reply = get_db().run(ivr.answer_call, call_sid=sid,
                             to=form.get("To", ""), from_=form.get("From", ""),
                             answered_by=form.get("AnsweredBy"), call_id=_call_id(),
                             now=clock.now())
    except DB_UNAVAILABLE as exc:
        log.error("database unavailable (%s) for call %s", type(exc).__name__, sid)
        return _unavailable()
    return _twiml(reply)


@bp.post("/<step>")
def follow_on(step: str):
    """The caller's keys or words for the prompt numbered `n` (lang, answer, confirm, offer,
    advice, unanswered), no input at all (silence), the end of a <Dial> (dialed) or of a
    <Record> (recorded)."""
    if step not in ("silence", "dialed", "recorded") and step not in STEPS:
        return Response("not found", status=404, mimetype="text/plain")
    verify_signature()
    form = request.form
    sid = form.get("CallSid", "")
    if (refused := _bad_request(form)) is not None:
        return refused
    now = clock.now()
    try:
        if step == "silence":
            reply = get_db().run(ivr.silence, call_sid=sid, turn=_turn(), now=now)
        elif step == "dialed":
            reply = get_db().run(ivr.dialed, call_sid=sid, turn=_turn(),
                                 status=form.get("DialCallStatus", ""), now=now)
        elif step == "recorded":
            reply = get_db().run(ivr.recorded, call_sid=sid, turn=_turn(),
                                 recording_url=form.get("RecordingUrl", "")[:500],
                                 seconds=form.get("RecordingDuration", "")[:8], now=now)
        else:
            reply = get_db().run(STEPS[step], call_sid=sid, turn=_turn(),
                                 digits=form.get("Digits", "").strip(),
                                 speech=form.get("SpeechResult", "").strip(), now=now)
    except DB_UNAVAILABLE as exc:
        log.error("database unavailable (%s) for call %s", type(exc).__name__, sid)
        return _unavailable()
    if reply.hangup:
        _remember_opt_out(sid)
    return _twiml(reply)


def _remember_opt_out(call_sid: str) -> None:
    """A call that ends may have been "stop calling me": while the database is away, that
    caller's texts get no holding reply either (the spool's list, as for a texted STOP)."""
    try:
        with get_db().transaction() as session:
            patient_id = session.scalar(sa.select(Call.patient_id)
                                        .where(Call.call_sid == call_sid))
            consent.remember_opted_out(current_app.extensions["spool"], session, patient_id)
    except DB_UNAVAILABLE as exc:  # the call was answered; the next text will tell the spool
        log.warning("opt-out of call %s not passed to the spool (%s)", call_sid,
                    type(exc).__name__)


def call_status() -> Response:
    """A call status callback (posted to /twilio/status, signature already verified)."""
    form = request.form
    sid, state = form.get("CallSid", ""), form.get("CallStatus", "")
    if not sid or not state:
        return Response("CallSid and CallStatus are required", status=400,
                        mimetype="text/plain")
    if (refused := _bad_request(form)) is not None:
        return refused
    with get_db().transaction() as session:
        calls.record_call_status(
            session, call_sid=sid, status=state, now=clock.now(),
            answered_by=form.get("AnsweredBy"), duration=_int(form.get("CallDuration")),
            error_code=_int(form.get("ErrorCode")), call_id=_call_id())
    return Response("", status=204)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
