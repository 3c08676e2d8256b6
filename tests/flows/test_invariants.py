"""Safety invariants of CLINICAL.md section 6 (1-4), checked by enumerating answer classes.

Each field takes every class of value that matters: ``None`` (not answered) and values on both
sides of every boundary (age 49/50; duration 27/28 and 42/43; pain 6/7). The full product of the
17 intake fields is ~215 million cases, so it is split in two full sub-products that stay under
a million cases each:

* the red-flag side: the 8 red flags x age x pain x injury_before, in several feature contexts;
* the feature side: the 6 non-red-flag booleans x age x duration x pain, in many red-flag
  contexts.

Within a split, every case's level is stored in a flat array in ``itertools.product`` order, so
monotonicity (invariant 4) is checked by comparing each case with its neighbour that has one
field turned on / one number raised, for every case and every varied field.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

from flows.triage import (
    FOLLOWUP_RED_FLAG_FIELDS,
    RED_FLAG_FIELDS,
    RULE_LEVEL,
    STATUS_VALUES,
    Assessment,
    Level,
    assess,
    assess_followup,
)

TRI = (None, False, True)
AGES = (None, 49, 50)
DURATIONS = (None, 27, 28, 42, 43)
PAINS = (None, 6, 7)

FEATURE_BOOLS = (
    "constant",
    "progressive",
    "relieved_by_rest",
    "treatment_no_relief",
    "night_pain",
    "injury_before",
)
EMERGENCY_FIELDS = ("limb_weakness", "bowel_bladder", "chest_symptoms")
EMERGENCY_RANK = Level.EMERGENCY.rank
URGENT_RANK = Level.URGENT.rank
SELF_CARE = Level.SELF_CARE
RANK = {level: level.rank for level in Level}


def raising_pairs(field: str, values: Sequence[object]) -> list[tuple[int, int]]:
    """Index pairs (lower, higher) along which the level must never drop (invariant 4).

    Booleans: turning a symptom on (unanswered or no -> yes); for ``relieved_by_rest`` the
    alarming value is ``False``; ``injury_before`` is excluded (an injury explains pain).
    Numbers: every raise, and "not answered" -> any number (a missing number never counts).
    """
    if field == "injury_before":
        return []
    if values == TRI:
        on = False if field == "relieved_by_rest" else True
        j = values.index(on)
        return [(i, j) for i, v in enumerate(values) if v is not on]
    return [(i, j) for i in range(len(values)) for j in range(i + 1, len(values))]


def check_intake_case(answers: dict[str, object], result: Assessment) -> None:
    level = result.level
    rank = RANK[level]
    get = answers.get
    # 1. limb weakness, bowel/bladder or chest symptoms -> emergency; numbness >= urgent
    if (
        get("limb_weakness") is True
        or get("bowel_bladder") is True
        or get("chest_symptoms") is True
    ):
        assert level is Level.EMERGENCY, answers
    if get("numbness_tingling") is True:
        assert rank >= URGENT_RANK, answers
    # 2. self_care only when all 8 red flags were answered "no"
    if level is SELF_CARE:
        assert all(get(f) is False for f in RED_FLAG_FIELDS), answers
        assert result.reasons == ("MECHANICAL",), answers
    # 3. cancer history or any systemic symptom -> at least urgent
    if (
        get("cancer_history") is True
        or get("weight_loss") is True
        or get("fever_chills") is True
        or get("night_sweats") is True
    ):
        assert rank >= URGENT_RANK, answers
    # structure: INCOMPLETE iff something is missing; the primary rule gives the level
    assert ("INCOMPLETE" in result.reasons) == bool(result.missing), answers
    assert RULE_LEVEL[result.reasons[0]] is level, answers


def run_split(
    varied: Sequence[tuple[str, Sequence[object]]],
    contexts: Sequence[dict[str, object]],
    evaluate: Callable[[dict[str, object]], Assessment],
    check_case: Callable[[dict[str, object], Assessment], None],
    pairs_for: Callable[[str, Sequence[object]], list[tuple[int, int]]] = raising_pairs,
) -> tuple[int, int]:
    """Enumerate ``contexts x product(varied)``; check each case and monotonicity.

    Returns (cases checked, monotonicity comparisons made).
    """
    names = [name for name, _ in varied]
    domains = [values for _, values in varied]
    radices = [len(v) for v in domains]
    size = math.prod(radices)
    strides = [math.prod(radices[i + 1 :]) for i in range(len(radices))]
    n_cases = 0
    n_pairs = 0
    for ctx in contexts:
        ranks = bytearray(size)
        i = 0
        for values in itertools.product(*domains):
            answers = dict(ctx)
            answers.update(zip(names, values, strict=True))
            result = evaluate(answers)
            check_case(answers, result)
            ranks[i] = RANK[result.level]
            i += 1
        assert i == size
        n_cases += size
        # Invariant 4 within this context: for every field, every case with the lower value
        # against the same case with the higher value.
        for name, values, radix, stride in zip(names, domains, radices, strides, strict=True):
            block = radix * stride
            for lo, hi in pairs_for(name, values):
                for start in range(0, size, block):
                    a = ranks[start + lo * stride : start + (lo + 1) * stride]
                    b = ranks[start + hi * stride : start + (hi + 1) * stride]
                    if not all(x <= y for x, y in zip(a, b, strict=True)):
                        k = next(k for k in range(stride) if a[k] > b[k])
                        idx = start + lo * stride + k
                        digits = []
                        for r, s in zip(radices, strides, strict=True):
                            digits.append(idx // s % r)
                        case = dict(ctx)
                        case.update(
                            (n, d[j]) for n, d, j in zip(names, domains, digits, strict=True)
                        )
                        raise AssertionError(
                            f"level drops when {name} goes {values[lo]!r} -> {values[hi]!r}: {case}"
                        )
                    n_pairs += stride
    return n_cases, n_pairs


# --------------------------------------------------------------------------------------------
# Intake
# --------------------------------------------------------------------------------------------

ALL_NO = {f: False for f in RED_FLAG_FIELDS}


def red_flag_contexts() -> list[dict[str, object]]:
    """Red-flag settings for the feature-side split."""
    contexts: list[dict[str, object]] = [dict(ALL_NO), {f: None for f in RED_FLAG_FIELDS}]
    for f in RED_FLAG_FIELDS:
        contexts.append({**ALL_NO, f: True})
        contexts.append({**ALL_NO, f: None})
    contexts.append({**ALL_NO, "numbness_tingling": True, "cancer_history": None})
    return contexts


def feature_contexts() -> list[dict[str, object]]:
    """Settings of the remaining fields for the red-flag-side split: 0 to 3 features.

    With ``constant`` on, pain 7 without an injury adds F_UNPROVOKED_SEVERE, so the varied
    pain/injury/age fields move each context across the MANY_FEATURES boundaries.
    """
    none = dict(
        constant=False,
        progressive=False,
        relieved_by_rest=True,
        treatment_no_relief=False,
        night_pain=False,
        duration_days=27,
    )
    return [
        none,  # no feature (constant False, so pain 7 adds none)
        {k: None for k in none},  # everything unanswered
        {**none, "constant": True, "relieved_by_rest": False},  # 1, or 2 with pain 7 / no injury
        {**none, "constant": True, "relieved_by_rest": None, "night_pain": True},  # 2 or 3
    ]


def test_intake_invariants_red_flag_side():
    varied = [(f, TRI) for f in RED_FLAG_FIELDS]
    varied += [("age_years", AGES), ("pain_score", PAINS), ("injury_before", TRI)]
    n, pairs = run_split(varied, feature_contexts(), assess, check_intake_case)
    print(f"checked {n} cases, {pairs} monotonicity comparisons (red-flag side)")
    assert n == 4 * 3**8 * 27 > 700_000


def test_intake_invariants_feature_side():
    varied = [(f, TRI) for f in FEATURE_BOOLS]
    varied += [("age_years", AGES), ("duration_days", DURATIONS), ("pain_score", PAINS)]
    contexts = red_flag_contexts()
    n, pairs = run_split(varied, contexts, assess, check_intake_case)
    print(f"checked {n} cases, {pairs} monotonicity comparisons (feature side)")
    assert n == len(contexts) * 3**6 * 45 > 600_000


def test_boundary_classes_cover_every_boundary():
    """The value classes sit on both sides of every numeric boundary of section 3."""
    assert {49, 50} <= set(AGES)
    assert {27, 28, 42, 43} <= set(DURATIONS)
    assert {6, 7} <= set(PAINS)
    for values in (AGES, DURATIONS, PAINS):
        assert values[0] is None and list(values[1:]) == sorted(values[1:])


def test_monotonicity_checker_catches_a_drop():
    """The checker itself fails on a non-monotonic function (so a green run means something)."""

    def bad(answers):
        # pain 7 lowers the level: must be caught
        level = Level.SOON if answers.get("pain_score") == 6 else Level.SELF_CARE
        return Assessment(level, ("X",))

    try:
        run_split([("pain_score", PAINS)], [{}], bad, lambda a, r: None)
    except AssertionError as exc:
        assert "pain_score goes 6 -> 7" in str(exc)
    else:
        raise AssertionError("monotonicity checker missed a drop")


# --------------------------------------------------------------------------------------------
# Follow-up
# --------------------------------------------------------------------------------------------

STATUSES = (None, *STATUS_VALUES)
FU_PAINS = (None, 0, 2, 3, 4, 5, 6, 10)
BASELINES = (None, 0, 2, 3, 4, 8)


def check_followup_case(answers: dict[str, object], result: Assessment) -> None:
    level = result.level
    get = answers.get
    reasons = result.reasons
    assert reasons, answers
    # 1. as at intake
    if (
        get("limb_weakness") is True
        or get("bowel_bladder") is True
        or get("chest_symptoms") is True
    ):
        assert level is Level.EMERGENCY, answers
    if get("numbness_tingling") is True:
        assert level.rank >= URGENT_RANK, answers
    # self_care only when all 7 follow-up red flags were answered "no" (and status answered)
    if level is SELF_CARE:
        assert all(get(f) is False for f in FOLLOWUP_RED_FLAG_FIELDS), answers
        assert get("status") is not None, answers
        assert reasons in (("RESOLVED",), ("IMPROVING",)), answers
    # systemic symptoms stay urgent in a follow-up too
    if get("weight_loss") is True or get("fever_chills") is True or get("night_sweats") is True:
        assert level.rank >= URGENT_RANK, answers
    # structure
    assert not any(r.startswith("F_") for r in reasons), answers
    assert "CANCER_HISTORY" not in reasons and "MECHANICAL" not in reasons, answers
    assert result.closes_episode is (reasons == ("RESOLVED",)), answers
    assert ("INCOMPLETE" in reasons) == bool(result.missing), answers
    assert RULE_LEVEL[reasons[0]] <= level, answers
    # "persistent or worsening" answers always produce an alert (soon or higher)
    if "WORSENING" in reasons or "PERSISTENT" in reasons:
        assert level.rank >= Level.SOON.rank, answers


def _followup_evaluator(baseline, final_check):
    def evaluate(answers):
        return assess_followup(answers, baseline_pain_score=baseline, final_check=final_check)

    return evaluate


def _no_pairs(field, values):
    return []


def test_followup_invariants_red_flag_side():
    varied = [(f, TRI) for f in FOLLOWUP_RED_FLAG_FIELDS]
    varied += [("status", STATUSES), ("cancer_history", TRI), ("night_pain", TRI)]
    total = 0
    for pain, baseline in ((None, None), (2, 5), (6, 4)):
        for final_check in (False, True):
            n, _ = run_split(
                varied,
                [{"pain_score": pain}],
                _followup_evaluator(baseline, final_check),
                check_followup_case,
                # red flags on never lower a follow-up either
                lambda f, v: raising_pairs(f, v) if f in FOLLOWUP_RED_FLAG_FIELDS else [],
            )
            total += n
    print(f"checked {total} follow-up cases (red-flag side)")
    assert total == 6 * 3**7 * 5 * 9 > 500_000


def test_followup_invariants_status_side():
    def pain_pairs(field, values):
        # Raising the pain score (among answered values) never lowers a follow-up's level.
        if field == "pain_score":
            return [(i, j) for i in range(1, len(values)) for j in range(i + 1, len(values))]
        return []

    contexts: list[dict[str, object]] = [
        {f: False for f in FOLLOWUP_RED_FLAG_FIELDS},
        {f: None for f in FOLLOWUP_RED_FLAG_FIELDS},
    ]
    for f in FOLLOWUP_RED_FLAG_FIELDS:
        contexts.append({**contexts[0], f: True})
        contexts.append({**contexts[0], f: None})
    varied = [
        ("status", STATUSES),
        ("cancer_history", TRI),
        ("night_pain", TRI),
        ("pain_score", FU_PAINS),
    ]
    total = 0
    for baseline in BASELINES:
        for final_check in (False, True):
            n, _ = run_split(
                varied,
                contexts,
                _followup_evaluator(baseline, final_check),
                check_followup_case,
                pain_pairs,
            )
            total += n
    print(f"checked {total} follow-up cases (status side)")
    assert total == len(BASELINES) * 2 * len(contexts) * 5 * 9 * len(FU_PAINS)
