"""What a patient answers in the tests: answer sets that give a known level, and the replies
to type for them in the flow's own order (read from the flow, so a reordered flow still works)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from flows.loader import get_flow

# Answers that give each level. Keys are answer fields; values are what the patient types.
SELF_CARE_EN = {
    "chest_symptoms": "no", "limb_weakness": "no", "bowel_bladder": "no",
    "cancer_history": "no", "numbness_tingling": "no", "weight_loss": "no",
    "fever_chills": "no", "night_sweats": "no", "age_years": "45", "duration_days": "2 weeks",
    "injury_before": "no", "pain_score": "3", "constant": "no", "relieved_by_rest": "yes",
    "progressive": "no", "treatment_no_relief": "no", "night_pain": "no",
}  # fmt: skip
SELF_CARE_ES = {
    **{field: "no" for field in SELF_CARE_EN},
    "age_years": "45", "duration_days": "2 semanas", "pain_score": "3", "relieved_by_rest": "sí",
}  # fmt: skip
# The follow-up's red-flag questions, all answered "no".
FOLLOWUP_NO_FLAGS = {
    "limb_weakness": "no", "bowel_bladder": "no", "numbness_tingling": "no",
    "chest_symptoms": "no", "weight_loss": "no", "fever_chills": "no", "night_sweats": "no",
    "night_pain": "no",
}  # fmt: skip
FOLLOWUP_CLEAR_EN = {"status": "2", "pain_score": "2", **FOLLOWUP_NO_FLAGS}


def intake_answers(answers: Mapping[str, str], *, skip: Sequence[str] = (),
                   stop_after: str | None = None) -> list[str]:
    """The patient's replies to the intake questions, in the flow's own order."""
    return flow_answers("intake", answers, skip=skip, stop_after=stop_after)


def followup_answers(answers: Mapping[str, str], *, stop_after: str | None = None) -> list[str]:
    """The replies to the follow-up questions, in the flow's own order; they end at the first
    field `answers` leaves out (a follow-up that ends early, at an emergency answer)."""
    return flow_answers("followup", answers, stop_after=stop_after, partial=True)


def flow_answers(flow_id: str, answers: Mapping[str, str], *, skip: Sequence[str] = (),
                 stop_after: str | None = None, partial: bool = False) -> list[str]:
    """Replies in the order of `flow_id`'s questions, leaving out `skip` and ending after
    `stop_after`; a field not in `answers` is an error unless `partial` (then it ends there)."""
    replies = []
    for node in get_flow(flow_id).questions:
        if node.field in skip:
            continue
        if node.field not in answers and partial:
            break
        replies.append(answers[node.field])
        if node.field == stop_after:
            break
    return replies
