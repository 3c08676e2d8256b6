"""Rule-by-rule tests of flows.triage against CLINICAL.md sections 1-4."""

from __future__ import annotations

import ast
import itertools
import pathlib
import time

import pytest

from flows import triage
from flows.triage import (
    ANSWER_FIELDS,
    FOLLOWUP_FIELDS,
    FOLLOWUP_RED_FLAG_FIELDS,
    RED_FLAG_FIELDS,
    RULE_LEVEL,
    RULE_TEXT,
    STATUS_VALUES,
    Assessment,
    Level,
    assess,
    assess_followup,
    explain,
)

E, U, S, C = Level.EMERGENCY, Level.URGENT, Level.SOON, Level.SELF_CARE

INTAKE_RULES = (
    "NEURO",
    "CHEST",
    "NEURO_SENSORY",
    "CANCER_HISTORY",
    "SYSTEMIC",
    "MANY_FEATURES",
    "INCOMPLETE",
    "CONCERNING",
    "TRAUMA",
    "MECHANICAL",
)
FOLLOWUP_RULES = (
    "NEURO",
    "CHEST",
    "NEURO_SENSORY",
    "SYSTEMIC",
    "INCOMPLETE",
    "WORSENING",
    "PERSISTENT",
    "IMPROVING",
    "RESOLVED",
)
FEATURES = ("F_CONSTANT", "F_PROGRESSIVE", "F_PERSISTENT", "F_NIGHT", "F_UNPROVOKED_SEVERE")


def intake(**overrides: object) -> dict[str, object]:
    """A complete, mechanical intake (self_care), with overrides. ``None`` = not answered."""
    answers: dict[str, object] = {
        "age_years": 35,
        "cancer_history": False,
        "duration_days": 5,
        "injury_before": False,
        "pain_score": 4,
        "constant": False,
        "progressive": False,
        "relieved_by_rest": True,
        "treatment_no_relief": False,
        "night_pain": False,
        "chest_symptoms": False,
        "weight_loss": False,
        "fever_chills": False,
        "night_sweats": False,
        "limb_weakness": False,
        "numbness_tingling": False,
        "bowel_bladder": False,
    }
    answers.update(overrides)
    return answers


def followup(**overrides: object) -> dict[str, object]:
    """A complete follow-up (status gone, no red flags), with overrides."""
    answers: dict[str, object] = {
        "status": "gone",
        "pain_score": 0,
        "limb_weakness": False,
        "bowel_bladder": False,
        "numbness_tingling": False,
        "chest_symptoms": False,
        "weight_loss": False,
        "fever_chills": False,
        "night_sweats": False,
        "night_pain": False,
        "cancer_history": False,
    }
    answers.update(overrides)
    return answers


def check(result: Assessment, level: Level, reasons: tuple[str, ...], missing=()) -> None:
    assert (result.level, result.reasons, result.missing) == (level, reasons, tuple(missing))
    assert result.primary == reasons[0]


# --------------------------------------------------------------------------------------------
# Public API surface
# --------------------------------------------------------------------------------------------


def test_level_values_rank_and_order():
    assert [lv.value for lv in Level] == ["emergency", "urgent", "soon", "self_care"]
    assert [lv.rank for lv in Level] == [3, 2, 1, 0]
    assert E > U > S > C
    assert C < S < U < E
    assert E >= E and C <= C and not (S < S)
    assert max([S, C, U]) is U
    assert max(Level) is E and min(Level) is C
    assert sorted(Level) == [C, S, U, E]
    assert Level("self_care") is C
    with pytest.raises(TypeError):
        _ = E < 3  # noqa: B018


def test_field_constants():
    assert RED_FLAG_FIELDS == (
        "cancer_history",
        "chest_symptoms",
        "weight_loss",
        "fever_chills",
        "night_sweats",
        "limb_weakness",
        "numbness_tingling",
        "bowel_bladder",
    )
    assert FOLLOWUP_RED_FLAG_FIELDS == RED_FLAG_FIELDS[1:]
    assert list(ANSWER_FIELDS) == [
        "age_years",
        "cancer_history",
        "duration_days",
        "injury_before",
        "pain_score",
        "constant",
        "progressive",
        "relieved_by_rest",
        "treatment_no_relief",
        "night_pain",
        "chest_symptoms",
        "weight_loss",
        "fever_chills",
        "night_sweats",
        "limb_weakness",
        "numbness_tingling",
        "bowel_bladder",
    ]
    ints = {"age_years", "duration_days", "pain_score"}
    assert all(t is (int if f in ints else bool) for f, t in ANSWER_FIELDS.items())
    assert set(RED_FLAG_FIELDS) <= set(ANSWER_FIELDS)
    assert FOLLOWUP_FIELDS["status"] is str and FOLLOWUP_FIELDS["pain_score"] is int
    assert set(FOLLOWUP_FIELDS) == {"status", "pain_score", "night_pain", *FOLLOWUP_RED_FLAG_FIELDS}
    assert "cancer_history" not in FOLLOWUP_FIELDS
    assert all(FOLLOWUP_FIELDS[f] is bool for f in FOLLOWUP_RED_FLAG_FIELDS + ("night_pain",))
    assert STATUS_VALUES == ("gone", "better", "same", "worse")


