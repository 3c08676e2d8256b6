"""The conversation engine (flows/engine.py): CLINICAL.md §6 rules one by one, then the §6
invariant (point 5) over garbled and timeout inputs at every wait of both flows, then random
sequences of replies and ticks (hypothesis)."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows import engine, reading, triage
from flows.engine import UNCLEAR_LIMIT, Context, Outcome, Record, Reply, Send, Tick
from flows.loader import get_flow, messages

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
FLOWS = ("intake", "followup")
LANGS = ("en", "es")
VALID = {"yes_no": "no", "age": "40", "duration": "3 days", "pain_score": "3", "status": "2"}
EMERGENCY_FIELDS = ("limb_weakness", "bowel_bladder", "chest_symptoms")

_rng = random.Random(20260302)
_NOISE = "!\"#$%&'()*+,-.:;<=>?@[\\]^_`{|}~ \t\n" + "🙃🤷😀💥★☆■□▲△◆◇"
GARBLED = (
    "",
    "???",
    "maybe",
    "🤷\u200d♀️🙃",
    "".join(_rng.choice(_NOISE) for _ in range(500)),  # no letters or digits: never a word
    "yes and no",
    "not sure",
)


# ---- helpers --------------------------------------------------------------------------------


def context(**kw) -> Context:
    kw.setdefault("clinic", "Elm Clinic")
    kw.setdefault("clinic_phone", "555-0100")
    return Context(**kw)


def followup_context(**kw) -> Context:
    kw.setdefault("baseline_pain_score", 6)
    kw.setdefault("known", {"cancer_history": False})
    return context(**kw)


def begin(flow_id: str, lang: str = "en", now: datetime = NOW, **kw):
    flow = get_flow(flow_id)
    ctx = followup_context(**kw) if flow_id == "followup" else context(**kw)
    state, actions = engine.start(flow, now, context=ctx, lang=lang)
    return flow, state, actions


def sends(actions) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def records(actions) -> list[Record]:
    return [a for a in actions if isinstance(a, Record)]


def outcome_of(actions) -> Outcome | None:
    found = [a for a in actions if isinstance(a, Outcome)]
    assert len(found) <= 1
    return found[0] if found else None


def reply(flow, state, text, now=NOW):
    return engine.step(flow, state, Reply(text), now)


def question(flow, state):
    return flow.nodes[state["node"]]


def reach(flow, state, node_id: str):
    """Answer every question before `node_id` with a plain valid value ("no", "40", ...)."""
    while state["node"] != node_id:
        assert state["status"] == "active"
        state, _ = reply(flow, state, VALID[question(flow, state).parse])
    return state


def assert_advice_with_outcome(actions) -> Outcome:
    """An outcome always comes with advice: the Send just before it, with the outcome's key."""
    i = next(i for i, a in enumerate(actions) if isinstance(a, Outcome))
    out, advice = actions[i], actions[i - 1]
    assert isinstance(advice, Send) and advice.kind == "advice"
    assert advice.key == out.advice_key and advice.text.strip()
    return out


# ---- start ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("flow_id", FLOWS)
def test_start_sends_the_opening_then_the_first_question(flow_id, lang):
    flow, state, actions = begin(flow_id, lang)
    intro, first = sends(actions)
    assert intro.kind == "intro" and intro.text.startswith("Elm Clinic: ")
    assert first.kind == "question" and first.node == state["node"]
    assert first.text == question(flow, state).text[lang]
    assert (state["flow"], state["version"], state["lang"]) == (flow.id, flow.version, lang)
    assert state["status"] == "active" and state["unclear"] == 0


def test_an_unknown_language_falls_back_to_the_flows_first():
    flow, state, _ = begin("intake", "fr")
    assert state["lang"] == "en"


# ---- re-asks (CLINICAL.md §6) -------------------------------------------------------------


REASK_CASES = [
    ("intake", "chest_symptoms", "en"),
    ("intake", "age_years", "en"),
    ("intake", "duration_days", "es"),
    ("intake", "pain_score", "en"),
    ("followup", "status", "en"),
    ("followup", "status", "es"),
    ("followup", "night_pain", "es"),
]


