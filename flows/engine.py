"""The conversation engine: (flow, state, input, now) -> (new state, actions), with no I/O.

State is plain JSON-serializable data that carries its flow id and version, so a conversation
keeps the flow it started with and survives storage between every message. Time comes in as
`now`; nothing here reads a clock. CLINICAL.md §6 is implemented here: re-asks, "not answered"
after the third unclear reply, "not sure", timeouts, early end on an emergency answer, the
restart word and switching language.

Every reply is read once, by flows.reading.read (the order of §6 "What a reply can be"): an
opt-out is never recorded and does nothing here (the caller stops the conversation; this is
a second guard); an opt-out word in another sense ("my pain won't end") is no answer: by SMS
the first one of a conversation gets the "how to stop" hint and the question again, and any
later one counts as unclear. Only a reading of kind "answer" or "not_sure" is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from flows import reading, triage
from flows.loader import messages
from flows.model import Flow, Node
from flows.schedule import days_later, next_allowed

UNCLEAR_LIMIT = 3  # the third unclear reply records "not answered" and moves on


# ---- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    text: str


@dataclass(frozen=True)
class Tick:
    """The clock reached the state's next event (a reminder or the wait's timeout)."""


# ---- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    text: str
    kind: str  # intro | question | reask | fallback | reminder | stop_hint | advice
    node: str | None = None
    key: str | None = None  # message catalogue key (fallbacks, reminders, advice)


@dataclass(frozen=True)
class Record:
    field: str
    value: object  # None means "not answered"


@dataclass(frozen=True)
class FollowUpDue:
    kind: str  # first | final
    due_at: datetime


@dataclass(frozen=True)
class Outcome:
    assessment: triage.Assessment
    answers: Mapping[str, object]
    status: str  # completed | timed_out | emergency_stop
    followups: tuple[FollowUpDue, ...] = ()
    advice_key: str = ""


# ---- context ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What the flow needs to know about the clinic and the episode; stored in the state."""

    clinic: str
    emergency: str = "911"
    clinic_phone: str = ""
    timezone: str = "UTC"  # the patient's, for naming dates
    followup_days: tuple[int, int] = (28, 42)
    known: Mapping[str, object] = field(default_factory=dict)  # e.g. age from date of birth
    baseline_pain_score: int | None = None  # follow-up: the intake's score
    final_check: bool = False  # follow-up: is this the final (day 42) check
    next_check_at: str | None = None  # follow-up: ISO time of the final check, named in advice
    # An early check (the patient wrote in) soon after the last one: its opening does not say
    # "a few weeks ago" (CLINICAL.md §6); the flow's "<flow>.intro.recent" message opens it.
    recent_check: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["followup_days"] = list(self.followup_days)
        d["known"] = dict(self.known)
        return d


# ---- public functions ---------------------------------------------------------------------


def start(flow: Flow, now: datetime, *, context: Context, lang: str = "en",
          channel: str = "sms") -> tuple[dict, list]:
    if lang not in flow.languages:
        lang = flow.languages[0]
    state = {
        "flow": flow.id, "version": flow.version, "lang": lang, "channel": channel,
        "status": "active", "node": None, "answers": dict(context.known), "unclear": 0,
        "reminded": False, "remind_at": None, "timeout_at": None,
        "started_at": now.isoformat(), "context": context.to_dict(),
    }
    actions: list = []
    _enter(flow, state, flow.start, now, actions)
    return state, actions


def step(flow: Flow, state: Mapping, event: Reply | Tick, now: datetime) -> tuple[dict, list]:
    if (state["flow"], state["version"]) != (flow.id, flow.version):
        raise ValueError(f"state belongs to {state['flow']}.v{state['version']}, not {flow.key}")
    state = _copy(state)
    actions: list = []
    if state["status"] != "active":
        return state, actions
    if isinstance(event, Tick):
        _tick(flow, state, now, actions)
    elif isinstance(event, Reply):
        _reply(flow, state, event.text, now, actions)
    else:
        raise TypeError(f"unknown input {event!r}")
    return state, actions


def next_event_at(state: Mapping) -> datetime | None:
    """When the caller should send a Tick: the reminder, else the timeout, of the current wait."""
    if state["status"] != "active":
        return None
    when = state["timeout_at"] if state["reminded"] or not state["remind_at"] else state["remind_at"]
    return datetime.fromisoformat(when) if when else None