def test_rule_tables_cover_every_id():
    assert set(RULE_TEXT) == set(INTAKE_RULES) | set(FOLLOWUP_RULES) | set(FEATURES)
    assert all(isinstance(t, str) and len(t) > 20 and t.endswith(".") for t in RULE_TEXT.values())
    assert RULE_LEVEL == {
        "NEURO": E,
        "CHEST": E,
        "NEURO_SENSORY": U,
        "CANCER_HISTORY": U,
        "SYSTEMIC": U,
        "MANY_FEATURES": U,
        "INCOMPLETE": S,
        "CONCERNING": S,
        "TRAUMA": S,
        "MECHANICAL": C,
        "WORSENING": S,
        "PERSISTENT": S,
        "IMPROVING": C,
        "RESOLVED": C,
    }
    assert triage.INTAKE_RULE_IDS == INTAKE_RULES
    assert triage.FOLLOWUP_RULE_IDS == FOLLOWUP_RULES
    assert triage.FEATURE_IDS == FEATURES


def test_explain():
    assert explain(("NEURO", "F_NIGHT")) == [
        ("NEURO", RULE_TEXT["NEURO"]),
        ("F_NIGHT", RULE_TEXT["F_NIGHT"]),
    ]
    assert explain(()) == []
    assert explain(assess(intake()).reasons) == [("MECHANICAL", RULE_TEXT["MECHANICAL"])]


def test_assessment_is_frozen():
    a = assess(intake())
    with pytest.raises(AttributeError):
        a.level = E  # type: ignore[misc]
    assert a.primary == "MECHANICAL" and a.closes_episode is False and a.missing == ()


# --------------------------------------------------------------------------------------------
# Intake: one case per rule
# --------------------------------------------------------------------------------------------

INTAKE_RULE_CASES = [
    # id, overrides, level, reasons, missing
    ("NEURO limb_weakness", dict(limb_weakness=True), E, ("NEURO",), ()),
    ("NEURO bowel_bladder", dict(bowel_bladder=True), E, ("NEURO",), ()),
    (
        "NEURO numbness+cancer",
        dict(numbness_tingling=True, cancer_history=True),
        E,
        ("NEURO", "CANCER_HISTORY"),
        (),
    ),
    ("CHEST", dict(chest_symptoms=True), E, ("CHEST",), ()),
    ("NEURO_SENSORY", dict(numbness_tingling=True), U, ("NEURO_SENSORY",), ()),
    (
        "NEURO numbness, cancer unanswered (never read as no)",
        dict(numbness_tingling=True, cancer_history=None),
        E,
        ("NEURO", "INCOMPLETE"),
        ("cancer_history",),
    ),
    ("CANCER_HISTORY", dict(cancer_history=True), U, ("CANCER_HISTORY",), ()),
    ("SYSTEMIC weight_loss", dict(weight_loss=True), U, ("SYSTEMIC",), ()),
    ("SYSTEMIC fever_chills", dict(fever_chills=True), U, ("SYSTEMIC",), ()),
    ("SYSTEMIC night_sweats", dict(night_sweats=True), U, ("SYSTEMIC",), ()),
    (
        "MANY_FEATURES three",
        dict(constant=True, relieved_by_rest=False, progressive=True, night_pain=True),
        U,
        ("MANY_FEATURES", "CONCERNING", "F_CONSTANT", "F_PROGRESSIVE", "F_NIGHT"),
        (),
    ),
    (
        "MANY_FEATURES two at 50",
        dict(age_years=50, progressive=True, night_pain=True),
        U,
        ("MANY_FEATURES", "CONCERNING", "F_PROGRESSIVE", "F_NIGHT"),
        (),
    ),
    ("INCOMPLETE", dict(night_sweats=None), S, ("INCOMPLETE",), ("night_sweats",)),
    ("CONCERNING", dict(progressive=True), S, ("CONCERNING", "F_PROGRESSIVE"), ()),
    ("TRAUMA severe", dict(injury_before=True, pain_score=7), S, ("TRAUMA",), ()),
    ("TRAUMA older", dict(injury_before=True, age_years=50), S, ("TRAUMA",), ()),
    ("MECHANICAL", dict(), C, ("MECHANICAL",), ()),
]


@pytest.mark.parametrize(
    "overrides,level,reasons,missing",
    [c[1:] for c in INTAKE_RULE_CASES],
    ids=[c[0] for c in INTAKE_RULE_CASES],
)
def test_intake_rule(overrides, level, reasons, missing):
    check(assess(intake(**overrides)), level, reasons, missing)