@pytest.mark.parametrize(("flow_id", "node_id", "lang"), REASK_CASES)
def test_unclear_reask_same_words_then_fallback_then_not_answered_and_the_flow_moves_on(
    flow_id, node_id, lang
):
    flow, state, _ = begin(flow_id, lang)
    state = reach(flow, state, node_id)
    node = flow.nodes[node_id]
    next_node = flow.nodes[node.next]

    state, actions = reply(flow, state, "maybe")
    (reask,) = sends(actions)
    assert (reask.kind, reask.node, reask.text) == ("reask", node_id, node.text[lang])
    assert not records(actions) and state["unclear"] == 1 and state["node"] == node_id

    state, actions = reply(flow, state, "maybe")
    (fallback,) = sends(actions)
    key = f"fallback.{node.parse}"
    assert (fallback.kind, fallback.key) == ("fallback", key)
    assert fallback.text == messages().get(key, lang) != node.text[lang]
    assert not records(actions) and state["unclear"] == 2

    state, actions = reply(flow, state, "maybe")
    assert records(actions) == [Record(node.field, None)]
    assert state["answers"][node.field] is None and state["unclear"] == 0
    if next_node.kind == "end":
        assert outcome_of(actions).status == "completed"
    else:
        (asked,) = sends(actions)
        assert (asked.kind, asked.node) == ("question", next_node.id)
        assert state["status"] == "active"
    assert UNCLEAR_LIMIT == 3


def test_a_clear_answer_after_a_reask_is_recorded_and_the_count_starts_again():
    flow, state, _ = begin("intake")
    state, _ = reply(flow, state, "???")
    state, actions = reply(flow, state, "nope")
    assert records(actions) == [Record("chest_symptoms", False)]
    assert state["unclear"] == 0
    state, actions = reply(flow, state, "???")
    assert [s.kind for s in sends(actions)] == ["reask"]  # a new question gets its own re-ask


@pytest.mark.parametrize(
    ("lang", "text"),
    [("en", "not sure"), ("en", "I don't know"), ("es", "no sé"), ("es", "no lo sé"),
     ("en", "no sé")],
)
def test_not_sure_is_not_answered_at_once(lang, text):
    flow, state, _ = begin("intake", lang)
    state, actions = reply(flow, state, text)
    assert records(actions) == [Record("chest_symptoms", None)]
    (asked,) = sends(actions)
    assert (asked.kind, asked.node) == ("question", "limb_weakness")


@pytest.mark.parametrize("node_id", ["age_years", "duration_days", "pain_score"])
def test_not_sure_to_a_number_question_is_not_answered_too(node_id):
    flow, state, _ = begin("intake")
    state = reach(flow, state, node_id)
    state, actions = reply(flow, state, "not sure")
    assert records(actions) == [Record(node_id, None)]


# ---- timeouts and reminders ---------------------------------------------------------------


def test_reminder_before_the_timeout_and_next_event_at():
    flow, state, _ = begin("intake")
    assert engine.next_event_at(state) == NOW + timedelta(hours=24)
    state, actions = engine.step(flow, state, Tick(), NOW + timedelta(hours=24) - timedelta(seconds=1))
    assert actions == [] and engine.next_event_at(state) == NOW + timedelta(hours=24)

    state, actions = engine.step(flow, state, Tick(), NOW + timedelta(hours=24))
    reminder, again = sends(actions)
    assert (reminder.kind, reminder.key) == ("reminder", "reminder")
    assert reminder.text.startswith("Elm Clinic: ")
    assert (again.kind, again.node, again.text) == ("question", "chest_symptoms",
                                                    question(flow, state).text["en"])
    assert engine.next_event_at(state) == NOW + timedelta(hours=72)  # from when it was asked

    state, actions = engine.step(flow, state, Tick(), NOW + timedelta(hours=48))
    assert actions == []  # one reminder per question
    assert engine.next_event_at(state) == NOW + timedelta(hours=72)


