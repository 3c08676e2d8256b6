"""Flow validation: each broken definition is a load error naming the flow, the node and the
problem; every shipped flow and message loads and fits its SMS and reading-grade budgets."""

from __future__ import annotations

import copy

import pytest

from flows.loader import flow_from_dict, get_flow, load_all, messages, messages_from_dict
from flows.model import FlowError
from flows.sms import count_segments
from flows.validator import (
    BUDGETS,
    MAX_GRADE,
    PLAIN,
    WORST_CASE,
    reading_grade,
    validate_flow,
    validate_messages,
)

YES_NO_EN = "Do you have chest pain? Reply YES or NO."
YES_NO_ES = "¿Tiene dolor de pecho? Responda SÍ o NO."
FILLER = "We can go now. " * 100  # reads far below grade 6, plain GSM-7


def good_flow() -> dict:
    return {
        "id": "tiny",
        "version": 1,
        "languages": ["en", "es"],
        "start": "intro",
        "end_on_emergency": True,
        "waits": {"remind_after": "24h", "timeout": "72h"},
        "nodes": [
            {
                "id": "intro",
                "say": {"en": "{clinic}: Hi! We have a few short questions.",
                        "es": "{clinic}: Hola. Tenemos unas preguntas cortas."},
                "next": "chest",
            },
            {
                "id": "chest",
                "ask": "chest_symptoms",
                "parse": "yes_no",
                "text": {"en": YES_NO_EN, "es": YES_NO_ES},
                "next": "done",
            },
            {"id": "done", "end": "assess"},
        ],
    }


def good_messages() -> dict:
    return {
        "version": 9,
        "languages": ["en", "es"],
        "messages": {
            "advice.soon": {"budget": "advice", "en": "Please book a visit with {clinic}.",
                            "es": "Pida una cita con {clinic}."},
        },
    }


def node(data: dict, node_id: str) -> dict:
    return next(n for n in data["nodes"] if n["id"] == node_id)


def load(data: dict):
    return validate_flow(flow_from_dict(data))


def sized(units: int, lang: str, head: str = "{clinic}: ") -> str:
    """A template whose worst-case rendering (40-character clinic name) is exactly `units` long."""
    rendered_head = head.format_map(WORST_CASE[lang])
    text = head + FILLER[: units - len(rendered_head)]
    assert count_segments(text.format_map(WORST_CASE[lang])).units == units
    return text


def test_the_base_flow_and_messages_used_below_are_valid():
    flow = load(good_flow())
    assert flow.key == "tiny.v1" and [n.id for n in flow.questions] == ["chest"]
    validate_messages(messages_from_dict(good_messages()))


# ---- one broken flow per problem ------------------------------------------------------------


def _unreachable(d):
    d["nodes"].insert(2, {"id": "orphan", "ask": "weight_loss", "parse": "yes_no",
                          "text": {"en": YES_NO_EN, "es": YES_NO_ES}, "next": "done"})


def _dead_end(d):
    del node(d, "chest")["next"]


def _unknown_next(d):
    node(d, "chest")["next"] = "nowhere"


def _no_timeout(d):
    del d["waits"]


def _only_a_reminder(d):
    d["waits"] = {"remind_after": "24h"}


def _reminder_after_timeout(d):
    node(d, "chest")["waits"] = {"remind_after": "72h", "timeout": "24h"}


def _unknown_field(d):
    node(d, "chest")["ask"] = "favourite_colour"


def _followup_field_in_intake(d):
    node(d, "chest")["ask"] = "status"


def _unknown_parse(d):
    node(d, "chest")["parse"] = "colour"


def _no_es_question(d):
    del node(d, "chest")["text"]["es"]


def _empty_es_question(d):
    node(d, "chest")["text"]["es"] = ""


def _no_en_say(d):
    del node(d, "intro")["say"]["en"]


def _no_es_voice(d):
    node(d, "intro")["voice"] = {"en": "Hello. This is {clinic}."}


def _hard_english(d):
    node(d, "chest")["text"]["en"] = (
        "Have you experienced unexplained, progressive musculoskeletal deterioration "
        "accompanied by neurological abnormalities? Reply YES or NO."
    )


