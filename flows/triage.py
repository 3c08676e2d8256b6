"""Clinical triage rules for upper back pain check-ins.

This module encodes sections 1-4 of the clinical specification (``CLINICAL.md``): the answer
fields, the advice levels, the initial check-in rules and the follow-up rules. It is pure
Python: no I/O, no clock, no framework imports, so it can be tested exhaustively.

Conventions:

* A field is *missing* (not answered) when its key is absent or its value is ``None``.
* A boolean field counts as "yes" only when its value ``is True``; a missing field is never
  read as "no" (see ``INCOMPLETE``) and never as "yes".
* A missing number never makes a numeric comparison true.
* ``Assessment.reasons`` lists the primary rule (the first rule, in table order, whose level
  equals the final level), then the other fired rules in table order, then (intake only) the
  fired concerning features ``F_*`` in feature-table order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "ANSWER_FIELDS",
    "FEATURE_IDS",
    "FOLLOWUP_FIELDS",
    "FOLLOWUP_RED_FLAG_FIELDS",
    "FOLLOWUP_RULE_IDS",
    "INTAKE_RULE_IDS",
    "RED_FLAG_FIELDS",
    "RULE_LEVEL",
    "RULE_TEXT",
    "STATUS_VALUES",
    "Assessment",
    "Level",
    "assess",
    "assess_followup",
    "explain",
]


# --------------------------------------------------------------------------------------------
# Levels (CLINICAL.md section 2)
# --------------------------------------------------------------------------------------------


class Level(Enum):
    """Advice level, ordered ``EMERGENCY > URGENT > SOON > SELF_CARE``."""

    EMERGENCY = "emergency"
    URGENT = "urgent"
    SOON = "soon"
    SELF_CARE = "self_care"

    @property
    def rank(self) -> int:
        """3 for emergency, 2 urgent, 1 soon, 0 self_care."""
        return _RANK_OF[self]

    def __lt__(self, other: object) -> bool:
        if other.__class__ is Level:
            return _RANK_OF[self] < _RANK_OF[other]  # type: ignore[index]
        return NotImplemented

    def __le__(self, other: object) -> bool:
        if other.__class__ is Level:
            return _RANK_OF[self] <= _RANK_OF[other]  # type: ignore[index]
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if other.__class__ is Level:
            return _RANK_OF[self] > _RANK_OF[other]  # type: ignore[index]
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        if other.__class__ is Level:
            return _RANK_OF[self] >= _RANK_OF[other]  # type: ignore[index]
        return NotImplemented


_RANK_OF: dict[Level, int] = {
    Level.EMERGENCY: 3,
    Level.URGENT: 2,
    Level.SOON: 1,
    Level.SELF_CARE: 0,
}
# rank -> Level (index by rank)
_LEVEL_BY_RANK: tuple[Level, ...] = (Level.SELF_CARE, Level.SOON, Level.URGENT, Level.EMERGENCY)

_EMERGENCY = 3
_URGENT = 2
_SOON = 1
_SELF_CARE = 0


# --------------------------------------------------------------------------------------------
# Fields (CLINICAL.md section 1 and section 4)
# --------------------------------------------------------------------------------------------

ANSWER_FIELDS: dict[str, type] = {
    "age_years": int,
    "cancer_history": bool,
    "duration_days": int,
    "injury_before": bool,
    "pain_score": int,
    "constant": bool,
    "progressive": bool,
    "relieved_by_rest": bool,
    "treatment_no_relief": bool,
    "night_pain": bool,
    "chest_symptoms": bool,
    "weight_loss": bool,
    "fever_chills": bool,
    "night_sweats": bool,
    "limb_weakness": bool,
    "numbness_tingling": bool,
    "bowel_bladder": bool,
}

RED_FLAG_FIELDS: tuple[str, ...] = (
    "cancer_history",
    "chest_symptoms",
    "weight_loss",
    "fever_chills",
    "night_sweats",
    "limb_weakness",
    "numbness_tingling",
    "bowel_bladder",
)

FOLLOWUP_RED_FLAG_FIELDS: tuple[str, ...] = tuple(
    f for f in RED_FLAG_FIELDS if f != "cancer_history"
)

STATUS_VALUES: tuple[str, ...] = ("gone", "better", "same", "worse")

# The follow-up questions of section 4, in the order they are asked. ``cancer_history`` is not
# asked again: the caller passes the intake's value in the answers.
FOLLOWUP_FIELDS: dict[str, type] = {
    "status": str,
    "pain_score": int,
    "limb_weakness": bool,
    "bowel_bladder": bool,
    "numbness_tingling": bool,
    "chest_symptoms": bool,
    "weight_loss": bool,
    "fever_chills": bool,
    "night_sweats": bool,
    "night_pain": bool,
}


# --------------------------------------------------------------------------------------------
# Rules (CLINICAL.md sections 3 and 4)
# --------------------------------------------------------------------------------------------

INTAKE_RULE_IDS: tuple[str, ...] = (
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

FOLLOWUP_RULE_IDS: tuple[str, ...] = (
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

FEATURE_IDS: tuple[str, ...] = (
    "F_CONSTANT",
    "F_PROGRESSIVE",
    "F_PERSISTENT",
    "F_NIGHT",
    "F_UNPROVOKED_SEVERE",
)

# Base level of each rule (WORSENING and PERSISTENT may be upgraded to urgent, see section 4).
RULE_LEVEL: dict[str, Level] = {
    "NEURO": Level.EMERGENCY,
    "CHEST": Level.EMERGENCY,
    "NEURO_SENSORY": Level.URGENT,
    "CANCER_HISTORY": Level.URGENT,
    "SYSTEMIC": Level.URGENT,
    "MANY_FEATURES": Level.URGENT,
    "INCOMPLETE": Level.SOON,
    "CONCERNING": Level.SOON,
    "TRAUMA": Level.SOON,
    "MECHANICAL": Level.SELF_CARE,
    "WORSENING": Level.SOON,
    "PERSISTENT": Level.SOON,
    "IMPROVING": Level.SELF_CARE,
    "RESOLVED": Level.SELF_CARE,
}

RULE_TEXT: dict[str, str] = {
    "NEURO": (
        "New limb weakness or bladder/bowel change (or numbness with a cancer history, or with "
        "the cancer question unanswered): "
        "possible cord or cauda equina compression."
    ),
    "CHEST": (
        "Chest pain, trouble breathing or sudden severe tearing pain: possible heart attack, "
        "aortic dissection or pulmonary embolism."
    ),
    "NEURO_SENSORY": (
        "New numbness or tingling in the arms or legs (no cancer history reported): "
        "needs same-day neurological assessment."
    ),
    "CANCER_HISTORY": (
        "Back pain in a person with a history of cancer: the strongest red flag for spinal "
        "metastasis; contact within 24 hours."
    ),
    "SYSTEMIC": (
        "Unexplained weight loss, fever or chills, or night sweats: systemic red flag "
        "(possible cancer or spinal infection)."
    ),
    "MANY_FEATURES": (
        "Three or more concerning pain features, or two or more at age 50 or over: pattern "
        "consistent with serious (e.g. cancer-related) pain."
    ),
    "INCOMPLETE": (
        "One or more red-flag questions were not answered: the check-in is incomplete and an "
        "unanswered red flag is not a no."
    ),
    "CONCERNING": (
        "At least one concerning pain feature (constant, progressive, persistent, night pain, "
        "or severe without injury): needs an examination."
    ),
    "TRAUMA": (
        "Pain began after a fall, accident or injury, with severe pain or age 50 or over: "
        "possible fracture."
    ),
    "MECHANICAL": (
        "No red flags and no concerning features: pattern of common musculoskeletal "
        "(mechanical) back pain."
    ),
    "WORSENING": (
        "Pain reported worse, or at least 2 points higher than at intake (the minimal "
        "clinically important change)."
    ),
    "PERSISTENT": (
        "Pain unchanged, or improved but still 3 or more at the final check: pain has lasted "
        "4-6 weeks and needs examination."
    ),
    "IMPROVING": (
        "Pain improving but still 3 or more at the first follow-up: the final check is scheduled."
    ),
    "RESOLVED": (
        "Pain gone, or better with a score of 2 or less, and no red flags: the episode is closed."
    ),
    "F_CONSTANT": "Pain is constant and does not ease with rest or a change of position.",
    "F_PROGRESSIVE": "Pain has been getting steadily worse.",
    "F_PERSISTENT": (
        "Pain for more than 6 weeks, or for 4 weeks or more despite heat, massage or pain "
        "relievers."
    ),
    "F_NIGHT": "Pain wakes the patient from sleep or is worse lying down.",
    "F_UNPROVOKED_SEVERE": "Severe (7 or more out of 10), constant pain with no injury.",
}


# --------------------------------------------------------------------------------------------
# Assessment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assessment:
    """The result of one check-in."""

    level: Level
    reasons: tuple[str, ...]
    missing: tuple[str, ...] = ()
    closes_episode: bool = False

    @property
    def primary(self) -> str:
        """The rule that decided the level (the first reason)."""
        return self.reasons[0]


def _finish(
    rules: list[str],
    ranks: list[int],
    features: tuple[str, ...],
    missing: tuple[str, ...],
    closes_episode: bool = False,
) -> Assessment:
    """Order the fired rules: primary first, then the others in table order, then features."""
    top = max(ranks)
    i = ranks.index(top)
    if i:
        primary = rules.pop(i)
        rules.insert(0, primary)
    if features:
        rules.extend(features)
    return Assessment(_LEVEL_BY_RANK[top], tuple(rules), missing, closes_episode)


def _red_flag_rules(get, cancer: object, rules: list[str], ranks: list[int], *,
                    with_cancer_rule: bool) -> None:
    """NEURO, CHEST, NEURO_SENSORY, (CANCER_HISTORY,) SYSTEMIC, in table order (§3 and §4).

    An unanswered cancer history (None) is never read as "no": with numbness it takes the
    emergency reading. Follow-ups pass the intake's answer as a bool (missing there is false).
    """
    numb_yes = get("numbness_tingling") is True
    if get("limb_weakness") is True or get("bowel_bladder") is True or (
            numb_yes and cancer is not False):
        rules.append("NEURO")
        ranks.append(_EMERGENCY)
    if get("chest_symptoms") is True:
        rules.append("CHEST")
        ranks.append(_EMERGENCY)
    if numb_yes and cancer is False:
        rules.append("NEURO_SENSORY")
        ranks.append(_URGENT)
    if with_cancer_rule and cancer is True:
        rules.append("CANCER_HISTORY")
        ranks.append(_URGENT)
    if get("weight_loss") is True or get("fever_chills") is True or get("night_sweats") is True:
        rules.append("SYSTEMIC")
        ranks.append(_URGENT)


def assess(answers: Mapping[str, object]) -> Assessment:
    """Assess an initial check-in (CLINICAL.md section 3)."""
    get = answers.get
    cancer = get("cancer_history")
    chest = get("chest_symptoms")
    weight = get("weight_loss")
    fever = get("fever_chills")
    sweats = get("night_sweats")
    weak = get("limb_weakness")
    numb = get("numbness_tingling")
    bowel = get("bowel_bladder")
    age = get("age_years")
    duration = get("duration_days")
    pain = get("pain_score")
    injury = get("injury_before") is True
    constant = get("constant") is True

    old = age is not None and age >= 50
    severe = pain is not None and pain >= 7

    # Concerning features, in feature-table order.
    features: list[str] = []
    if constant and get("relieved_by_rest") is not True:
        features.append("F_CONSTANT")
    if get("progressive") is True:
        features.append("F_PROGRESSIVE")
    if duration is not None and (
        duration > 42 or (duration >= 28 and get("treatment_no_relief") is True)
    ):
        features.append("F_PERSISTENT")
    if get("night_pain") is True:
        features.append("F_NIGHT")
    if severe and constant and not injury:
        features.append("F_UNPROVOKED_SEVERE")
    n_features = len(features)

    rules: list[str] = []
    ranks: list[int] = []
    _red_flag_rules(get, cancer, rules, ranks, with_cancer_rule=True)
    if n_features >= 3 or (n_features >= 2 and old):
        rules.append("MANY_FEATURES")
        ranks.append(_URGENT)
    missing: tuple[str, ...] = ()
    if (
        cancer is None
        or chest is None
        or weight is None
        or fever is None
        or sweats is None
        or weak is None
        or numb is None
        or bowel is None
    ):
        missing = tuple(f for f in RED_FLAG_FIELDS if get(f) is None)
        rules.append("INCOMPLETE")
        ranks.append(_SOON)
    if n_features:
        rules.append("CONCERNING")
        ranks.append(_SOON)
    if injury and (severe or old):
        rules.append("TRAUMA")
        ranks.append(_SOON)
    if not rules:
        return _MECHANICAL
    return _finish(rules, ranks, tuple(features), missing)


_MECHANICAL = Assessment(Level.SELF_CARE, ("MECHANICAL",))


def assess_followup(
    answers: Mapping[str, object],
    *,
    baseline_pain_score: int | None,
    final_check: bool,
) -> Assessment:
    """Assess a follow-up check (CLINICAL.md section 4).

    ``answers`` holds the follow-up answers plus the intake's ``cancer_history`` (missing means
    false here). ``baseline_pain_score`` is the intake's pain score (``None`` if not answered).
    """
    get = answers.get
    status = get("status")
    if status not in STATUS_VALUES:
        status = None  # an unknown status is treated as not answered
    pain = get("pain_score")
    cancer_yes = get("cancer_history") is True
    night_yes = get("night_pain") is True

    # The two readings of section 4.
    if status == "gone" and pain is not None and pain >= 3:
        status = "better"
    # With status "better", a missing pain score counts as 3 or more.
    better_high = status == "better" and (pain is None or pain >= 3)
    better_low = status == "better" and not better_high

    chest = get("chest_symptoms")
    weight = get("weight_loss")
    fever = get("fever_chills")
    sweats = get("night_sweats")
    weak = get("limb_weakness")
    numb = get("numbness_tingling")
    bowel = get("bowel_bladder")

    rules: list[str] = []
    ranks: list[int] = []
    _red_flag_rules(get, cancer_yes, rules, ranks, with_cancer_rule=False)
    missing: tuple[str, ...] = ()
    if (
        status is None
        or chest is None
        or weight is None
        or fever is None
        or sweats is None
        or weak is None
        or numb is None
        or bowel is None
    ):
        missing = tuple(f for f in FOLLOWUP_RED_FLAG_FIELDS if get(f) is None)
        if status is None:
            missing = ("status", *missing)
        rules.append("INCOMPLETE")
        ranks.append(_SOON)
    if status == "worse" or (
        pain is not None and baseline_pain_score is not None and pain >= baseline_pain_score + 2
    ):
        rules.append("WORSENING")
        ranks.append(_URGENT if (night_yes or cancer_yes) else _SOON)
    if status == "same" or (better_high and final_check):
        rules.append("PERSISTENT")
        ranks.append(_URGENT if cancer_yes else _SOON)
    if better_high and not final_check:
        rules.append("IMPROVING")
        ranks.append(_SELF_CARE)
    if not rules and (status == "gone" or better_low):
        return _RESOLVED
    if not rules:  # pragma: no cover - every valid status fires a rule; kept as a safety net
        rules.append("INCOMPLETE")
        ranks.append(_SOON)
    return _finish(rules, ranks, (), missing)


_RESOLVED = Assessment(Level.SELF_CARE, ("RESOLVED",), (), True)


def explain(reasons: Iterable[str]) -> list[tuple[str, str]]:
    """Pair each reason id with its clinician-facing sentence."""
    return [(rid, RULE_TEXT[rid]) for rid in reasons]