def test_an_answer_gives_the_next_question_its_own_reminder_and_timeout():
    flow, state, _ = begin("intake")
    later = NOW + timedelta(hours=30)
    state, _ = engine.step(flow, state, Tick(), NOW + timedelta(hours=24))
    state, _ = reply(flow, state, "no", later)
    assert state["reminded"] is False
    assert engine.next_event_at(state) == later + timedelta(hours=24)
    assert state["timeout_at"] == (later + timedelta(hours=72)).isoformat()


def test_the_follow_up_status_question_waits_seven_days():
    flow, state, _ = begin("followup")
    assert question(flow, state).field == "status"
    assert state["timeout_at"] == (NOW + timedelta(days=7)).isoformat()
    state, actions = engine.step(flow, state, Tick(), NOW + timedelta(days=7) - timedelta(minutes=1))
    assert [s.kind for s in sends(actions)] == ["reminder", "question"]
    state, actions = engine.step(flow, state, Tick(), NOW + timedelta(days=7))
    assert outcome_of(actions).status == "timed_out"


def test_timeout_ends_with_the_answers_so_far_assessed_incomplete():
    flow, state, _ = begin("intake")
    for _ in range(3):
        state, _ = reply(flow, state, "no")
    assert question(flow, state).field == "cancer_history"
    timeout = datetime.fromisoformat(state["timeout_at"])
    state, actions = engine.step(flow, state, Tick(), timeout - timedelta(seconds=1))
    assert outcome_of(actions) is None  # the reminder only
    state, actions = engine.step(flow, state, Tick(), timeout)
    out = assert_advice_with_outcome(actions)
    assert out.status == "timed_out"
    assert out.assessment.level is triage.Level.SOON
    assert out.assessment.primary == "INCOMPLETE" and out.advice_key == "advice.incomplete"
    assert set(out.assessment.missing) == {"cancer_history", "numbness_tingling", "weight_loss",
                                           "fever_chills", "night_sweats"}
    assert {k: out.answers[k] for k in EMERGENCY_FIELDS} == dict.fromkeys(EMERGENCY_FIELDS, False)
    assert out.answers["pain_score"] is None  # every field listed, unanswered ones as None
    assert [f.kind for f in out.followups] == ["first", "final"]
    assert state["status"] == "done" and state["outcome"] == "timed_out"
    assert engine.next_event_at(state) is None
    assert engine.step(flow, state, Reply("no"), timeout)[1] == []  # finished: nothing more
    assert engine.step(flow, state, Tick(), timeout + timedelta(days=9))[1] == []


def test_follow_ups_keep_the_local_hour_of_the_intake_across_a_daylight_saving_change():
    # Monday 5 October 2026, 14:00 in New York (EDT); clocks go back on 1 November.
    start = datetime(2026, 10, 5, 18, 0, tzinfo=UTC)
    flow, state, _ = begin("intake", now=start, timezone="America/New_York")
    while state["status"] == "active":
        state, actions = reply(flow, state, VALID[question(flow, state).parse], now=start)
    out = assert_advice_with_outcome(actions)
    new_york = ZoneInfo("America/New_York")
    assert [(f.kind, f.due_at.astimezone(new_york)) for f in out.followups] == [
        ("first", datetime(2026, 11, 2, 14, 0, tzinfo=new_york)),  # day 28, 14:00 EST
        ("final", datetime(2026, 11, 16, 14, 0, tzinfo=new_york))]
    assert "Monday, November 2" in sends(actions)[-1].text


def test_a_late_tick_past_the_timeout_ends_without_a_reminder():
    flow, state, _ = begin("intake")
    state, actions = engine.step(flow, state, Tick(), NOW + timedelta(days=30))
    assert [s.kind for s in sends(actions)] == ["advice"]
    assert outcome_of(actions).status == "timed_out"


# ---- emergency ------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("flow_id", "field"),
                         [(f, x) for f in FLOWS for x in EMERGENCY_FIELDS])
def test_an_emergency_answer_ends_the_flow_at_once_with_emergency_advice(flow_id, field, lang):
    flow, state, _ = begin(flow_id, lang)
    state = reach(flow, state, field)
    state, actions = reply(flow, state, "yes" if lang == "en" else "sí")
    assert records(actions) == [Record(field, True)]
    out = assert_advice_with_outcome(actions)
    assert out.status == "emergency_stop" and out.advice_key == "advice.emergency"
    assert out.assessment.level is triage.Level.EMERGENCY and out.followups == ()
    assert sends(actions)[-1].text == engine.render(messages().get("advice.emergency", lang),
                                                    state["context"], lang)
    assert "911" in sends(actions)[-1].text
    assert state["status"] == "done" and state["level"] == "emergency"


