"""`triage chat`: talk to the real flow in a terminal, the way a patient would by SMS."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flows import engine, reading, routing, triage
from flows.loader import get_flow, load_all, messages, parse_wait
from flows.sms import count_segments
from service.accounts.demo import DEMO_CLINIC_NAME, DEMO_NUMBER

HELP = "(type your reply; '/wait 25h' moves the clock on; '/quit' ends)"


def run_chat(*, lang: str = "en", followup: bool = False, baseline: int | None = None,
             final: bool = False, cancer_history: bool | None = None,
             clinic: str = DEMO_CLINIC_NAME, clinic_phone: str = DEMO_NUMBER,
             emergency: str = "911", read: Callable[[str], str] = input,
             write: Callable[[str], None] = print, now: datetime | None = None) -> str | None:
    """Runs one check-in; returns the level's value, or None if the patient quit early."""
    load_all()
    now = now or datetime.now(UTC)
    flow = get_flow("followup" if followup else "intake")
    known = {"cancer_history": bool(cancer_history)} if followup else {}
    # A first follow-up has the final check 14 days later (day 28 -> day 42), named in advice.
    next_check = None if final or not followup else (now + timedelta(days=14)).isoformat()
    # The demo clinic's number as its texts give it (`triage demo seed`: +16175550100).
    ctx = engine.Context(clinic=clinic, emergency=emergency, clinic_phone=clinic_phone,
                         known=known, baseline_pain_score=baseline, final_check=final,
                         next_check_at=next_check)
    state, actions = engine.start(flow, now, context=ctx, lang=lang)
    write(f"--- {flow.key} ({lang}) {HELP}")
    while True:
        outcome = _show(actions, write)
        if outcome is not None:
            _show_outcome(outcome, write)
            return outcome.assessment.level.value
        try:
            text = read("you> ")
        except EOFError:
            write("(no more input)")
            return None
        if text.strip() == "/quit":
            return None
        if text.startswith("/wait"):
            try:
                now += parse_wait(text.split(maxsplit=1)[1], flow.key, "chat")
            except (IndexError, ValueError):
                write("usage: /wait 25h  (m, h or d)")
                actions = []
                continue
            state, actions = engine.step(flow, state, engine.Tick(), now)
            if not actions:
                write(f"(nothing due yet; next event at {engine.next_event_at(state)})")
            continue
        route, actions = _read(flow, state, text)
        if route.alert:
            write(f"\n(the clinic is alerted: {route.alert}, level {route.alert_level})")
        if route.action == routing.OPT_OUT:
            _show(actions, write)
            write("(opted out: no more texts; the check-in ends)")
            return None
        if route.action == routing.STEP:
            state, stepped = engine.step(flow, state, engine.Reply(text), now)
            actions += stepped


def _read(flow, state, text: str) -> tuple[routing.Route, list]:
    """The same reading and routing as an SMS (flows.reading, flows.routing): an opt-out ends
    the chat with its one confirmation; HELP, a start word or a request to be called is
    answered without moving the conversation on; anything else goes to the engine."""
    node = engine.current_question(flow, state)
    said = reading.read(text, lang=state["lang"], question_kind=node.parse if node else None)
    route = routing.route(said, opted_out=False, consented=True, in_conversation=True)
    if route.action == routing.OPT_OUT:
        return route, _say(["optout.confirm"], state)
    if route.action == routing.HELP:
        return route, _say(["help"], state)
    replies = _say(route.reply_keys, state)
    if route.action == routing.REPEAT and node is not None:
        replies.append(engine.Send(engine.render(node.text_for(state["lang"], state["channel"]),
                                                 state["context"], state["lang"]),
                                   "question", node.id))
    return route, replies


def _say(keys, state) -> list:
    return [engine.Send(engine.render(messages().get(key, state["lang"]), state["context"],
                                      state["lang"]), "reply", None, key) for key in keys]


def _show(actions, write) -> engine.Outcome | None:
    outcome = None
    for action in actions:
        if isinstance(action, engine.Send):
            seg = count_segments(action.text)
            write(f"\nclinic> {action.text}\n        [{seg.count} SMS segment"
                  f"{'s' if seg.count != 1 else ''}, {seg.encoding}]")
        elif isinstance(action, engine.Outcome):
            outcome = action
    return outcome


def _show_outcome(outcome: engine.Outcome, write) -> None:
    a = outcome.assessment
    write(f"\nLevel: {a.level.value}")
    write(f"Reasons: {', '.join(a.reasons)}")
    for rule_id, text in triage.explain(a.reasons):
        write(f"  {rule_id}: {text}")
    if a.missing:
        write(f"Not answered: {', '.join(a.missing)}")
    for due in outcome.followups:
        write(f"Follow-up ({due.kind}) due {due.due_at:%Y-%m-%d %H:%M} UTC")
    write(f"(check-in {outcome.status})")
