"""Microseconds per engine step and per triage call (issue 3: target under 100 µs per step).

Run: .venv/bin/python benchmarks/bench_engine.py [--repeat 7] [--number 2000]
Each figure is timeit's per-call time over `number` calls, repeated `repeat` times; the median
and the minimum of the repeats are printed in microseconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows import engine, triage  # noqa: E402
from flows.loader import get_flow, load_all  # noqa: E402

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
INTAKE_ANSWERS = {
    "chest_symptoms": False, "limb_weakness": False, "bowel_bladder": False,
    "cancer_history": False, "numbness_tingling": False, "weight_loss": False,
    "fever_chills": False, "night_sweats": False, "age_years": 52, "duration_days": 30,
    "injury_before": False, "pain_score": 6, "constant": True, "relieved_by_rest": False,
    "progressive": False, "treatment_no_relief": True, "night_pain": True,
}
FOLLOWUP_ANSWERS = {
    "status": "better", "pain_score": 4, "limb_weakness": False, "bowel_bladder": False,
    "numbness_tingling": False, "chest_symptoms": False, "weight_loss": False,
    "fever_chills": False, "night_sweats": False, "night_pain": False, "cancer_history": False,
}


def state_at(flow, replies, **context):
    ctx = engine.Context(clinic="Elm Clinic", clinic_phone="555-0100", **context)
    state, _ = engine.start(flow, NOW, context=ctx)
    for text in replies:
        state, _ = engine.step(flow, state, engine.Reply(text), NOW)
    return state


def cases():
    intake, followup = get_flow("intake"), get_flow("followup")
    # Mid-intake: the eight red flags answered "no"; the next question is the age.
    at_age = state_at(intake, ["no"] * 8)
    assert intake.nodes[at_age["node"]].field == "age_years"
    at_weight = state_at(intake, ["no"] * 5)  # a yes/no question mid-intake
    stored = json.dumps(at_age)
    reply_age, reply_no = engine.Reply("45"), engine.Reply("no")
    reply_garbled = engine.Reply("maybe")
    at_last = state_at(intake, ["no"] * 8 + ["45", "3 days", "no", "3", "no", "yes", "no", "no"])
    fu_at_pain = state_at(followup, ["2"], baseline_pain_score=6, known={"cancer_history": False})

    def step_age():
        engine.step(intake, at_age, reply_age, NOW)

    def step_no():
        engine.step(intake, at_weight, reply_no, NOW)

    def step_unclear():
        engine.step(intake, at_weight, reply_garbled, NOW)

    def step_age_json():
        state, _ = engine.step(intake, json.loads(stored), reply_age, NOW)
        json.dumps(state)

    def step_last():  # the last answer: assessment, advice and outcome
        engine.step(intake, at_last, reply_no, NOW)

    def step_followup():
        engine.step(followup, fu_at_pain, engine.Reply("4"), NOW)

    def tick_nothing_due():
        engine.step(intake, at_age, engine.Tick(), NOW)

    def assess():
        triage.assess(INTAKE_ANSWERS)

    def assess_followup():
        triage.assess_followup(FOLLOWUP_ANSWERS, baseline_pain_score=6, final_check=False)

    return [
        ("step: reply '45' to the age question mid-intake", step_age),
        ("step: same, state read from JSON and written back", step_age_json),
        ("step: reply 'no' to a yes/no question mid-intake", step_no),
        ("step: unclear reply 'maybe' (re-ask)", step_unclear),
        ("step: last intake answer (assess, advice, outcome)", step_last),
        ("step: follow-up pain score reply", step_followup),
        ("step: Tick with nothing due", tick_nothing_due),
        ("assess (17 answers)", assess),
        ("assess_followup (11 answers)", assess_followup),
    ]


def measure(func, repeat: int, number: int) -> tuple[float, float]:
    per_call = [t / number * 1e6 for t in timeit.repeat(func, repeat=repeat, number=number)]
    return statistics.median(per_call), min(per_call)


def main(argv=None) -> list[tuple[str, float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args(argv)
    load_all()
    rows = []
    print(f"Python {platform.python_version()} on {platform.machine()}; "
          f"repeat={args.repeat}, number={args.number}")
    print(f"{'case':<54} {'median µs':>10} {'min µs':>8}")
    for name, func in cases():
        func()  # warm caches
        median, best = measure(func, args.repeat, args.number)
        rows.append((name, median, best))
        print(f"{name:<54} {median:>10.1f} {best:>8.1f}")
    return rows


if __name__ == "__main__":
    main()