def test_numbness_ends_the_intake_at_once_only_with_a_cancer_history():
    flow, state, _ = begin("intake")
    state = reach(flow, state, "cancer_history")
    with_cancer, _ = reply(flow, state, "yes")
    _, actions = reply(flow, with_cancer, "yes")
    assert outcome_of(actions).status == "emergency_stop"
    without, _ = reply(flow, state, "no")
    after, actions = reply(flow, without, "yes")
    assert outcome_of(actions) is None and after["status"] == "active"  # urgent, not emergency


# ---- restart and language -------------------------------------------------------------------


@pytest.mark.parametrize("word", ["restart", "START OVER", "reiniciar"])
def test_the_restart_word_clears_the_answers_and_asks_the_first_question_again(word):
    flow, state, _ = begin("intake", known={"age_years": 61})
    for _ in range(4):
        state, _ = reply(flow, state, "no")
    state, _ = reply(flow, state, "maybe")
    state, actions = reply(flow, state, word)
    (asked,) = sends(actions)
    assert (asked.kind, asked.node) == ("question", "chest_symptoms")
    assert not records(actions)
    assert state["answers"] == {"age_years": 61} and state["unclear"] == 0


@pytest.mark.parametrize(("word", "lang"), [("español", "es"), ("Spanish", "es"),
                                            ("english", "en"), ("inglés", "en")])
def test_switching_language_asks_the_same_question_in_the_new_language(word, lang):
    start_lang = "en" if lang == "es" else "es"
    flow, state, _ = begin("intake", start_lang)
    state, _ = reply(flow, state, "no")
    state, actions = reply(flow, state, word)
    (asked,) = sends(actions)
    node = question(flow, state)
    assert (asked.kind, asked.node, asked.text) == ("question", "limb_weakness", node.text[lang])
    assert state["lang"] == lang and not records(actions)
    state, actions = reply(flow, state, "no")
    assert sends(actions)[0].text == question(flow, state).text[lang]
    state, _ = reply(flow, state, "???")
    state, actions = reply(flow, state, "???")
    assert sends(actions)[0].text == messages().get("fallback.yes_no", lang)


# ---- known answers --------------------------------------------------------------------------


def _answer_all(flow, state, value_for=lambda node: VALID[node.parse]):
    asked, actions = [], []
    while state["status"] == "active":
        node = question(flow, state)
        asked.append(node.field)
        state, actions = reply(flow, state, value_for(node))
    return state, asked, actions


def test_a_known_age_from_the_date_of_birth_is_not_asked():
    flow, state, _ = begin("intake", known={"age_years": 61})
    state, asked, actions = _answer_all(
        flow, state, lambda n: "yes" if n.field in ("night_pain", "progressive") else VALID[n.parse])
    assert "age_years" not in asked and len(asked) == len(flow.questions) - 1
    out = assert_advice_with_outcome(actions)
    assert out.answers["age_years"] == 61
    assert out.assessment.primary == "MANY_FEATURES"  # 2 features at 50 or older


@pytest.mark.parametrize(("cancer", "level"), [(True, "urgent"), (False, "soon")])
def test_a_follow_up_uses_the_intakes_cancer_history_without_asking(cancer, level):
    flow, state, _ = begin("followup", known={"cancer_history": cancer}, final_check=True)
    state, asked, actions = _answer_all(
        flow, state, lambda n: "3" if n.field == "status" else VALID[n.parse])
    assert "cancer_history" not in asked
    out = assert_advice_with_outcome(actions)
    assert out.answers["cancer_history"] is cancer
    assert (out.assessment.primary, out.assessment.level.value) == ("PERSISTENT", level)
    assert out.followups == ()


# ---- versions, storage, determinism ------------------------------------------------------


