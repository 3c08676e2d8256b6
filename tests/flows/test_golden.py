"""Golden conversations: each file under golden/ holds replies and the exact expected messages,
outcome and level. Set UPDATE_GOLDEN=1 to rewrite the expectations, then review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.flows.golden_runner import run_case

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*.yaml"))


def test_there_are_golden_cases_in_both_languages():
    langs = {yaml.safe_load(p.read_text("utf-8")).get("lang", "en") for p in CASES}
    assert {"en", "es"} <= langs
    assert len(CASES) >= 10


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path: Path):
    case = yaml.safe_load(path.read_text("utf-8"))
    got = run_case(case)
    if os.environ.get("UPDATE_GOLDEN"):
        case["expect"] = got
        path.write_text(yaml.safe_dump(case, allow_unicode=True, sort_keys=False, width=100),
                        "utf-8")
        return
    assert "expect" in case, f"{path.name} has no expectations; run with UPDATE_GOLDEN=1"
    assert got == case["expect"]