FEATURE_CASES = [
    ("F_CONSTANT relieved False", dict(constant=True, relieved_by_rest=False), "F_CONSTANT"),
    ("F_CONSTANT relieved missing", dict(constant=True, relieved_by_rest=None), "F_CONSTANT"),
    ("F_PROGRESSIVE", dict(progressive=True), "F_PROGRESSIVE"),
    ("F_PERSISTENT 43 days", dict(duration_days=43), "F_PERSISTENT"),
    (
        "F_PERSISTENT 28 days no relief",
        dict(duration_days=28, treatment_no_relief=True),
        "F_PERSISTENT",
    ),
    ("F_NIGHT", dict(night_pain=True), "F_NIGHT"),
    (
        "F_UNPROVOKED_SEVERE",
        dict(pain_score=7, constant=True, relieved_by_rest=True),
        "F_UNPROVOKED_SEVERE",
    ),
    (
        "F_UNPROVOKED_SEVERE injury missing",
        dict(pain_score=10, constant=True, relieved_by_rest=True, injury_before=None),
        "F_UNPROVOKED_SEVERE",
    ),
]


@pytest.mark.parametrize(
    "overrides,feature", [c[1:] for c in FEATURE_CASES], ids=[c[0] for c in FEATURE_CASES]
)
def test_each_feature_alone_is_concerning(overrides, feature):
    check(assess(intake(**overrides)), S, ("CONCERNING", feature))


NOT_A_FEATURE = [
    ("constant but relieved by rest", dict(constant=True, relieved_by_rest=True)),
    ("constant missing", dict(constant=None, relieved_by_rest=False)),
    ("not relieved but not constant", dict(constant=False, relieved_by_rest=False)),
    ("progressive missing", dict(progressive=None)),
    ("night_pain missing", dict(night_pain=None)),
    ("42 days", dict(duration_days=42)),
    ("42 days no relief missing", dict(duration_days=42, treatment_no_relief=None)),
    ("27 days no relief", dict(duration_days=27, treatment_no_relief=True)),
    ("duration missing, no relief", dict(duration_days=None, treatment_no_relief=True)),
    ("pain 6 constant", dict(pain_score=6, constant=True, relieved_by_rest=True)),
    (
        "severe after injury",
        dict(pain_score=9, constant=True, relieved_by_rest=True, injury_before=True, age_years=20),
    ),
    ("severe not constant", dict(pain_score=9, constant=False)),
    ("pain missing constant", dict(pain_score=None, constant=True, relieved_by_rest=True)),
]


@pytest.mark.parametrize(
    "overrides", [c[1] for c in NOT_A_FEATURE], ids=[c[0] for c in NOT_A_FEATURE]
)
def test_not_a_feature(overrides):
    result = assess(intake(**overrides))
    if overrides.get("injury_before") and overrides.get("pain_score", 0) >= 7:
        check(result, S, ("TRAUMA",))
    else:
        check(result, C, ("MECHANICAL",))


# --------------------------------------------------------------------------------------------
# Intake: boundaries
# --------------------------------------------------------------------------------------------

TWO_FEATURES = dict(progressive=True, night_pain=True)
TWO_FEATURES_REASONS = ("F_PROGRESSIVE", "F_NIGHT")