def test_a_conversation_keeps_its_flow_version():
    flow, state, _ = begin("intake")
    newer = dict(state, version=flow.version + 1)
    with pytest.raises(KeyError, match="no flow 'intake' at version 2"):
        get_flow(newer["flow"], newer["version"])
    with pytest.raises(ValueError, match="state belongs to intake.v2, not intake.v1"):
        engine.step(flow, newer, Reply("no"), NOW)
    with pytest.raises(ValueError, match="not followup.v1"):
        engine.step(get_flow("followup"), state, Reply("no"), NOW)
    assert get_flow(state["flow"], state["version"]) is flow


def test_an_unknown_input_is_a_type_error():
    flow, state, _ = begin("intake")
    with pytest.raises(TypeError):
        engine.step(flow, state, "no", NOW)


def test_step_does_not_change_the_state_it_is_given():
    flow, state, _ = begin("intake")
    before = copy.deepcopy(state)
    engine.step(flow, state, Reply("no"), NOW)
    engine.step(flow, state, Tick(), NOW + timedelta(days=9))
    assert state == before


SCRIPT = [("reply", "no"), ("reply", "maybe"), ("tick", 25), ("reply", "nope"),
          ("reply", "español"), ("reply", "no"), ("reply", "no sé"), ("reply", "no"),
          ("reply", "no"), ("reply", "no"), ("reply", "no"), ("reply", "52"), ("reply", "dos semanas"),
          ("reply", "no"), ("reply", "7/10"), ("reply", "sí"), ("reply", "no"),
          ("reply", "sí"), ("reply", "no"), ("reply", "sí")]


def run_script(flow_id: str, script, *, round_trip: bool):
    flow, state, actions = begin(flow_id)
    now, log = NOW, [(copy.deepcopy(state), actions)]
    for kind, value in script:
        if round_trip:
            stored = json.dumps(state)
            state = json.loads(stored)
        if kind == "tick":
            now += timedelta(hours=value)
            state, actions = engine.step(flow, state, Tick(), now)
        else:
            state, actions = reply(flow, state, value, now)
        log.append((copy.deepcopy(state), actions))
    return log


def test_state_is_plain_json_that_survives_storage_between_every_step():
    plain = run_script("intake", SCRIPT, round_trip=False)
    stored = run_script("intake", SCRIPT, round_trip=True)
    assert stored == plain
    for state, _ in plain:
        assert json.loads(json.dumps(state)) == state  # only JSON types: no tuples, no datetimes
    assert plain[-1][0]["status"] == "done"
    out = outcome_of(plain[-1][1])
    assert out.assessment.level is triage.Level.URGENT and out.advice_key == "advice.urgent"


def test_same_inputs_same_outputs():
    assert run_script("intake", SCRIPT, round_trip=True) == run_script("intake", SCRIPT,
                                                                       round_trip=True)
    fu = [("reply", "4"), ("reply", "9"), *[("reply", "no")] * 8]
    first, second = run_script("followup", fu, round_trip=False), run_script(
        "followup", fu, round_trip=False)
    assert first == second
    assert outcome_of(first[-1][1]).assessment.primary == "WORSENING"


# ---- CLINICAL.md §6 point 5 at every wait of both flows ----------------------------------


def _ask_nodes(flow):
    return [n.id for n in flow.questions]


def _drive(flow, state, now, text, bound):
    """Feed `text` until the flow ends; return every action. Fails if it takes over `bound`."""
    all_actions = []
    for _ in range(bound):
        if state["status"] != "active":
            return state, all_actions
        assert state["timeout_at"] and engine.next_event_at(state) is not None  # every wait
        state, actions = reply(flow, state, text, now)
        assert len(actions) <= 3
        all_actions += actions
    assert state["status"] != "active", f"no end after {bound} replies of {text!r}"
    return state, all_actions


def _check_outcome(actions, flow):
    outcomes = [a for a in actions if isinstance(a, Outcome)]
    assert len(outcomes) == 1
    out = assert_advice_with_outcome(actions)
    assert out.advice_key == engine.advice_key(out.assessment, followup=flow.id == "followup")
    if out.assessment.level is triage.Level.SELF_CARE and flow.id == "intake":
        assert all(out.answers[f] is False for f in triage.RED_FLAG_FIELDS)
    assert set(out.answers) >= {n.field for n in flow.questions}
    return out