def _hard_english_voice(d):
    node(d, "intro")["voice"] = {
        "en": "Consequently, physiotherapeutic interventions demonstrate questionable effectiveness.",
        "es": "Hola.",
    }


def _unknown_var(d):
    node(d, "chest")["text"]["en"] = "{patient}, do you have chest pain? Reply YES or NO."


def _unknown_var_es(d):
    node(d, "intro")["say"]["es"] = "{clinica}: Hola."


def _unknown_var_voice(d):
    node(d, "intro")["voice"] = {"en": "Hello {name}.", "es": "Hola."}


def _loop(d):
    node(d, "chest")["next"] = "intro"


def _self_loop(d):
    node(d, "chest")["next"] = "chest"


def _no_end(d):
    d["nodes"].pop()
    node(d, "chest")["next"] = "intro"


def _bad_start(d):
    d["start"] = "nowhere"


def _mixed_ends(d):
    node(d, "chest")["next"] = "also_done"
    d["nodes"].append({"id": "also_done", "end": "assess_followup"})


def _unknown_end(d):
    node(d, "done")["end"] = "shrug"


BROKEN = [
    # (case, mutation, node named, words of the problem)
    ("unreachable node", _unreachable, "orphan", "unreachable"),
    ("dead end", _dead_end, "chest", "dead end: no 'next'"),
    ("next names an unknown node", _unknown_next, "chest", "unknown node 'nowhere'"),
    ("wait without a timeout", _no_timeout, "chest", "a wait without a timeout"),
    ("wait with only a reminder", _only_a_reminder, "chest", "a wait without a timeout"),
    ("reminder after the timeout", _reminder_after_timeout, "chest", "reminder is not before"),
    ("unknown answer field", _unknown_field, "chest", "unknown answer field 'favourite_colour'"),
    ("follow-up field in an intake", _followup_field_in_intake, "chest",
     "unknown answer field 'status'"),
    ("unknown parse kind", _unknown_parse, "chest", "unknown parse kind 'colour'"),
    ("missing Spanish question", _no_es_question, "chest",
     "missing 'es' translation of the question"),
    ("empty Spanish question", _empty_es_question, "chest",
     "missing 'es' translation of the question"),
    ("missing English message", _no_en_say, "intro", "missing 'en' translation of the message"),
    ("missing Spanish voice text", _no_es_voice, "intro",
     "missing 'es' translation of the voice text"),
    ("English above grade 6", _hard_english, "chest", "English text reads at grade"),
    ("English voice above grade 6", _hard_english_voice, "intro",
     "English voice text reads at grade"),
    ("unknown template variable", _unknown_var, "chest", "unknown variable(s) ['patient']"),
    ("unknown template variable (es)", _unknown_var_es, "intro",
     "text 'es' uses unknown variable(s) ['clinica']"),
    ("unknown template variable (voice)", _unknown_var_voice, "intro",
     "voice text 'en' uses unknown variable(s) ['name']"),
    ("loop with no end", _loop, "intro", "loops forever"),
    ("node looping on itself", _self_loop, "chest", "loops forever"),
]


@pytest.mark.parametrize(("mutate", "node_id", "problem"), [c[1:] for c in BROKEN],
                         ids=[c[0] for c in BROKEN])
def test_a_broken_flow_is_a_load_error_naming_flow_node_and_problem(mutate, node_id, problem):
    data = good_flow()
    mutate(data)
    with pytest.raises(FlowError) as caught:
        load(data)
    err = caught.value
    assert (err.flow, err.node) == ("tiny.v1", node_id), str(err)
    assert problem in err.problem, str(err)
    assert str(err).startswith(f"tiny.v1, node '{node_id}': ")


FLOW_LEVEL = [
    ("no end node", _no_end, "has no end node"),
    ("start names no node", _bad_start, "start node 'nowhere' does not exist"),
    ("mixed end kinds", _mixed_ends, "mixes end kinds"),
    ("unknown end kind", _unknown_end, "unknown end 'shrug'"),
]


