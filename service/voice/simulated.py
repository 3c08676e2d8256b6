"""A phone call walked as text, for the web simulator (and anyone without a phone): the same
voice use cases as /twilio/voice, each in its own transaction, without Twilio or TwiML.

The call's state is in the database, so a client keeps only `call_sid` between requests:
`dial` starts a call, `respond` sends keys or words to whatever the call is asking now,
`silence` is a caller who says nothing, and `hang_up` ends the call as Twilio would report it.
Each returns a `SimTurn`: what the caller hears, and how the call listens next.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from service.store.models import Call
from service.voice import calls, ivr
from service.voice.replies import STEP_OF_STAGE, VoiceReply

_STEP_FUNCTIONS = {"lang": ivr.choose_language, "answer": ivr.answer,
                   "confirm": ivr.confirm, "offer": ivr.offer,
                   "advice": ivr.advice}


@dataclass
class SimTurn:
    call_sid: str
    lines: list[dict] = field(default_factory=list)  # {"text", "lang"}, in the order heard
    listening: dict | None = None  # {"step", "lang", "keys", "hints"} while the call waits
    dial: str | None = None
    ended: bool = False

    @classmethod
    def of(cls, call_sid: str, reply: VoiceReply) -> SimTurn:
        listen = reply.listen
        keys = None
        if listen is not None:
            keys = "one key" if listen.num_digits == 1 else f"digits, then {listen.finish_on_key}"
        return cls(call_sid=call_sid,
                   lines=[{"text": line.text, "lang": line.lang} for line in reply.lines],
                   listening=None if listen is None else {
                       "step": listen.step, "lang": listen.lang, "keys": keys,
                       "hints": list(listen.hints)},
                   dial=reply.dial, ended=listen is None)

    def as_text(self) -> str:
        """The turn as a terminal would show it."""
        out = [f"[{line['lang']}] {line['text']}" for line in self.lines]
        if self.listening:
            out.append(f"(listening: {self.listening['keys']}, or words)")
        if self.dial:
            out.append(f"(connecting the call to {self.dial})")
        if self.ended:
            out.append("(the call ends)")
        return "\n".join(out)

    def to_dict(self) -> dict:
        return {"call_sid": self.call_sid, "lines": self.lines, "listening": self.listening,
                "dial": self.dial, "ended": self.ended}


def dial(db, *, clinic_number: str, caller: str, now: datetime,
         call_sid: str | None = None) -> SimTurn:
    """`caller` phones `clinic_number` (the clinic's Twilio number)."""
    call_sid = call_sid or "CAsim" + uuid.uuid4().hex
    with db.transaction() as session:
        reply = ivr.answer_call(session, call_sid=call_sid, to=clinic_number,
                                        from_=caller, now=now)
    return SimTurn.of(call_sid, reply)


def answer(db, *, call_id: int, now: datetime, answered_by: str = "human",
           call_sid: str | None = None) -> SimTurn:
    """The patient picks up the reminder call `call_id` (or a machine does)."""
    call_sid = call_sid or "CAsim" + uuid.uuid4().hex
    with db.transaction() as session:
        reply = ivr.answer_call(session, call_sid=call_sid, to="", from_="", now=now,
                                        answered_by=answered_by, call_id=call_id)
    return SimTurn.of(call_sid, reply)


def respond(db, *, call_sid: str, now: datetime, digits: str = "", speech: str = "") -> SimTurn:
    """Keys (`digits`, without the closing #) or words (`speech`) for what the call asks now."""
    with db.transaction() as session:
        call = _call(session, call_sid)
        step = STEP_OF_STAGE.get(call.stage) if call is not None else None
        if step is None:
            return SimTurn(call_sid=call_sid, ended=True)
        reply = _STEP_FUNCTIONS[step](session, call_sid=call_sid, turn=call.turn,
                                      digits=digits.strip().rstrip("#"), speech=speech.strip(),
                                      now=now)
    return SimTurn.of(call_sid, reply)


def silence(db, *, call_sid: str, now: datetime) -> SimTurn:
    """The caller says and presses nothing until the call stops listening."""
    with db.transaction() as session:
        call = _call(session, call_sid)
        if call is None or call.stage not in STEP_OF_STAGE:
            return SimTurn(call_sid=call_sid, ended=True)
        reply = ivr.silence(session, call_sid=call_sid, turn=call.turn, now=now)
    return SimTurn.of(call_sid, reply)


def hang_up(db, *, call_sid: str, now: datetime, status: str = "completed") -> SimTurn:
    """The call ends (as Twilio's status callback says): an unfinished check-in goes on by text."""
    with db.transaction() as session:
        calls.record_call_status(session, call_sid=call_sid, status=status, now=now)
    return SimTurn(call_sid=call_sid, ended=True)


def _call(session, call_sid: str) -> Call | None:
    return session.execute(sa.select(Call).where(Call.call_sid == call_sid)).scalar_one_or_none()
