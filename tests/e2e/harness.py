"""Real processes for the fault tests and benchmarks: a private redis-server, gunicorn, Celery
workers and beats, a TCP proxy in front of PostgreSQL, and seeding and counting helpers.

Every process runs in its own process group (so a kill reaches its pool children) and is
killed when its owner stops; every wait is bounded in time.
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], Any], *, timeout: float, interval: float = 0.2,
             what: str = "condition") -> Any:
    """Polls `condition` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as exc:  # not ready yet (a socket refused, a table not there ...)
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}"
                       + (f" (last error: {last_error!r})" if last_error else ""))


def noon_timezone(now: datetime | None = None) -> str:
    """An Etc/GMT zone where it is about 13:00 now: quiet hours never hold a test's texts."""
    hour = (now or datetime.now(UTC)).hour
    offset = 13 - hour  # -10 .. +13
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3


# ---- processes -----------------------------------------------------------------------------


class Proc:
    """One subprocess in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log_dir: Path):
        self.name, self.argv = name, argv
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill9(self) -> None:
        """kill -9 of the whole group (a Celery worker's pool children die with it)."""
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def stop(self, grace: float = 8.0) -> None:
        if self.alive() and grace > 0:
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (orphaned pool children included) goes.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        every = text.splitlines()
        # A process that died tells why near its first critical line, long before its tail.
        first = next((i for i, line in enumerate(every)
                      if "CRITICAL/" in line or "Unrecoverable error" in line), None)
        if first is None or first >= len(every) - lines:
            return "\n".join(every[-lines:])
        if first + lines >= len(every) - lines:  # the two would overlap: one piece
            return "\n".join(every[max(0, first - 5):])
        return "\n".join(every[max(0, first - 5):first + lines] + ["[…]"] + every[-lines:])


class RedisServer:
    """A private redis-server on its own port (never the shared one on 6379), no persistence:
    a restart loses everything in it, as a lost Redis would."""

    def __init__(self, log_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.log_dir = log_dir
        self.proc: Proc | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.log_dir),
                "--protected-mode", "yes"]
        self.proc = Proc(f"redis-{self.port}-{self.restarts}", argv, env=dict(os.environ),
                         log_dir=self.log_dir)
        wait_for(self.ping, timeout=30, interval=0.05, what=f"redis on {self.port}")
        return self

    def ping(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1,
                             socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill9()
            self.proc.stop()

    def restart(self, down_for: float = 1.0) -> None:
        self.kill()
        time.sleep(down_for)
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=3)


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `stop()` drops every connection and refuses new
    ones (the database "goes away" for whoever connects through it), `start()` brings it back
    on the same port. `pause()` is the nastier fault: connections are still accepted and kept
    open, but nothing is relayed either way (a hung server or network path) until `resume()`."""

    def __init__(self, target: tuple[str, int], port: int | None = None):
        self.target = target
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._relaying = threading.Event()
        self._relaying.set()
        self.connections = 0

    def pause(self) -> None:
        self._relaying.clear()

    def resume(self) -> None:
        self._relaying.set()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        self._listener = listener
        self._running.set()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        with self._lock:
            self._conns.add(client)
        while not self._relaying.wait(0.2):  # paused: accepted, and left hanging
            if not self._running.is_set():
                return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        client.settimeout(None)
        upstream.settimeout(None)
        with self._lock:
            self._conns.add(upstream)
            self.connections += 1
        self._pipe(client, upstream)

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while self._running.is_set():
                if not self._relaying.is_set():
                    time.sleep(0.05)
                    continue
                for key, _ in sel.select(timeout=0.2):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
                with self._lock:
                    self._conns.discard(s)

    def stop(self) -> None:
        """Refuse new connections and cut the open ones (as a database that went down)."""
        self._running.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=2)


def offset_days(seconds: float) -> str:
    """TRIAGE_CLOCK_OFFSET_DAYS for a clock `seconds` ahead (how the tests let a lease run out
    without waiting for it: the replacement process lives that much later)."""
    return f"{seconds / 86400:.6f}"


@dataclass
class Stack:
    """The product as processes, all configured through the environment (12-factor)."""

    database_url: str
    redis: RedisServer
    fake_url: str
    account_sid: str
    auth_token: str
    log_dir: Path
    web_database_url: str | None = None  # e.g. through a TcpProxy
    worker_database_url: str | None = None
    send_rate: float = 100.0
    beat_interval: float = 1.0
    web_port: int = 0

    def __post_init__(self) -> None:
        self.web_port = self.web_port or free_port()
        self.procs: list[Proc] = []
        (self.log_dir / "spool").mkdir(parents=True, exist_ok=True)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def env(self, **extra: str) -> dict[str, str]:
        from service.config import ENV_VARS

        env = {k: v for k, v in os.environ.items() if k not in ENV_VARS
               and not k.startswith("TRIAGE_")}
        env.update({
            "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "ENV": "development",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "SECRET_KEY": "fault-test-secret-key",
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_API_BASE": self.fake_url,
            "PUBLIC_BASE_URL": self.web_url,
            "SPOOL_DIR": str(self.log_dir / "spool"),
            "BROKER_DIR": str(self.log_dir / "broker"),
            "SEND_RATE_PER_SECOND": str(self.send_rate),
            "BEAT_INTERVAL_SECONDS": str(self.beat_interval),
            "SIMULATOR_ENABLED": "false",
            "LOG_LEVEL": "INFO",
        })
        env.update(extra)
        return env

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, argv, env=env, log_dir=self.log_dir)
        self.procs.append(proc)
        return proc

    def web(self, *, workers: int = 2, threads: int = 4, **extra: str) -> Proc:
        env = self.env(**extra)
        if self.web_database_url:
            env["DATABASE_URL"] = self.web_database_url
        proc = self._start("web", [str(VENV_BIN / "gunicorn"), "-w", str(workers), "--threads",
                                   str(threads), "-b", f"127.0.0.1:{self.web_port}",
                                   "--graceful-timeout", "3", "service:create_app()"], env)
        wait_for(lambda: _get(self.web_url + "/healthz") == 200, timeout=90,
                 what="gunicorn /healthz")
        return proc

    def worker(self, name: str, *, concurrency: int = 2, **extra: str) -> Proc:
        env = self.env(**extra)
        if self.worker_database_url:
            env["DATABASE_URL"] = self.worker_database_url
        proc = self._start(f"worker-{name}", [
            str(VENV_BIN / "celery"), "-A", "tasks.celery_app", "worker", "-n",
            f"{name}@127.0.0.1", "-c", str(concurrency), "--pool", "prefork",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"], env)
        wait_for(lambda: "ready." in proc.log_path.read_text(errors="replace") or
                 not proc.alive(), timeout=90, what=f"worker {name} ready")
        assert proc.alive(), proc.tail()
        return proc

    def beat(self, name: str, **extra: str) -> Proc:
        env = self.env(**extra)
        if self.worker_database_url:
            env["DATABASE_URL"] = self.worker_database_url
        schedule = self.log_dir / f"beat-{name}-schedule"
        return self._start(f"beat-{name}", [
            str(VENV_BIN / "celery"), "-A", "tasks.celery_app", "beat", "-s", str(schedule),
            "--max-interval", "1", "-l", "INFO"], env)

    def stop(self, grace: float = 3.0) -> None:
        # All asked at once, then whatever is left after `grace` is killed.
        for proc in self.procs:
            if proc.alive():
                proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            proc.stop(grace=0)

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"---- {p.name} ----\n{p.tail(lines)}" for p in self.procs)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


# ---- seeding -------------------------------------------------------------------------------


def patient_phone(i: int) -> str:
    return f"+1617555{1000 + i:04d}"


def clinic_phone(i: int) -> str:
    return f"+1617555{9000 + i:04d}"


def seed_due_followups(database_url: str, count: int, *, clinics: int = 1,
                       due_at: datetime | None = None, timezone: str | None = None) -> list[str]:
    """`count` patients (consented, each with an open episode and a follow-up due now), spread
    over `clinics` clinics (one sending number each), through the service layer's models.
    Returns the patients' phone numbers."""
    from service.accounts.clinics import create_clinic
    from service.store import Database
    from service.store.models import Episode, FollowUp, Patient

    now = datetime.now(UTC)
    due_at = due_at or now - timedelta(minutes=1)
    tz = timezone or noon_timezone(now)
    db = Database(database_url)
    phones = []
    try:
        with db.transaction() as session:
            made = [create_clinic(session, name=f"Fault Clinic {c}", numbers=[clinic_phone(c)],
                                  timezone=tz) for c in range(clinics)]
            for i in range(count):
                clinic = made[i % clinics]
                patient = Patient(clinic_id=clinic.id, phone_e164=patient_phone(i),
                                  language="en", timezone=tz, consent="given",
                                  consented_at=now - timedelta(days=29),
                                  created_at=now - timedelta(days=29))
                session.add(patient)
                session.flush()
                episode = Episode(clinic_id=clinic.id, patient_id=patient.id, status="open",
                                  opened_at=now - timedelta(days=28), baseline_pain_score=6,
                                  intake_level="soon", last_level="soon")
                session.add(episode)
                session.flush()
                session.add(FollowUp(clinic_id=clinic.id, patient_id=patient.id,
                                     episode_id=episode.id, kind="first", due_at=due_at,
                                     status="scheduled", created_at=now - timedelta(days=28)))
                phones.append(patient.phone_e164)
    finally:
        db.dispose()
    return phones