def current_question(flow: Flow, state: Mapping) -> Node | None:
    node = flow.nodes.get(state["node"]) if state.get("node") else None
    return node if node is not None and node.kind == "ask" and state["status"] == "active" else None


def render(template: str, context: Mapping, lang: str, **extra) -> str:
    values = {"clinic": context["clinic"], "emergency": context["emergency"],
              "clinic_phone": context.get("clinic_phone") or context["emergency"]}
    values.update(extra)
    return template.format_map(_Missing(values))


# ---- internals ----------------------------------------------------------------------------


class _Missing(dict):
    def __missing__(self, key):  # a text naming a date we do not have keeps a plain word
        return ""


def _copy(state: Mapping) -> dict:
    new = dict(state)
    new["answers"] = dict(state["answers"])
    return new


def _text(flow: Flow, node: Node, state: Mapping) -> str:
    return render(node.text_for(state["lang"], state["channel"]), state["context"], state["lang"])


def _opening(flow: Flow, node: Node, state: Mapping) -> str:
    recent = f"{flow.id}.intro.recent"
    if (node.id == flow.start and state["context"].get("recent_check")
            and state.get("channel") != "voice" and recent in messages().texts):
        return _message(recent, state)
    return _text(flow, node, state)


def _message(key: str, state: Mapping, **extra) -> str:
    catalogue = messages()
    if state.get("channel") == "voice" and f"voice.{key}" in catalogue.texts:
        key = f"voice.{key}"  # the variant written for the ear, where the catalogue has one
    return render(catalogue.get(key, state["lang"]), state["context"], state["lang"], **extra)


def _enter(flow: Flow, state: dict, node_id: str, now: datetime, actions: list) -> None:
    """Walk from node_id through say nodes and already-known answers to the next wait or the end."""
    while True:
        node = flow.nodes[node_id]
        if node.kind == "say":
            actions.append(Send(_opening(flow, node, state), "intro", node.id))
            node_id = node.next
        elif node.kind == "ask":
            if node.field in state["answers"]:
                node_id = node.next
                continue
            _ask(flow, node, state, now, actions, "question", _text(flow, node, state))
            return
        else:
            _finish(flow, state, now, actions, "completed")
            return


def _ask(flow: Flow, node: Node, state: dict, now: datetime, actions: list, kind: str,
         text: str, key: str | None = None) -> None:
    state["node"] = node.id
    state["remind_at"] = (now + node.remind_after).isoformat() if node.remind_after else None
    state["timeout_at"] = (now + node.timeout).isoformat()
    state["reminded"] = False
    actions.append(Send(text, kind, node.id, key))


def _reply(flow: Flow, state: dict, text: str, now: datetime, actions: list) -> None:
    node = flow.nodes[state["node"]]
    said = reading.read(text, lang=state["lang"], question_kind=node.parse)
    if said.kind == reading.OPT_OUT:
        return  # never an answer; the caller records the opt-out and ends the conversation
    if said.kind == reading.RESTART:
        state["answers"] = dict(state["context"]["known"])
        state["unclear"] = 0
        _enter(flow, state, _first_question(flow), now, actions)
        return
    if said.kind in (reading.LANG_ES, reading.LANG_EN):
        lang = said.kind[-2:]
        if lang in flow.languages:
            state["lang"] = lang
        _ask(flow, node, state, now, actions, "question", _text(flow, node, state))
        return
    if said.kind == reading.OTHER_SENSE and state.get("channel") != "voice" and not state.get(
        "stop_hint"
    ):
        state["stop_hint"] = True  # once a conversation: later ones count as unclear
        actions.append(Send(_message("stop_hint", state), "stop_hint", node.id, "stop_hint"))
        _ask(flow, node, state, now, actions, "question", _text(flow, node, state))
        return
    if said.kind in (reading.ANSWER, reading.NOT_SURE):
        _record(flow, node, state, said.value if said.kind == reading.ANSWER else None, now,
                actions)
        return
    state["unclear"] += 1
    if state["unclear"] >= UNCLEAR_LIMIT:
        _record(flow, node, state, None, now, actions)
    elif state["unclear"] == 1:
        _ask(flow, node, state, now, actions, "reask", _text(flow, node, state))
    else:
        key = f"fallback.{node.parse}"
        _ask(flow, node, state, now, actions, "fallback", _message(key, state), key)


