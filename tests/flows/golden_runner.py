"""Runs a golden conversation file: a flow, a context and patient replies -> messages and outcome.

The state is serialized to JSON and read back between every step, proving it survives storage.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from flows import engine
from flows.loader import get_flow, parse_wait


def run_case(case: dict) -> dict:
    flow = get_flow(case["flow"], case.get("version"))
    now = datetime.fromisoformat(case.get("now", "2026-03-02T15:00:00+00:00"))
    ctx = dict(case.get("context") or {})
    ctx.setdefault("clinic", "Elm Clinic")
    ctx.setdefault("clinic_phone", "555-0100")
    ctx.setdefault("timezone", "America/New_York")
    if "followup_days" in ctx:
        ctx["followup_days"] = tuple(ctx["followup_days"])
    state, actions = engine.start(flow, now, context=engine.Context(**ctx),
                                  lang=case.get("lang", "en"), channel=case.get("channel", "sms"))
    transcript = [{"start": True, "out": _sent(actions)}]
    outcome = _outcome(actions)
    for step in case["steps"]:
        state = json.loads(json.dumps(state))  # survives storage between every step
        if "reply" in step:
            state, actions = engine.step(flow, state, engine.Reply(step["reply"]), now)
            entry = {"in": step["reply"]}
        else:
            now += parse_wait(step["wait"], flow.key, "golden")
            state, actions = engine.step(flow, state, engine.Tick(), now)
            entry = {"wait": step["wait"]}
        entry["out"] = _sent(actions)
        transcript.append(entry)
        outcome = _outcome(actions) or outcome
    return {"transcript": transcript, "outcome": outcome,
            "state_status": state["status"], "next_event": _iso(engine.next_event_at(state))}


def _sent(actions) -> list[str]:
    return [a.text for a in actions if isinstance(a, engine.Send)]


def _outcome(actions) -> dict | None:
    for a in actions:
        if isinstance(a, engine.Outcome):
            return {
                "status": a.status, "level": a.assessment.level.value,
                "reasons": list(a.assessment.reasons), "missing": list(a.assessment.missing),
                "answers": dict(a.answers), "advice": a.advice_key,
                "followups": [[f.kind, f.due_at.isoformat()] for f in a.followups],
            }
    return None


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


__all__ = ["run_case", "timedelta"]