def test_garbled_and_timeout_inputs_at_every_wait_of_both_flows():
    cases = 0
    for flow_id in FLOWS:
        for lang in LANGS:
            flow, start_state, _ = begin(flow_id, lang)
            bound = UNCLEAR_LIMIT * len(flow.questions) + 1
            assert all(n.timeout for n in flow.questions)
            state = start_state
            for node_id in _ask_nodes(flow):
                state = reach(flow, state, node_id)
                for text in GARBLED:
                    done, actions = _drive(flow, state, NOW, text, bound)
                    assert done["status"] == "done"
                    recorded = records(actions)
                    assert recorded and all(r.value is None for r in recorded), text
                    assert recorded[0].field == flow.nodes[node_id].field
                    assert _check_outcome(actions, flow).status == "completed"
                    cases += 1
                # a Tick past the timeout, straight away and after the reminder
                timeout = datetime.fromisoformat(state["timeout_at"])
                for ticks in ([timeout], [datetime.fromisoformat(state["remind_at"]), timeout]):
                    s, actions = state, []
                    for when in ticks:
                        s, actions = engine.step(flow, s, Tick(), when)
                    assert s["status"] == "done" and not records(actions)
                    out = _check_outcome(actions, flow)
                    assert out.status == "timed_out"
                    assert out.answers[flow.nodes[node_id].field] is None
                    cases += 1
    expected = sum(len(get_flow(f).questions) for f in FLOWS) * len(LANGS) * (len(GARBLED) + 2)
    print(f"\n§6 point 5: {cases} garbled/timeout cases at every wait of both flows checked")
    assert cases == expected == (17 + 10) * 2 * 9


# ---- random sequences (hypothesis) ---------------------------------------------------------


ANSWERS = ["no", "yes", "sí", "nope", "7", "7/10", "40", "3 days", "tres semanas", "2", "4",
           "seven", "not sure", "no sé"]
CONTROL = ["restart", "start over", "español", "english", "STOP", "HELP", "START"]
events = st.lists(
    st.one_of(
        st.builds(Reply, st.sampled_from(ANSWERS + CONTROL + list(GARBLED))),
        st.builds(Reply, st.text(max_size=30)),
        st.integers(min_value=0, max_value=8 * 24 * 60).map(lambda m: ("tick", m)),
    ),
    max_size=70,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow_id=st.sampled_from(FLOWS), lang=st.sampled_from(LANGS), inputs=events,
       known_age=st.sampled_from([None, 35, 70]), final=st.booleans())
def test_random_replies_and_ticks_never_raise_and_always_terminate(flow_id, lang, inputs,
                                                                     known_age, final):
    kw = {"final_check": final} if flow_id == "followup" else (
        {"known": {"age_years": known_age}} if known_age else {})
    flow, state, _ = begin(flow_id, lang, **kw)
    bound = UNCLEAR_LIMIT * len(flow.questions) + 1  # + the one "how to stop" hint
    now, consumed, ended = NOW, 0, False
    for event in inputs:
        if isinstance(event, tuple):
            now += timedelta(minutes=event[1])
            event = Tick()
        state, actions = engine.step(flow, json.loads(json.dumps(state)), event, now)
        if ended:
            assert actions == []
        if isinstance(event, Reply):
            kind = reading.read(event.text, lang=state["lang"]).kind
            if kind == reading.RESTART:
                consumed = 0
            elif kind not in (reading.LANG_ES, reading.LANG_EN, reading.OPT_OUT):
                consumed += 1  # an opt-out does nothing in the engine: the service ends it
        if any(isinstance(a, Outcome) for a in actions):
            _check_outcome(actions, flow)
            ended = True
        assert {r.field for r in records(actions)} <= {n.field for n in flow.questions}
        # a question takes at most three replies, so the flow ends within a bounded number
        assert state["status"] == "done" or consumed < bound
        assert (state["status"] == "done") == ended
    if not ended:
        state, actions = engine.step(flow, state, Tick(), now + timedelta(days=8))
        assert state["status"] == "done"
        assert _check_outcome(actions, flow).status == "timed_out"


