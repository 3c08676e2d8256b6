"""Checks a flow definition before it is used: graph shape, fields, translations, SMS length, reading grade."""

from __future__ import annotations

import string
from collections.abc import Iterable

from flows.model import Flow, FlowError, Messages, Node
from flows.sms import count_segments
from flows.triage import ANSWER_FIELDS, FOLLOWUP_FIELDS

PARSE_KINDS = frozenset({"yes_no", "pain_score", "duration", "age", "status"})
END_KINDS = {"assess": ANSWER_FIELDS, "assess_followup": FOLLOWUP_FIELDS}
# `answer` and `days` are read back to a caller for confirmation ("You pressed 1 0.").
TEMPLATE_VARS = frozenset({"clinic", "emergency", "clinic_phone", "date", "link", "answer", "days"})

# SMS segment budgets per language (CLINICAL.md §7): Spanish accents force UCS-2.
BUDGETS = {
    "question": {"en": 2, "es": 3},
    "opening": {"en": 4, "es": 4},
    "advice": {"en": 4, "es": 4},
    "voice": {"en": None, "es": None},  # spoken on a call, never texted: no SMS segments
}
MAX_GRADE = 6.0

# The longest values a template variable may take, so budgets hold for every clinic.
WORST_CASE = {
    "en": {"clinic": "C" * 40, "emergency": "+44 20 7946 00", "clinic_phone": "+1 555 555 0100",
           "date": "Wednesday, September 30", "link": "https://" + "x" * 72,
           "answer": "1 2 0", "days": "120"},
    "es": {"clinic": "C" * 40, "emergency": "+44 20 7946 00", "clinic_phone": "+1 555 555 0100",
           "date": "miércoles 30 de septiembre", "link": "https://" + "x" * 72,
           "answer": "1 2 0", "days": "120"},
}
# Plain values for measuring reading grade (a long made-up name would skew the syllable count).
PLAIN = {"clinic": "Elm Clinic", "emergency": "911", "clinic_phone": "555 0100",
         "date": "May 2", "link": "the link", "answer": "1 0", "days": "14"}


def template_vars(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def reading_grade(text: str) -> float:
    import textstat  # imported late: loading its dictionary is slow and only validation needs it

    return textstat.flesch_kincaid_grade(text)


def check_text(flow: str, node: str | None, lang: str, text: str, budget: str) -> None:
    unknown = template_vars(text) - TEMPLATE_VARS
    if unknown:
        raise FlowError(flow, node, f"text '{lang}' uses unknown variable(s) {sorted(unknown)}")
    limit = BUDGETS[budget][lang]
    seg = count_segments(text.format_map(WORST_CASE[lang]))
    if limit is not None and seg.count > limit:
        raise FlowError(flow, node, f"text '{lang}' is {seg.count} SMS segments ({seg.encoding}, "
                        f"{seg.units} units with the longest clinic name), budget is {limit}")
    if lang == "en":
        grade = reading_grade(text.format_map(PLAIN))
        if grade > MAX_GRADE:
            raise FlowError(flow, node, f"English text reads at grade {grade:.1f}, above {MAX_GRADE:g}")


def _require_languages(flow: str, node: str, texts: dict, languages: Iterable[str], what: str):
    for lang in languages:
        if not texts.get(lang):
            raise FlowError(flow, node, f"missing '{lang}' translation of the {what}")


def validate_flow(flow: Flow, *, check_texts: bool = True) -> Flow:
    name = flow.key
    if flow.start not in flow.nodes:
        raise FlowError(name, None, f"start node '{flow.start}' does not exist")
    ends = {n.end for n in flow.nodes.values() if n.kind == "end"}
    if not ends:
        raise FlowError(name, None, "has no end node")
    if len(ends) > 1:
        raise FlowError(name, None, f"mixes end kinds {sorted(ends)}")
    (end_kind,) = ends
    if end_kind not in END_KINDS:
        raise FlowError(name, None, f"unknown end '{end_kind}'")
    known_fields = END_KINDS[end_kind]
    for node in flow.nodes.values():
        _validate_node(name, flow, node, known_fields)
        if check_texts:
            _validate_texts(name, flow, node)
    _check_reachable(name, flow)
    return flow


def _validate_node(name: str, flow: Flow, node: Node, known_fields) -> None:
    if node.kind in ("say", "ask"):
        if not node.next:
            raise FlowError(name, node.id, "dead end: no 'next' node")
        if node.next not in flow.nodes:
            raise FlowError(name, node.id, f"'next' names unknown node '{node.next}'")
    if node.kind == "ask":
        if node.field not in known_fields:
            raise FlowError(name, node.id, f"unknown answer field '{node.field}'")
        if node.parse not in PARSE_KINDS:
            raise FlowError(name, node.id, f"unknown parse kind '{node.parse}'")
        if node.timeout is None:
            raise FlowError(name, node.id, "a wait without a timeout")
        if node.remind_after is not None and node.remind_after >= node.timeout:
            raise FlowError(name, node.id, "reminder is not before the timeout")


def _validate_texts(name: str, flow: Flow, node: Node) -> None:
    if node.kind == "end":
        return
    what = "question" if node.kind == "ask" else "message"
    _require_languages(name, node.id, dict(node.text), flow.languages, what)
    budget = "question" if node.kind == "ask" else "opening"
    for lang in flow.languages:
        check_text(name, node.id, lang, node.text[lang], budget)
        if node.voice:
            if not node.voice.get(lang):
                raise FlowError(name, node.id, f"missing '{lang}' translation of the voice text")
            unknown = template_vars(node.voice[lang]) - TEMPLATE_VARS
            if unknown:
                raise FlowError(name, node.id, f"voice text '{lang}' uses unknown variable(s) "
                                f"{sorted(unknown)}")
            grade = reading_grade(node.voice[lang].format_map(PLAIN)) if lang == "en" else 0.0
            if grade > MAX_GRADE:
                raise FlowError(name, node.id, f"English voice text reads at grade {grade:.1f}, "
                                f"above {MAX_GRADE:g}")


def _check_reachable(name: str, flow: Flow) -> None:
    # Every path must terminate: following 'next' from the start must reach an end node. Checked
    # first, so a loop is reported as a loop rather than as the end node it cuts off.
    node, seen = flow.nodes[flow.start], set()
    while node.kind != "end":
        if node.id in seen:
            raise FlowError(name, node.id, "loops forever: no path from it reaches an end node")
        seen.add(node.id)
        node = flow.nodes[node.next]
    seen.add(node.id)
    unreachable = [n for n in flow.nodes if n not in seen]
    if unreachable:
        raise FlowError(name, unreachable[0], "unreachable from the start node")


def validate_messages(messages: Messages, *, check_texts: bool = True) -> Messages:
    name = f"messages.v{messages.version}"
    for key, texts in messages.texts.items():
        budget = messages.budgets.get(key)
        if budget not in BUDGETS:
            raise FlowError(name, key, f"unknown budget '{budget}'")
        _require_languages(name, key, dict(texts), messages.languages, "message")
        if check_texts:
            for lang in messages.languages:
                check_text(name, key, lang, texts[lang], budget)
    return messages
