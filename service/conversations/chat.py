"""`triage chat`: talk to the real flow in a terminal, the way a patient would by SMS."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flows import engine, triage
from flows.loader import get_flow, load_all, parse_wait
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
        state, actions = engine.step(flow, state, engine.Reply(text), now)


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