BOUNDARY_CASES = [
    # age 49/50 for MANY_FEATURES
    (
        "age 49 two features",
        dict(age_years=49, **TWO_FEATURES),
        S,
        ("CONCERNING", *TWO_FEATURES_REASONS),
    ),
    (
        "age 50 two features",
        dict(age_years=50, **TWO_FEATURES),
        U,
        ("MANY_FEATURES", "CONCERNING", *TWO_FEATURES_REASONS),
    ),
    (
        "age missing two features",
        dict(age_years=None, **TWO_FEATURES),
        S,
        ("CONCERNING", *TWO_FEATURES_REASONS),
    ),
    (
        "age 80 one feature",
        dict(age_years=80, progressive=True),
        S,
        ("CONCERNING", "F_PROGRESSIVE"),
    ),
    # age 49/50 for TRAUMA
    ("injury age 49", dict(injury_before=True, age_years=49, pain_score=6), C, ("MECHANICAL",)),
    ("injury age 50", dict(injury_before=True, age_years=50, pain_score=6), S, ("TRAUMA",)),
    (
        "injury age missing",
        dict(injury_before=True, age_years=None, pain_score=6),
        C,
        ("MECHANICAL",),
    ),
    ("no injury age 50", dict(injury_before=False, age_years=50, pain_score=6), C, ("MECHANICAL",)),
    (
        "injury missing age 50",
        dict(injury_before=None, age_years=50, pain_score=7),
        C,
        ("MECHANICAL",),
    ),
    # pain 6/7 for TRAUMA
    ("injury pain 6", dict(injury_before=True, pain_score=6), C, ("MECHANICAL",)),
    ("injury pain 7", dict(injury_before=True, pain_score=7), S, ("TRAUMA",)),
    ("injury pain missing", dict(injury_before=True, pain_score=None), C, ("MECHANICAL",)),
    # pain 6/7 for F_UNPROVOKED_SEVERE
    (
        "constant pain 6",
        dict(constant=True, relieved_by_rest=True, pain_score=6),
        C,
        ("MECHANICAL",),
    ),
    (
        "constant pain 7",
        dict(constant=True, relieved_by_rest=True, pain_score=7),
        S,
        ("CONCERNING", "F_UNPROVOKED_SEVERE"),
    ),
    # duration 27/28 with treatment_no_relief
    ("27 days no relief", dict(duration_days=27, treatment_no_relief=True), C, ("MECHANICAL",)),
    (
        "28 days no relief",
        dict(duration_days=28, treatment_no_relief=True),
        S,
        ("CONCERNING", "F_PERSISTENT"),
    ),
    ("28 days relief", dict(duration_days=28, treatment_no_relief=False), C, ("MECHANICAL",)),
    (
        "28 days relief missing",
        dict(duration_days=28, treatment_no_relief=None),
        C,
        ("MECHANICAL",),
    ),
    # duration 42/43
    ("42 days", dict(duration_days=42), C, ("MECHANICAL",)),
    ("43 days", dict(duration_days=43), S, ("CONCERNING", "F_PERSISTENT")),
    (
        "42 days no relief",
        dict(duration_days=42, treatment_no_relief=True),
        S,
        ("CONCERNING", "F_PERSISTENT"),
    ),
    ("duration missing", dict(duration_days=None), C, ("MECHANICAL",)),
    # the feature count boundary (2/3)
    ("two features age 35", dict(**TWO_FEATURES), S, ("CONCERNING", *TWO_FEATURES_REASONS)),
    (
        "three features age 35",
        dict(**TWO_FEATURES, duration_days=43),
        U,
        ("MANY_FEATURES", "CONCERNING", "F_PROGRESSIVE", "F_PERSISTENT", "F_NIGHT"),
    ),
    # severe constant pain without injury is two features (constant, unprovoked severe)
    (
        "severe constant unrelieved, age 49",
        dict(constant=True, relieved_by_rest=False, pain_score=7, age_years=49),
        S,
        ("CONCERNING", "F_CONSTANT", "F_UNPROVOKED_SEVERE"),
    ),
    (
        "severe constant unrelieved, age 50",
        dict(constant=True, relieved_by_rest=False, pain_score=7, age_years=50),
        U,
        ("MANY_FEATURES", "CONCERNING", "F_CONSTANT", "F_UNPROVOKED_SEVERE"),
    ),
]


@pytest.mark.parametrize(
    "overrides,level,reasons",
    [c[1:] for c in BOUNDARY_CASES],
    ids=[c[0] for c in BOUNDARY_CASES],
)
def test_intake_boundary(overrides, level, reasons):
    check(assess(intake(**overrides)), level, reasons)


@pytest.mark.parametrize("field", RED_FLAG_FIELDS)
@pytest.mark.parametrize("how", ["none", "absent"])
def test_each_missing_red_flag_alone_is_incomplete(field, how):
    answers = intake()
    if how == "none":
        answers[field] = None
    else:
        del answers[field]
    check(assess(answers), S, ("INCOMPLETE",), (field,))


@pytest.mark.parametrize("field", [f for f in ANSWER_FIELDS if f not in RED_FLAG_FIELDS])
def test_missing_non_red_flag_field_is_not_incomplete(field):
    answers = intake()
    del answers[field]
    check(assess(answers), C, ("MECHANICAL",))


def test_empty_answers():
    check(assess({}), S, ("INCOMPLETE",), RED_FLAG_FIELDS)


def test_missing_listed_in_red_flag_order():
    answers = intake(bowel_bladder=None, cancer_history=None, weight_loss=None)
    check(assess(answers), S, ("INCOMPLETE",), ("cancer_history", "weight_loss", "bowel_bladder"))


# --------------------------------------------------------------------------------------------
# Intake: reason ordering, written out literally
# --------------------------------------------------------------------------------------------

ORDER_CASES = [
    (
        "cancer, systemic, many features and all five features",
        dict(
            age_years=55,
            cancer_history=True,
            duration_days=30,
            treatment_no_relief=True,
            pain_score=8,
            constant=True,
            relieved_by_rest=False,
            progressive=True,
            night_pain=True,
            weight_loss=True,
        ),
        U,
        (
            "CANCER_HISTORY",
            "SYSTEMIC",
            "MANY_FEATURES",
            "CONCERNING",
            "F_CONSTANT",
            "F_PROGRESSIVE",
            "F_PERSISTENT",
            "F_NIGHT",
            "F_UNPROVOKED_SEVERE",
        ),
        (),
    ),
    (
        "emergency with everything below it",
        dict(
            limb_weakness=True,
            chest_symptoms=True,
            cancer_history=True,
            numbness_tingling=None,
            fever_chills=True,
            age_years=50,
            constant=True,
            relieved_by_rest=None,
            night_pain=True,
            injury_before=True,
        ),
        E,
        (
            "NEURO",
            "CHEST",
            "CANCER_HISTORY",
            "SYSTEMIC",
            "MANY_FEATURES",
            "INCOMPLETE",
            "CONCERNING",
            "TRAUMA",
            "F_CONSTANT",
            "F_NIGHT",
        ),
        ("numbness_tingling",),
    ),
    (
        "chest is primary when NEURO does not fire",
        dict(chest_symptoms=True, numbness_tingling=True, night_sweats=True),
        E,
        ("CHEST", "NEURO_SENSORY", "SYSTEMIC"),
        (),
    ),
    (
        "all soon rules",
        dict(weight_loss=None, progressive=True, injury_before=True, pain_score=7),
        S,
        ("INCOMPLETE", "CONCERNING", "TRAUMA", "F_PROGRESSIVE"),
        ("weight_loss",),
    ),
    (
        "concerning before trauma",
        dict(duration_days=60, injury_before=True, age_years=70),
        S,
        ("CONCERNING", "TRAUMA", "F_PERSISTENT"),
        (),
    ),
    (
        "urgent sensory with incomplete and many features",
        dict(
            numbness_tingling=True,
            chest_symptoms=None,
            progressive=True,
            night_pain=True,
            duration_days=43,
        ),
        U,
        (
            "NEURO_SENSORY",
            "MANY_FEATURES",
            "INCOMPLETE",
            "CONCERNING",
            "F_PROGRESSIVE",
            "F_PERSISTENT",
            "F_NIGHT",
        ),
        ("chest_symptoms",),
    ),
]