def seed_clinic(database_url: str, *, number: str, timezone: str | None = None) -> None:
    from service.accounts.clinics import create_clinic
    from service.store import Database

    db = Database(database_url)
    try:
        with db.transaction() as session:
            create_clinic(session, name="Inbound Clinic", numbers=[number],
                          timezone=timezone or noon_timezone())
    finally:
        db.dispose()


# ---- counting ------------------------------------------------------------------------------


@dataclass
class Counts:
    sent: int
    expected: int
    duplicates: int

    def line(self, scenario: str) -> str:
        return (f"[{scenario}] sent={self.sent} expected={self.expected} "
                f"duplicates={self.duplicates}")


def count_sends(messages: Iterable[dict], expected: Iterable[tuple[str, str]]) -> Counts:
    """What the fake Twilio accepted against what the outbox says should have gone:
    `expected` is (to, body) per outbox row; a duplicate is a second copy of one of them."""
    want = collections.Counter(expected)
    got = collections.Counter((m["to"], m["body"]) for m in messages)
    duplicates = sum(max(0, n - want.get(key, 0)) for key, n in got.items())
    sent = sum(min(n, want.get(key, 0)) for key, n in got.items())
    return Counts(sent=sent, expected=sum(want.values()), duplicates=duplicates)


def scalar(engine: sa.Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(sa.text(sql), params).scalar()


def rows(engine: sa.Engine, sql: str, **params: Any) -> list[sa.Row]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text(sql), params))