@pytest.mark.parametrize(("mutate", "problem"), [c[1:] for c in FLOW_LEVEL],
                         ids=[c[0] for c in FLOW_LEVEL])
def test_a_flow_level_problem_names_the_flow_and_the_problem(mutate, problem):
    data = good_flow()
    mutate(data)
    with pytest.raises(FlowError) as caught:
        load(data)
    assert caught.value.flow == "tiny.v1" and caught.value.node is None
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("mutate", "node_id", "problem"),
    [
        (lambda d: d.pop("start"), None, "missing 'start'"),
        (lambda d: d["nodes"].append({"id": "chest", "end": "assess"}), "chest",
         "duplicate node id"),
        (lambda d: d["nodes"].append({"id": "odd", "goto": "x"}), "odd",
         "none of ask / say / end"),
        (lambda d: d["nodes"].append({"say": {"en": "x"}}), None, "a node has no id"),
        (lambda d: node(d, "chest").update(waits={"timeout": "3 weeks"}), "chest",
         "bad wait '3 weeks'"),
    ],
    ids=["missing start", "duplicate id", "unknown node kind", "node without id", "bad wait"],
)
def test_a_malformed_definition_fails_while_reading_it(mutate, node_id, problem):
    data = good_flow()
    mutate(data)
    with pytest.raises(FlowError) as caught:
        flow_from_dict(data)
    assert caught.value.flow == "tiny.v1" and caught.value.node == node_id
    assert problem in str(caught.value)


# ---- SMS segment budgets, measured with the 40-character worst-case clinic name ------------


def test_the_worst_case_clinic_name_is_40_characters():
    assert len(WORST_CASE["en"]["clinic"]) == len(WORST_CASE["es"]["clinic"]) == 40


BUDGET_EDGES = [
    # (node, field of its texts, lang, head, budget in segments, units per segment)
    ("chest", "text", "en", "", 2, 153),
    ("chest", "text", "en", "{clinic}: ", 2, 153),
    ("chest", "text", "es", "¿Está bien? ", 3, 67),  # "á" forces UCS-2
    ("intro", "say", "en", "{clinic}: ", 4, 153),
    ("intro", "say", "es", "{clinic}: Está bien. ", 4, 67),
]


@pytest.mark.parametrize(("node_id", "key", "lang", "head", "budget", "per_segment"),
                         BUDGET_EDGES, ids=[f"{e[0]}-{e[2]}-{e[4]}-{bool(e[3])}"
                                            for e in BUDGET_EDGES])
def test_a_text_over_its_segment_budget_is_a_load_error(node_id, key, lang, head, budget,
                                                        per_segment):
    kind = "question" if key == "text" else "opening"
    assert BUDGETS[kind][lang] == budget
    limit = budget * per_segment
    at_limit, over = good_flow(), good_flow()
    node(at_limit, node_id)[key][lang] = sized(limit, lang, head)
    node(over, node_id)[key][lang] = sized(limit + 1, lang, head)
    load(at_limit)  # exactly at the budget: fine
    with pytest.raises(FlowError) as caught:
        load(over)
    err = caught.value
    assert (err.flow, err.node) == ("tiny.v1", node_id)
    assert f"is {budget + 1} SMS segments" in err.problem and f"budget is {budget}" in err.problem
    assert f"text '{lang}'" in err.problem and str(limit + 1) in err.problem


def test_the_budget_holds_for_the_longest_clinic_name_not_the_demo_one():
    data = good_flow()
    text = sized(2 * 153 + 1, "en")
    node(data, "chest")["text"]["en"] = text
    assert count_segments(text.format_map(PLAIN)).count == 2  # fine with a short name...
    with pytest.raises(FlowError, match="3 SMS segments"):
        load(data)  # ...but not with a 40-character one