@pytest.mark.parametrize(
    "overrides,level,reasons,missing",
    [c[1:] for c in ORDER_CASES],
    ids=[c[0] for c in ORDER_CASES],
)
def test_intake_reason_order(overrides, level, reasons, missing):
    check(assess(intake(**overrides)), level, reasons, missing)


def test_intake_ignores_unknown_keys_and_closes_nothing():
    result = assess(intake(status="worse", foo="bar"))
    check(result, C, ("MECHANICAL",))
    assert result.closes_episode is False


def test_intake_accepts_any_mapping():
    from types import MappingProxyType

    check(assess(MappingProxyType(intake(chest_symptoms=True))), E, ("CHEST",))


# --------------------------------------------------------------------------------------------
# Follow-up (section 4): every outcome row at the first and the final check
# --------------------------------------------------------------------------------------------

FOLLOWUP_CASES = [
    # name, overrides, baseline, (first level, first reasons, closes), (final ...)
    (
        "gone pain 0",
        dict(status="gone", pain_score=0),
        5,
        (C, ("RESOLVED",), True),
        (C, ("RESOLVED",), True),
    ),
    (
        "gone pain 2",
        dict(status="gone", pain_score=2),
        5,
        (C, ("RESOLVED",), True),
        (C, ("RESOLVED",), True),
    ),
    (
        "gone pain missing stays gone",
        dict(status="gone", pain_score=None),
        5,
        (C, ("RESOLVED",), True),
        (C, ("RESOLVED",), True),
    ),
    (
        "gone pain 3 reads as better",
        dict(status="gone", pain_score=3),
        5,
        (C, ("IMPROVING",), False),
        (S, ("PERSISTENT",), False),
    ),
    (
        "better pain 2",
        dict(status="better", pain_score=2),
        5,
        (C, ("RESOLVED",), True),
        (C, ("RESOLVED",), True),
    ),
    (
        "better pain 3",
        dict(status="better", pain_score=3),
        5,
        (C, ("IMPROVING",), False),
        (S, ("PERSISTENT",), False),
    ),
    (
        "better pain missing counts as 3+",
        dict(status="better", pain_score=None),
        5,
        (C, ("IMPROVING",), False),
        (S, ("PERSISTENT",), False),
    ),
    (
        "better pain 3 with cancer",
        dict(status="better", pain_score=3, cancer_history=True),
        5,
        (C, ("IMPROVING",), False),
        (U, ("PERSISTENT",), False),
    ),
    (
        "same",
        dict(status="same", pain_score=5),
        5,
        (S, ("PERSISTENT",), False),
        (S, ("PERSISTENT",), False),
    ),
    (
        "same pain missing",
        dict(status="same", pain_score=None),
        5,
        (S, ("PERSISTENT",), False),
        (S, ("PERSISTENT",), False),
    ),
    (
        "same with cancer",
        dict(status="same", pain_score=5, cancer_history=True),
        5,
        (U, ("PERSISTENT",), False),
        (U, ("PERSISTENT",), False),
    ),
    (
        "same with night pain",
        dict(status="same", pain_score=5, night_pain=True),
        5,
        (S, ("PERSISTENT",), False),
        (S, ("PERSISTENT",), False),
    ),
    (
        "worse",
        dict(status="worse", pain_score=5),
        5,
        (S, ("WORSENING",), False),
        (S, ("WORSENING",), False),
    ),
    (
        "worse with lower score",
        dict(status="worse", pain_score=1),
        5,
        (S, ("WORSENING",), False),
        (S, ("WORSENING",), False),
    ),
    (
        "worse with night pain",
        dict(status="worse", pain_score=5, night_pain=True),
        5,
        (U, ("WORSENING",), False),
        (U, ("WORSENING",), False),
    ),
    (
        "worse with cancer",
        dict(status="worse", pain_score=5, cancer_history=True),
        5,
        (U, ("WORSENING",), False),
        (U, ("WORSENING",), False),
    ),
    # baseline +1 / +2
    (
        "same baseline+1",
        dict(status="same", pain_score=6),
        5,
        (S, ("PERSISTENT",), False),
        (S, ("PERSISTENT",), False),
    ),
    (
        "same baseline+2",
        dict(status="same", pain_score=7),
        5,
        (S, ("WORSENING", "PERSISTENT"), False),
        (S, ("WORSENING", "PERSISTENT"), False),
    ),
    (
        "better baseline+1",
        dict(status="better", pain_score=4),
        3,
        (C, ("IMPROVING",), False),
        (S, ("PERSISTENT",), False),
    ),
    (
        "better baseline+2",
        dict(status="better", pain_score=5),
        3,
        (S, ("WORSENING", "IMPROVING"), False),
        (S, ("WORSENING", "PERSISTENT"), False),
    ),
    (
        "better baseline+2 night pain",
        dict(status="better", pain_score=5, night_pain=True),
        3,
        (U, ("WORSENING", "IMPROVING"), False),
        (U, ("WORSENING", "PERSISTENT"), False),
    ),
    (
        "gone baseline+1 (baseline 1, pain 2)",
        dict(status="gone", pain_score=2),
        1,
        (C, ("RESOLVED",), True),
        (C, ("RESOLVED",), True),
    ),
    (
        "gone baseline+2 (baseline 0, pain 2)",
        dict(status="gone", pain_score=2),
        0,
        (S, ("WORSENING",), False),
        (S, ("WORSENING",), False),
    ),
    (
        "gone baseline+2 reads as better (baseline 1, pain 3)",
        dict(status="gone", pain_score=3),
        1,
        (S, ("WORSENING", "IMPROVING"), False),
        (S, ("WORSENING", "PERSISTENT"), False),
    ),
    (
        "baseline missing",
        dict(status="same", pain_score=10),
        None,
        (S, ("PERSISTENT",), False),
        (S, ("PERSISTENT",), False),
    ),
    (
        "baseline missing better",
        dict(status="better", pain_score=10),
        None,
        (C, ("IMPROVING",), False),
        (S, ("PERSISTENT",), False),
    ),
    (
        "worse pain missing",
        dict(status="worse", pain_score=None),
        5,
        (S, ("WORSENING",), False),
        (S, ("WORSENING",), False),
    ),
]


