"""The rooms' import contracts (pyproject's [tool.importlinter]) hold: arrows only downward, no
loops, flows/ pure. A deliberately added upward import fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contracts can fail: a copy of the tree where the store imports the web is refused."""
    copy = tmp_path / "tree"
    copy.mkdir()
    for name in ("flows", "service", "tasks", "pyproject.toml"):
        subprocess.run(["cp", "-r", str(ROOT / name), str(copy / name)], check=True)
    queries = copy / "service" / "store" / "queries.py"
    queries.write_text(queries.read_text() + "\nfrom service.web import health  # upward\n")
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=copy, capture_output=True, text=True,
                            timeout=120, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "service.store is not allowed to import service.web" in result.stdout