# ---- real-world texts: one reading of every reply (flows/reading.py) ------------------------


OPT_OUTS = ["STOP", "no stop", "No. STOP", "I said stop", "stop texting me", "🛑", "para",
            "Para por favor", "basta ya", "no más"]
WAITS = [("intake", "chest_symptoms"), ("intake", "age_years"), ("intake", "duration_days"),
         ("intake", "pain_score"), ("followup", "status")]


@pytest.mark.parametrize(("flow_id", "node_id"), WAITS)
@pytest.mark.parametrize("text", OPT_OUTS)
def test_an_opt_out_is_never_recorded_and_leaves_the_state_as_it_was(flow_id, node_id, text):
    flow, state, _ = begin(flow_id)
    state = reach(flow, state, node_id)
    new, actions = reply(flow, state, text)
    assert actions == [] and new == state  # the caller records the opt-out and ends it


@pytest.mark.parametrize(("lang", "hint"), [
    ("en", "To stop texts from Elm Clinic, reply STOP."),
    ("es", "Para no recibir mensajes de Elm Clinic, responda ALTO."),
])
def test_an_opt_out_word_in_another_sense_gets_the_stop_hint_once_then_counts_as_unclear(
    lang, hint
):
    flow, state, _ = begin("intake", lang)
    node = question(flow, state)
    other = {"en": "my pain won't end", "es": "para mí es peor"}[lang]
    state, actions = reply(flow, state, other)
    first, again = sends(actions)
    assert (first.kind, first.key, first.text) == ("stop_hint", "stop_hint", hint)
    assert (again.kind, again.node, again.text) == ("question", node.id, node.text[lang])
    assert not records(actions) and state["unclear"] == 0 and state["node"] == node.id
    state, actions = reply(flow, state, "cancel my appointment")
    (reask,) = sends(actions)
    assert reask.kind == "reask" and not records(actions) and state["unclear"] == 1
    state, actions = reply(flow, state, "no")
    assert records(actions) == [Record(node.field, False)]


def test_on_a_call_an_opt_out_word_in_another_sense_is_unclear():
    flow = get_flow("intake")
    state, _ = engine.start(flow, NOW, context=context(), channel="voice")
    state, actions = reply(flow, state, "the pain won't stop")
    assert [a.kind for a in sends(actions)] == ["reask"] and state["unclear"] == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("yes I do", True), ("no never", False), ("nope none", False), ("sí tengo", True),
    ("para nada", False), ("yeah", True),
    ("yes but only sometimes", None), ("no I'm not sure", None), ("kind of", None),
    ("yes and no", None), ("no, not sure", None), ("yes at night", None),
    ("can someone call me", None), ("ok thanks", None), ("no fever", None),
])
def test_a_yes_no_reply_is_recorded_only_when_it_is_the_answer_and_fillers(text, expected):
    flow, state, _ = begin("intake")
    node = question(flow, state)
    state, actions = reply(flow, state, text)
    if expected is None:
        assert not records(actions) and state["unclear"] == 1 and state["node"] == node.id
    else:
        assert records(actions) == [Record(node.field, expected)]


@pytest.mark.parametrize(("node_id", "text", "expected"), [
    ("pain_score", "6 or 7", 7), ("pain_score", "7 out of 10", 7),
    ("pain_score", "7 but only when I move", None), ("pain_score", "no sé, 7", None),
    ("duration_days", "2 or 3 weeks", 21), ("duration_days", "2-3 weeks", 21),
    ("duration_days", "about 3 weeks", 21), ("duration_days", "3 weeks but it comes and goes", None),
    ("age_years", "45 or 46", 46), ("age_years", "I'm 45", 45),
])
def test_numbers_are_recorded_strictly_and_ranges_at_the_safer_end(node_id, text, expected):
    flow, state, _ = begin("intake")
    state = reach(flow, state, node_id)
    state, actions = reply(flow, state, text)
    if expected is None:
        assert not records(actions) and state["unclear"] == 1
    else:
        assert records(actions) == [Record(flow.nodes[node_id].field, expected)]