@pytest.mark.parametrize("final_check", [False, True], ids=["first", "final"])
@pytest.mark.parametrize(
    "overrides,baseline,first,final",
    [c[1:] for c in FOLLOWUP_CASES],
    ids=[c[0] for c in FOLLOWUP_CASES],
)
def test_followup_outcome(overrides, baseline, first, final, final_check):
    level, reasons, closes = final if final_check else first
    result = assess_followup(
        followup(**overrides), baseline_pain_score=baseline, final_check=final_check
    )
    check(result, level, reasons)
    assert result.closes_episode is closes


FOLLOWUP_RED_FLAG_CASES = [
    ("NEURO limb_weakness", dict(limb_weakness=True), E, ("NEURO",)),
    ("NEURO bowel_bladder", dict(bowel_bladder=True), E, ("NEURO",)),
    ("NEURO numbness+cancer", dict(numbness_tingling=True, cancer_history=True), E, ("NEURO",)),
    ("CHEST", dict(chest_symptoms=True), E, ("CHEST",)),
    ("NEURO_SENSORY", dict(numbness_tingling=True), U, ("NEURO_SENSORY",)),
    (
        "NEURO_SENSORY cancer missing (follow-up: missing means false)",
        dict(numbness_tingling=True, cancer_history=None),
        U,
        ("NEURO_SENSORY",),
    ),
    ("SYSTEMIC weight_loss", dict(weight_loss=True), U, ("SYSTEMIC",)),
    ("SYSTEMIC fever_chills", dict(fever_chills=True), U, ("SYSTEMIC",)),
    ("SYSTEMIC night_sweats", dict(night_sweats=True), U, ("SYSTEMIC",)),
]


@pytest.mark.parametrize("final_check", [False, True], ids=["first", "final"])
@pytest.mark.parametrize("status", STATUS_VALUES)
@pytest.mark.parametrize(
    "overrides,level,reasons",
    [c[1:] for c in FOLLOWUP_RED_FLAG_CASES],
    ids=[c[0] for c in FOLLOWUP_RED_FLAG_CASES],
)
def test_followup_red_flags_block_resolution(overrides, level, reasons, status, final_check):
    result = assess_followup(
        followup(status=status, pain_score=1, **overrides),
        baseline_pain_score=5,
        final_check=final_check,
    )
    # The red-flag rules come first; the status rule (if any, never RESOLVED) follows.
    status_rule = {
        "gone": (),
        "better": (),
        "same": ("PERSISTENT",),
        "worse": ("WORSENING",),
    }[status]
    check(result, level, reasons + status_rule)
    assert result.closes_episode is False
    assert "RESOLVED" not in result.reasons


