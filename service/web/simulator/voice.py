"""The simulator's phone call: walk a voice check-in as text (keypad and words), through the
same use cases as /twilio/voice (`service.voice.simulated`). The call's words land in the thread as
voice messages, which the page polls like texts."""

from __future__ import annotations

from flask import jsonify, request

from service import clock
from service.phones import normalize_phone
from service.store import get_db
from service.voice import simulated as voice_sim
from service.web.simulator import bp


@bp.post("/api/call")
def call():
    """{"from", "to"}: the simulated phone calls the clinic's number."""
    data = request.get_json(silent=True) or {}
    try:
        frm = normalize_phone(str(data.get("from", "")))
        to = normalize_phone(str(data.get("to", "")))
    except ValueError as exc:
        return jsonify({"error": str(exc)}), 400
    turn = voice_sim.dial(get_db(), clinic_number=to, caller=frm, now=clock.now())
    return jsonify(turn.to_dict())


@bp.post("/api/call/input")
def call_input():
    """{"call_sid"} with "digits", "speech", "silence": true or "hangup": true."""
    data = request.get_json(silent=True) or {}
    call_sid = str(data.get("call_sid", ""))
    if not call_sid.startswith("CAsim"):
        return jsonify({"error": "not a simulated call"}), 400
    db, now = get_db(), clock.now()
    if data.get("hangup"):
        turn = voice_sim.hang_up(db, call_sid=call_sid, now=now)
    elif data.get("silence"):
        turn = voice_sim.silence(db, call_sid=call_sid, now=now)
    else:
        turn = voice_sim.respond(db, call_sid=call_sid, now=now,
                                 digits=str(data.get("digits", ""))[:12],
                                 speech=str(data.get("speech", ""))[:300])
    return jsonify(turn.to_dict())