def _record(flow: Flow, node: Node, state: dict, value: object, now: datetime,
            actions: list) -> None:
    state["answers"][node.field] = value
    state["unclear"] = 0
    actions.append(Record(node.field, value))
    if flow.end_on_emergency and value is True and _assess(flow, state).level is triage.Level.EMERGENCY:
        _finish(flow, state, now, actions, "emergency_stop")
        return
    _enter(flow, state, node.next, now, actions)


def _tick(flow: Flow, state: dict, now: datetime, actions: list) -> None:
    if state["timeout_at"] and now >= datetime.fromisoformat(state["timeout_at"]):
        _finish(flow, state, now, actions, "timed_out")
    elif (state["remind_at"] and not state["reminded"]
          and now >= datetime.fromisoformat(state["remind_at"])):
        state["reminded"] = True
        node = flow.nodes[state["node"]]
        actions.append(Send(_message("reminder", state), "reminder", node.id, "reminder"))
        actions.append(Send(_text(flow, node, state), "question", node.id))


def _first_question(flow: Flow) -> str:
    node = flow.nodes[flow.start]
    while node.kind == "say":
        node = flow.nodes[node.next]
    return node.id


def _end_kind(flow: Flow) -> str:
    return next(n.end for n in flow.nodes.values() if n.kind == "end")


def assess_state(flow: Flow, state: Mapping) -> triage.Assessment:
    """The assessment of the answers so far: the one place that picks `assess` or
    `assess_followup` for a flow (used when a conversation ends early, e.g. by an opt-out)."""
    return _assess(flow, state)


def _assess(flow: Flow, state: Mapping) -> triage.Assessment:
    answers = state["answers"]
    if _end_kind(flow) == "assess_followup":
        ctx = state["context"]
        return triage.assess_followup(answers, baseline_pain_score=ctx["baseline_pain_score"],
                                      final_check=ctx["final_check"])
    return triage.assess(answers)


def _finish(flow: Flow, state: dict, now: datetime, actions: list, status: str) -> None:
    assessment = _assess(flow, state)
    answers = {n.field: state["answers"].get(n.field) for n in flow.questions}
    answers.update(state["answers"])
    ctx = state["context"]
    followups: tuple[FollowUpDue, ...] = ()
    date_at: datetime | None = None
    followup = _end_kind(flow) == "assess_followup"
    if not followup and assessment.level is not triage.Level.EMERGENCY:
        # Due dates already respect quiet hours, so the date named in the advice is the real one.
        tz = ctx.get("timezone") or "UTC"
        followups = tuple(FollowUpDue(kind, next_allowed(days_later(now, days, tz), tz))
                          for kind, days in zip(("first", "final"), ctx["followup_days"], strict=True))
        date_at = followups[0].due_at
    elif followup and ctx.get("next_check_at"):
        date_at = datetime.fromisoformat(ctx["next_check_at"])
    key = advice_key(assessment, followup=followup)
    date = format_date(date_at, ctx.get("timezone") or "UTC", state["lang"]) if date_at else ""
    actions.append(Send(_message(key, state, date=date), "advice", None, key))
    actions.append(Outcome(assessment, answers, status, followups, key))
    state.update(status="done", node=None, remind_at=None, timeout_at=None, outcome=status,
                 level=assessment.level.value, reasons=list(assessment.reasons))


def advice_key(assessment: triage.Assessment, *, followup: bool) -> str:
    """Which advice text a patient gets for an assessment (CLINICAL.md §2, §4)."""
    level, primary = assessment.level, assessment.primary
    if level is triage.Level.EMERGENCY:
        return "advice.emergency"
    if level is triage.Level.URGENT:
        return "advice.urgent"
    if level is triage.Level.SOON:
        return {"INCOMPLETE": "advice.incomplete", "WORSENING": "advice.worsening",
                "PERSISTENT": "advice.persistent"}.get(primary, "advice.soon")
    if followup:
        return "advice.resolved" if primary == "RESOLVED" else "advice.improving"
    return "advice.self_care"


_DAYS = {
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "es": ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"],
}
_MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"],
    "es": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
           "septiembre", "octubre", "noviembre", "diciembre"],
}


def format_date(when: datetime, timezone: str, lang: str) -> str:
    """The patient's local calendar date, e.g. "Monday, March 2" / "lunes 2 de marzo"."""
    local = when.astimezone(ZoneInfo(timezone))
    day, month = _DAYS[lang][local.weekday()], _MONTHS[lang][local.month - 1]
    if lang == "es":
        return f"{day} {local.day} de {month}"
    return f"{day}, {month} {local.day}"
