"""What the service does with one inbound text from an enrolled patient (CLINICAL.md §6–§7):
the decision, from the text's reading and where the patient stands. Pure: the service carries
the decision out (records the text, raises the alert, sends the replies, runs the engine).

    route(read("ok thanks"), opted_out=False, consented=True, in_conversation=False)
        -> Route(NOTHING, reason="acknowledgement")
    route(read("can someone call me?"), opted_out=False, consented=True, in_conversation=True)
        -> Route(REPEAT, alert=CALLBACK_REQUESTED, reply_keys=("callback.confirm",))

The order is the contract's: an opt-out wins over everything; then HELP; then START, restart
and language words; then an answer to the question being asked; otherwise unclear.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows import reading
from flows.reading import Reading

# What to do.
OPT_OUT = "opt_out"  # record the opt-out, cancel what is pending, confirm once
OPT_IN = "opt_in"  # START after an opt-out: texts again, follow-ups restored
HELP = "help"  # the clinic's name and phone, the emergency number, how to stop
CONSENT = "consent"  # the patient said YES (or texted a start word): start the intake
CONSENT_WAIT = "consent_wait"  # still waiting for YES: say how to start
STEP = "step"  # give the text to the conversation's engine
REPEAT = "repeat"  # ask the current question again (the text is not an answer to it)
START = "start"  # start a check-in: an intake, or an early follow-up check
LANGUAGE = "language"  # switch the patient's language; nothing else
NOTHING = "nothing"  # store the text; no reply

# Alerts a text can raise.
PATIENT_MESSAGE = "patient_message"
CALLBACK_REQUESTED = "callback_requested"


@dataclass(frozen=True)
class Route:
    action: str
    alert: str | None = None  # PATIENT_MESSAGE | CALLBACK_REQUESTED
    alert_level: str = "info"
    reply_keys: tuple[str, ...] = ()  # message keys sent before the action's own texts
    reason: str = ""  # why there is no reply, for logs

    @property
    def answers(self) -> bool:
        """Does carrying this out send the patient a reply?"""
        return bool(self.reply_keys) or self.action not in (NOTHING, LANGUAGE)


_CALLBACK = dict(alert=CALLBACK_REQUESTED, alert_level="soon")
_STARTS = (reading.START, reading.START_KEYWORD)


def route(said: Reading, *, opted_out: bool, consented: bool, in_conversation: bool) -> Route:
    """The decision for one text `said` from an enrolled patient."""
    kind = said.kind
    if kind == reading.OPT_OUT:
        # Staff still hear of a call asked for, or symptoms told, in the same text (§6: "after
        # an opt-out: the alert, and no reply"; §7: so staff can call).
        if said.callback:
            return Route(OPT_OUT, **_CALLBACK)
        if said.symptoms:
            return Route(OPT_OUT, alert=PATIENT_MESSAGE, alert_level="soon")
        return Route(OPT_OUT)
    if opted_out:
        # Silence until START/UNSTOP, but HELP is answered (carrier rules), and a text that
        # reports symptoms or asks for a call reaches staff, who can phone.
        if kind == reading.START:
            return Route(OPT_IN)
        if kind == reading.HELP:
            return Route(HELP)
        if said.callback:
            return Route(NOTHING, **_CALLBACK, reason="opted_out")
        if said.symptoms:
            return Route(NOTHING, alert=PATIENT_MESSAGE, alert_level="soon", reason="opted_out")
        return Route(NOTHING, reason="opted_out")
    if kind == reading.HELP:
        return Route(HELP)
    if not consented:
        if kind in (reading.LANG_ES, reading.LANG_EN):
            return Route(LANGUAGE)  # language words come before answers (§6), consent too
        if kind in _STARTS or said.yes_no is True:
            return Route(CONSENT)
        if said.callback:
            return Route(CONSENT_WAIT, **_CALLBACK, reply_keys=("callback.confirm",))
        if said.yes_no is False or said.ack:
            return Route(CONSENT_WAIT)
        # Whatever else they wrote before consenting reaches the clinic.
        return Route(CONSENT_WAIT, alert=PATIENT_MESSAGE)
    if in_conversation:
        if kind in _STARTS:
            return Route(REPEAT)
        if said.callback and kind != reading.ANSWER:
            # The clinic is told and the conversation goes on from the same question.
            return Route(REPEAT, **_CALLBACK, reply_keys=("callback.confirm",))
        if kind == reading.OTHER_SENSE:
            return Route(STEP, alert=PATIENT_MESSAGE)  # the engine says how to stop, once
        return Route(STEP)
    # After a conversation.
    if kind in _STARTS or kind == reading.RESTART:
        return Route(START)
    if said.callback:
        return Route(NOTHING, **_CALLBACK, reply_keys=("callback.confirm",))
    if kind in (reading.ACK, reading.BARE_YES_NO):
        return Route(NOTHING, reason="acknowledgement")
    if kind in (reading.LANG_ES, reading.LANG_EN):
        return Route(LANGUAGE)
    if kind == reading.OTHER_SENSE:
        return Route(START, alert=PATIENT_MESSAGE, reply_keys=("stop_hint",))
    # Anything else out of the blue: the clinic hears it, and we check in early.
    return Route(START, alert=PATIENT_MESSAGE)