@pytest.mark.parametrize("final_check", [False, True], ids=["first", "final"])
@pytest.mark.parametrize("field", FOLLOWUP_RED_FLAG_FIELDS)
def test_followup_each_missing_red_flag(field, final_check):
    answers = followup(status="gone", pain_score=0)
    del answers[field]
    result = assess_followup(answers, baseline_pain_score=5, final_check=final_check)
    check(result, S, ("INCOMPLETE",), (field,))
    assert result.closes_episode is False


@pytest.mark.parametrize("status", [None, "absent", "maybe", ""])
def test_followup_status_missing_is_incomplete(status):
    answers = followup(pain_score=2)
    if status == "absent":
        del answers["status"]
    else:
        answers["status"] = status
    for final_check in (False, True):
        result = assess_followup(answers, baseline_pain_score=5, final_check=final_check)
        check(result, S, ("INCOMPLETE",), ("status",))


def test_followup_status_missing_still_sees_worsening_score():
    answers = followup(status=None, pain_score=8, night_pain=True, limb_weakness=None)
    result = assess_followup(answers, baseline_pain_score=5, final_check=False)
    # WORSENING (upgraded to urgent by night pain) outranks INCOMPLETE: it is the primary.
    check(result, U, ("WORSENING", "INCOMPLETE"), ("status", "limb_weakness"))


def test_followup_empty_answers():
    result = assess_followup({}, baseline_pain_score=None, final_check=False)
    check(result, S, ("INCOMPLETE",), ("status", *FOLLOWUP_RED_FLAG_FIELDS))


def test_followup_cancer_history_is_not_a_followup_red_flag():
    answers = followup(status="gone", pain_score=0)
    del answers["cancer_history"]
    result = assess_followup(answers, baseline_pain_score=5, final_check=True)
    check(result, C, ("RESOLVED",))
    # ...and a cancer history alone does not raise a follow-up (no CANCER_HISTORY rule here).
    result = assess_followup(
        followup(status="gone", pain_score=0, cancer_history=True),
        baseline_pain_score=5,
        final_check=True,
    )
    check(result, C, ("RESOLVED",))


def test_followup_night_pain_missing_is_not_incomplete():
    result = assess_followup(
        followup(status="better", pain_score=1, night_pain=None),
        baseline_pain_score=5,
        final_check=False,
    )
    check(result, C, ("RESOLVED",))


FOLLOWUP_ORDER_CASES = [
    (
        "upgraded WORSENING is primary ahead of INCOMPLETE, PERSISTENT after",
        dict(status="same", pain_score=6, night_pain=True, weight_loss=None),
        4,
        True,
        U,
        ("WORSENING", "INCOMPLETE", "PERSISTENT"),
        ("weight_loss",),
    ),
    (
        "upgraded PERSISTENT is primary ahead of INCOMPLETE",
        dict(status="same", pain_score=3, cancer_history=True, chest_symptoms=None),
        4,
        False,
        U,
        ("PERSISTENT", "INCOMPLETE"),
        ("chest_symptoms",),
    ),
    (
        "both upgraded: first in table order is primary",
        dict(status="same", pain_score=9, cancer_history=True),
        4,
        False,
        U,
        ("WORSENING", "PERSISTENT"),
        (),
    ),
    (
        "SYSTEMIC ties with upgraded WORSENING and comes first",
        dict(status="worse", pain_score=9, night_pain=True, fever_chills=True),
        4,
        False,
        U,
        ("SYSTEMIC", "WORSENING"),
        (),
    ),
    (
        "emergency follow-up with everything",
        dict(
            status="better",
            pain_score=None,
            bowel_bladder=True,
            chest_symptoms=True,
            numbness_tingling=True,
            night_sweats=True,
            fever_chills=None,
            night_pain=True,
        ),
        4,
        True,
        E,
        ("NEURO", "CHEST", "NEURO_SENSORY", "SYSTEMIC", "INCOMPLETE", "PERSISTENT"),
        ("fever_chills",),
    ),
    (
        "no F_* features in a follow-up",
        dict(status="better", pain_score=4, night_pain=True),
        3,
        False,
        C,
        ("IMPROVING",),
        (),
    ),
]


@pytest.mark.parametrize(
    "overrides,baseline,final_check,level,reasons,missing",
    [c[1:] for c in FOLLOWUP_ORDER_CASES],
    ids=[c[0] for c in FOLLOWUP_ORDER_CASES],
)
def test_followup_reason_order(overrides, baseline, final_check, level, reasons, missing):
    result = assess_followup(
        followup(**overrides), baseline_pain_score=baseline, final_check=final_check
    )
    check(result, level, reasons, missing)
    assert result.closes_episode is False


def test_followup_keyword_only():
    with pytest.raises(TypeError):
        assess_followup(followup(), 5, False)  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Cross-check against a plain reference model of the spec, on a systematic grid
# --------------------------------------------------------------------------------------------