@pytest.mark.parametrize("lang, per_segment", [("en", 153), ("es", 67)])
def test_an_advice_message_over_four_segments_is_a_load_error(lang, per_segment):
    head = "{clinic}: " if lang == "en" else "{clinic}: Está bien. "
    at_limit, over = good_messages(), good_messages()
    at_limit["messages"]["advice.soon"][lang] = sized(4 * per_segment, lang, head)
    over["messages"]["advice.soon"][lang] = sized(4 * per_segment + 1, lang, head)
    validate_messages(messages_from_dict(at_limit))
    with pytest.raises(FlowError) as caught:
        validate_messages(messages_from_dict(over))
    assert (caught.value.flow, caught.value.node) == ("messages.v9", "advice.soon")
    assert "is 5 SMS segments" in caught.value.problem and "budget is 4" in caught.value.problem


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda m: m["advice.soon"].pop("es"), "missing 'es' translation of the message"),
        (lambda m: m["advice.soon"].update(budget="tweet"), "unknown budget 'tweet'"),
        (lambda m: m["advice.soon"].update(en="See {doctor}."), "unknown variable(s) ['doctor']"),
        (lambda m: m["advice.soon"].update(
            en="Musculoskeletal deterioration necessitates comprehensive professional evaluation."),
         "English text reads at grade"),
    ],
    ids=["missing translation", "unknown budget", "unknown variable", "reading grade"],
)
def test_a_broken_message_is_a_load_error_naming_its_key(mutate, problem):
    data = good_messages()
    mutate(data["messages"])
    with pytest.raises(FlowError) as caught:
        validate_messages(messages_from_dict(data))
    assert (caught.value.flow, caught.value.node) == ("messages.v9", "advice.soon")
    assert problem in caught.value.problem


def test_validation_does_not_change_the_definition():
    data = good_flow()
    before = copy.deepcopy(data)
    load(data)
    assert data == before


# ---- what ships ------------------------------------------------------------------------------


def test_every_shipped_flow_and_message_loads():
    load_all()
    for flow_id in ("intake", "followup"):
        flow = get_flow(flow_id)
        assert flow.languages == ("en", "es")
        assert flow.end_on_emergency
        assert flow.questions and all(q.timeout for q in flow.questions)
    assert {"en", "es"} <= set(messages().languages)


def _shipped_texts():
    """(where, lang, template, budget or None for spoken text) for every text a patient gets."""
    rows = []
    for flow_id in ("intake", "followup"):
        flow = get_flow(flow_id)
        for n in flow.nodes.values():
            if n.kind == "end":
                continue
            budget = "question" if n.kind == "ask" else "opening"
            for lang in flow.languages:
                rows.append((f"{flow.key}:{n.id}", lang, n.text[lang], budget))
                if lang in n.voice:
                    rows.append((f"{flow.key}:{n.id} (voice)", lang, n.voice[lang], None))
    catalogue = messages()
    for key, texts in catalogue.texts.items():
        for lang in catalogue.languages:
            budget = catalogue.budgets[key]  # "voice" texts are spoken: no SMS budget
            rows.append((f"messages.v{catalogue.version}:{key}", lang, texts[lang],
                         None if budget == "voice" else budget))
    return rows


def test_every_shipped_text_is_within_its_segment_and_grade_budget():
    rows = _shipped_texts()
    print(f"\n{'text':<48} {'lang':<4} {'enc':<5} {'units':>5} {'seg':>3} {'max':>3} {'grade':>5}")
    failures = []
    for where, lang, template, budget in rows:
        grade = reading_grade(template.format_map(PLAIN)) if lang == "en" else None
        if budget is None:
            seg, limit, enc, units = "-", "-", "voice", "-"
        else:
            measured = count_segments(template.format_map(WORST_CASE[lang]))
            seg, limit, enc, units = (measured.count, BUDGETS[budget][lang], measured.encoding,
                                      measured.units)
            if seg > limit:
                failures.append(f"{where} {lang}: {seg} segments > {limit}")
        if grade is not None and grade > MAX_GRADE:
            failures.append(f"{where} {lang}: grade {grade:.1f} > {MAX_GRADE:g}")
        shown = f"{grade:5.1f}" if grade is not None else "    -"
        print(f"{where:<48} {lang:<4} {enc:<5} {units!s:>5} {seg!s:>3} {limit!s:>3} {shown}")
    print(f"{len(rows)} texts measured")
    assert not failures, failures
    assert len(rows) >= 2 * (18 + 11 + 2 + 20)  # every node and message, in both languages
