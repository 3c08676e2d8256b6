"""Worker and beat subprocesses for the multi-process task tests (stopped by their own pid)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from service.config import ENV_VARS

CELERY = [sys.executable, "-m", "celery", "-A", "tasks.celery_app"]
ROOT = Path(__file__).resolve().parents[2]


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any configuration variable, plus ENV=development
    and `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ENV_VARS and not k.startswith("TRIAGE_")}
    env["ENV"] = "development"
    env.update({k: str(v) for k, v in extra.items()})
    env["PYTHONPATH"] = str(ROOT)
    return env


@contextlib.contextmanager
def celery_process(args: list[str], env: Mapping[str, str], log: Path, *,
                   cwd: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CELERY, *args], env=dict(env), cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # the worker and its pool children, by the group we made
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def wait_for_log(log: Path, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}):\n{log.read_text()}")
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} in {log} within {timeout}s:\n{log.read_text()[-3000:]}")