def reference_assess(a: dict[str, object]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """A deliberately naive transcription of CLINICAL.md section 3."""

    def yes(f):
        return a.get(f) is True

    def num(f, op, v):
        x = a.get(f)
        return x is not None and op(x, v)

    ge = int.__ge__
    gt = int.__gt__
    feats = {
        "F_CONSTANT": yes("constant") and not yes("relieved_by_rest"),
        "F_PROGRESSIVE": yes("progressive"),
        "F_PERSISTENT": num("duration_days", gt, 42)
        or (num("duration_days", ge, 28) and yes("treatment_no_relief")),
        "F_NIGHT": yes("night_pain"),
        "F_UNPROVOKED_SEVERE": num("pain_score", ge, 7)
        and not yes("injury_before")
        and yes("constant"),
    }
    n = sum(feats.values())
    missing = tuple(f for f in RED_FLAG_FIELDS if a.get(f) is None)
    fired = {
        "NEURO": yes("limb_weakness")
        or yes("bowel_bladder")
        or (yes("numbness_tingling") and a.get("cancer_history") is not False),
        "CHEST": yes("chest_symptoms"),
        "NEURO_SENSORY": yes("numbness_tingling") and a.get("cancer_history") is False,
        "CANCER_HISTORY": yes("cancer_history"),
        "SYSTEMIC": yes("weight_loss") or yes("fever_chills") or yes("night_sweats"),
        "MANY_FEATURES": n >= 3 or (n >= 2 and num("age_years", ge, 50)),
        "INCOMPLETE": bool(missing),
        "CONCERNING": n >= 1,
        "TRAUMA": yes("injury_before") and (num("pain_score", ge, 7) or num("age_years", ge, 50)),
    }
    rules = [r for r in INTAKE_RULES[:-1] if fired[r]] or ["MECHANICAL"]
    level = max(RULE_LEVEL[r] for r in rules)
    primary = next(r for r in rules if RULE_LEVEL[r] == level)
    reasons = (primary, *[r for r in rules if r != primary], *[f for f in FEATURES if feats[f]])
    return level.value, reasons, missing


def test_matches_reference_model_on_grid():
    tri = (None, False, True)
    grid = {
        "age_years": (None, 49, 50),
        "duration_days": (None, 27, 28, 42, 43),
        "pain_score": (None, 6, 7),
        "injury_before": tri,
        "constant": tri,
        "progressive": tri,
        "relieved_by_rest": tri,
        "treatment_no_relief": tri,
        "night_pain": tri,
    }
    red_contexts = [
        {f: False for f in RED_FLAG_FIELDS},
        {f: None for f in RED_FLAG_FIELDS},
        {**{f: False for f in RED_FLAG_FIELDS}, "numbness_tingling": True},
        {**{f: False for f in RED_FLAG_FIELDS}, "cancer_history": True},
    ]
    names = list(grid)
    n = 0
    for ctx in red_contexts:
        for values in itertools.product(*grid.values()):
            answers = dict(ctx)
            answers.update(zip(names, values, strict=True))
            got = assess(answers)
            assert (got.level.value, got.reasons, got.missing) == reference_assess(answers), answers
            n += 1
    # and the red-flag side, with a feature-heavy context
    base = dict(
        age_years=50,
        duration_days=28,
        pain_score=7,
        injury_before=False,
        constant=True,
        progressive=False,
        relieved_by_rest=None,
        treatment_no_relief=True,
        night_pain=False,
    )
    for values in itertools.product(tri, repeat=len(RED_FLAG_FIELDS)):
        answers = dict(base)
        answers.update(zip(RED_FLAG_FIELDS, values, strict=True))
        got = assess(answers)
        assert (got.level.value, got.reasons, got.missing) == reference_assess(answers), answers
        n += 1
    print(f"checked {n} cases against the reference model")
    assert n == 4 * 3**6 * 45 + 3**8


# --------------------------------------------------------------------------------------------
# Purity and speed
# --------------------------------------------------------------------------------------------

FORBIDDEN = {"flask", "celery", "sqlalchemy", "twilio", "redis", "service", "tasks"}
NO_CLOCK_OR_IO = {
    "time",
    "datetime",
    "random",
    "os",
    "io",
    "socket",
    "pathlib",
    "subprocess",
    "re",
    "logging",
    "requests",
    "httpx",
    "urllib",
    "zoneinfo",
}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_flows_package_is_pure():
    flows_dir = pathlib.Path(triage.__file__).parent
    for path in flows_dir.rglob("*.py"):
        assert not (_imports(path) & FORBIDDEN), path
    assert not (_imports(pathlib.Path(triage.__file__)) & NO_CLOCK_OR_IO)


def test_assess_is_fast():
    cases = [
        intake(),
        {},
        intake(limb_weakness=True, cancer_history=True, weight_loss=None, progressive=True),
        intake(
            age_years=60,
            constant=True,
            relieved_by_rest=False,
            night_pain=True,
            duration_days=50,
            pain_score=8,
        ),
    ]
    n = 5000
    start = time.perf_counter()
    for _ in range(n):
        for answers in cases:
            assess(answers)
    per_call = (time.perf_counter() - start) / (n * len(cases))
    print(f"assess: {per_call * 1e6:.2f} us per call")
    assert per_call < 20e-6
