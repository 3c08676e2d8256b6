"""Test tools that come from the npm registry (tests/e2e/package.json and its lock file):
installed with `npm ci` the first time a test needs one of them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent
AXE_JS = TOOLS / "node_modules" / "axe-core" / "axe.min.js"
FHIR_R4_SCHEMA = (TOOLS / "node_modules" / "@asymmetrik" / "fhir-json-schema-validator"
                  / "fhir.schema.json")


def npm_tool(path: Path) -> Path:
    """`path` inside tests/e2e/node_modules, installed from the lock file when missing."""
    if not path.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(f"npm is missing (apt-get install -y npm): {path.name} comes from npm",
                        pytrace=False)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(TOOLS)],
                       check=True, timeout=300)
    return path
