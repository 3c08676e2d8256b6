"""Webhook load benchmark (issue 5): /twilio/sms mid-conversation next to a bare endpoint.

Run from the repository root (needs PostgreSQL on 127.0.0.1:5432 and `wrk`):

    .venv/bin/python benchmarks/webhook_load.py [--duration 10] [--connections 8]
                                                [--rate 100] [--write-docs]

What it does, all on 127.0.0.1, bounded in time, cleaning up after itself:
1. creates a fresh PostgreSQL database (dropped at the end), migrates it, and seeds one clinic
   and N patients, each mid-intake (they texted the start keyword; the service asked its first
   question), with the service's own use case;
2. pre-signs every request (X-Twilio-Signature with RequestValidator.compute_signature): each
   has its own MessageSid and patient, and answers that patient's next question with a reply
   that keeps the conversation going (never its last answer);
3. starts gunicorn (GUNICORN_ARGS below) on benchmarks/bench_app.py, which adds to the real
   app POST /bench/bare answering fixed TwiML and two reference endpoints (/bench/accept,
   /bench/floor: see that file): all are served by the same processes with the same settings;
4. closed loop, wrk: `--duration` seconds against /bench/bare, /bench/accept, /bench/floor
   and /twilio/sms in turn (fixed connections); requests per second, p50, p99, the ratios;
5. open loop, this script: exactly `--rate` requests per second for `--fixed-seconds` seconds
   against each endpoint, latency measured from each request's scheduled start (so a stall
   shows up as latency, not as fewer requests); p50 and p99.
Targets: ratio >= 0.25; p99 < 50 ms for /twilio/sms at 100 requests per second.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AUTH_TOKEN = "bench-twilio-auth-token"
CLINIC_NUMBER = "+16175550900"
HOST = "127.0.0.1"
# The same for both endpoints: threaded workers, keep-alive for wrk's connections.
GUNICORN_ARGS = ["-k", "gthread", "--keep-alive", "10", "--backlog", "256",
                 "--log-level", "warning"]
# Replies that keep an intake going: eight red-flag "no"s, then age and duration. An intake has
# 17 questions, so a patient who gets at most this many replies is still mid-conversation.
REPLIES = ["no", "no", "no", "no", "no", "no", "no", "no", "45", "2 weeks"]
HARD_LIMIT_S = 600  # the whole run, whatever happens

TARGET_RATIO = 0.25
TARGET_P99_MS = 50.0


# ---- set-up -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def admin() -> psycopg.Connection:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


def create_database() -> str:
    name = f"triage_bench_{uuid.uuid4().hex[:8]}"
    with admin() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def settle(url: str) -> None:
    """Between runs: the previous run's writes are checkpointed and vacuumed now, so that
    PostgreSQL does not do it in the middle of the next endpoint's run."""
    with psycopg.connect(make_url(url).render_as_string(hide_password=False), autocommit=True,
                         connect_timeout=5) as connection:
        connection.execute("VACUUM ANALYZE")
        connection.execute("CHECKPOINT")
    time.sleep(1)


def drop_database(url: str) -> None:
    name = make_url(url).database
    with admin() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def patient_phone(n: int) -> str:
    # +1 617 2xx xxxx: valid US numbers, distinct from the tests' 555 range.
    return f"+1617{2000000 + n:07d}"


def seed(url: str, patients: int) -> None:
    """Migrates, then one clinic and `patients` patients who each started an intake by
    texting PAIN (so each has consent and an active check-in waiting for its first answer)."""
    from service.accounts.clinics import create_clinic
    from service.conversations.inbound import handle_inbound_sms
    from service.store import Database
    from service.store.migrate import upgrade

    upgrade(url)
    db = Database(url)
    now = datetime.now(UTC)
    with db.transaction() as session:
        create_clinic(session, name="Bench Clinic", numbers=[CLINIC_NUMBER])
    batch = 250
    for start in range(0, patients, batch):
        with db.transaction() as session:
            for n in range(start, min(start + batch, patients)):
                result = handle_inbound_sms(session, to=CLINIC_NUMBER, from_=patient_phone(n),
                                            body="PAIN", sid=f"SMseed{n:026d}", now=now)
                assert result.replies, result
    db.dispose()


def signed_requests(base_url: str, first: int, count: int, rounds: int,
                    tag: str) -> list[tuple[str, str]]:
    """(signature, body) for patients first..first+count-1, round by round, so consecutive
    requests go to different patients and each patient's replies come in order."""
    validator = RequestValidator(AUTH_TOKEN)
    url = base_url + "/twilio/sms"
    out = []
    for r in range(rounds):
        for n in range(first, first + count):
            params = {"MessageSid": f"SM{tag}{r:02d}{n:08d}".ljust(34, "0"),
                      "AccountSid": "AC" + "0" * 32, "From": patient_phone(n),
                      "To": CLINIC_NUMBER, "Body": REPLIES[r], "NumMedia": "0"}
            out.append((validator.compute_signature(url, params), urlencode(params)))
    return out


def write_lines(path: Path, items: list[tuple[str, str]]) -> None:
    path.write_text("".join(f"{sig}\t{body}\n" for sig, body in items))


# ---- gunicorn -----------------------------------------------------------------------------


@contextlib.contextmanager
def gunicorn(url: str, port: int, workdir: Path, workers: int, threads: int):
    env = {**os.environ, "DATABASE_URL": url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "PUBLIC_BASE_URL": f"http://{HOST}:{port}", "ENV": "development",
           "SECRET_KEY": "bench", "LOG_LEVEL": "WARNING", "SIMULATOR_ENABLED": "false",
           "SPOOL_DIR": str(workdir / "spool"), "BROKER_DIR": str(workdir / "broker")}
    for name in ("REDIS_URL", "BROKER_URL", "TWILIO_ACCOUNT_SID"):
        env.pop(name, None)  # no broker, no sender: the request path alone is measured
    settings = ["-w", str(workers), "--threads", str(threads), *GUNICORN_ARGS]
    # The product's gunicorn.conf.py (its hooks), with the settings above on top of it.
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
               *settings, "-b", f"{HOST}:{port}",
               "--chdir", str(ROOT / "benchmarks"), "--pythonpath", str(ROOT), "bench_app:app"]
    log = open(workdir / "gunicorn.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError("gunicorn exited: " + (workdir / "gunicorn.log").read_text())
            with contextlib.suppress(OSError):
                c = http.client.HTTPConnection(HOST, port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status in (200, 503):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not answer within 30 s")
            time.sleep(0.2)
        yield process, " ".join(["gunicorn", "-c", "gunicorn.conf.py", *settings,
                                 "-b", f"{HOST}:{port}",
                                 "--chdir", "benchmarks", "--pythonpath", ".",
                                 "bench_app:app"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        log.close()


# ---- CPU accounting -----------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def server_cpu(gunicorn_pid: int, database: str) -> dict[str, float]:
    """CPU seconds used so far by the gunicorn processes and by the benchmark database's
    PostgreSQL backends (a backend that exits takes its count with it: they live as long as
    the pooled connections, i.e. the whole run)."""
    app = pg = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == gunicorn_pid or ppid == gunicorn_pid:
            app += _cpu_seconds(pid)
        elif cmdline.startswith("postgres:") and f" {database} " in cmdline:
            pg += _cpu_seconds(pid)
    return {"app": app, "pg": pg}


# ---- closed loop (wrk) --------------------------------------------------------------------


def run_wrk(port: int, path: str, lines: Path, *, duration: int, connections: int,
            threads: int) -> dict:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "5s",
               "-s", str(ROOT / "benchmarks" / "webhook_load.lua"), f"http://{HOST}:{port}",
               "--", str(lines), path, str(threads)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60,
                         check=True).stdout
    match = re.search(r"^WRK_JSON (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no result from wrk:\n{out}")
    result = json.loads(match.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


# ---- open loop (fixed rate) ---------------------------------------------------------------


def feed_at_rate(jobs: queue.Queue, worker, workers: int, items: list, *, rate: float,
                 total: int) -> float:
    """The open loop's generator: `workers` threads run `worker` (which takes
    (scheduled perf_counter time, item) from `jobs` until None); item i is put at exactly
    start + i / rate whatever the answers do. Returns the start; the threads are joined."""
    pool = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in pool:
        thread.start()
    start = time.perf_counter() + 0.05
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        jobs.put((scheduled, items[i]))
    for _ in pool:
        jobs.put(None)
    for thread in pool:
        thread.join(timeout=30)
    return start


def fixed_rate(port: int, path: str, items: list[tuple[str, str]], *, rate: float,
               seconds: float, workers: int = 16) -> dict:
    """Sends request i at start + i/rate whatever happened to the others; each latency runs
    from the scheduled start to the end of the response."""
    total = int(rate * seconds)
    if len(items) < total:
        raise ValueError(f"{total} requests need {total} prepared bodies, have {len(items)}")
    jobs: queue.Queue = queue.Queue()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        while True:
            job = jobs.get()
            if job is None:
                return
            scheduled, (signature, body) = job
            headers = {"Content-Type": "application/x-www-form-urlencoded",
                       "X-Twilio-Signature": signature}
            for attempt in (1, 2):
                try:
                    connection.request("POST", path, body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                    break
                except (http.client.HTTPException, OSError) as exc:
                    connection.close()
                    connection = http.client.HTTPConnection(HOST, port, timeout=10)
                    if attempt == 2:
                        status = f"error {type(exc).__name__}"
            elapsed = time.perf_counter() - scheduled
            with lock:
                latencies.append(elapsed)
                if status != 200:
                    failures.append(str(status))

    start = feed_at_rate(jobs, worker, workers, items, rate=rate, total=total)
    sent_for = time.perf_counter() - start
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1)] * 1000

    return {"requests": len(latencies), "seconds": sent_for, "failures": len(failures),
            "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": ordered[-1] * 1000,
            "mean_ms": statistics.fmean(ordered) * 1000}


# ---- report -------------------------------------------------------------------------------


ENDPOINTS = (  # closed-loop rows: results key, path, what it is
    ("bare", "/bench/bare", "fixed TwiML"),
    ("accept", "/bench/accept", "reference: signature + store the text, one INSERT"),
    ("floor", "/bench/floor", "reference: the same step in 5 hand-written Core statements"),
    ("sms", "/twilio/sms", "the product, mid-conversation"),
)


def report(results: dict) -> str:
    runs = results["wrk"]
    bare, sms = runs["bare"], runs["sms"]
    fb, fs = results["fixed"]["bare"], results["fixed"]["sms"]
    ratio = sms["rps"] / bare["rps"]
    ok_ratio, ok_p99 = ratio >= TARGET_RATIO, fs["p99_ms"] < TARGET_P99_MS
    s = results["settings"]
    lines = [
        "## Webhook load",
        "",
        "Command (from the repository root; PostgreSQL on 127.0.0.1:5432, `apt-get install "
        "wrk`):",
        "",
        "```",
        s["command"],
        "```",
        "",
        f"Measured {s['when']} on the development box ({s['machine']}; load average "
        f"{s['load_before']} before the run: other engineers' test suites share the 2 cores, "
        "so figures are noisy). Server: "
        f"`{s['gunicorn']}` (benchmarks/bench_app.py = the real app plus three endpoints that "
        "exist only for this benchmark), LOG_LEVEL=WARNING, no broker; a fresh PostgreSQL "
        f"database with one clinic and {s['patients']} patients mid-intake for /twilio/sms "
        "(and others for /bench/floor). Every request is pre-signed and has its own "
        "MessageSid. Every /twilio/sms request answers its patient's next question (never the "
        "last one), so each does the whole use case: signature check, patient lock with the "
        "clinic and any earlier receipt, active check-in, engine step, check-in update, the "
        "text and its reply, the receipt, one transaction (five statements and the commit).",
        "",
        "The two reference endpoints say where the floor is: /bench/accept checks the "
        "signature and stores the text (one INSERT and a commit) and replies nothing, the "
        "least any webhook can do when Twilio does not retry inbound SMS, store-and-forward "
        "designs included; /bench/floor does the same conversation step as /twilio/sms in five "
        "hand-written SQLAlchemy Core statements, without the ORM and without the application "
        "around it (it handles only a consented patient answering, so it measures, it does "
        "not serve).",
        "",
        f"Closed loop: `wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s` against "
        "each endpoint in turn, on the same server.",
        "",
        "| endpoint | requests | req/s | ratio to bare | p50 ms | p90 ms | p99 ms "
        "| errors / non-2xx | CPU ms/req: app + PostgreSQL |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, path, what in ENDPOINTS:
        r = runs[key]
        errors = sum(r[k] for k in ("errors_connect", "errors_read", "errors_write",
                                    "errors_timeout"))
        lines.append(f"| {path} ({what}) | {r['requests']} | {r['rps']:.0f} | "
                     f"{r['rps'] / bare['rps']:.2f} | {r['p50_us'] / 1000:.1f} "
                     f"| {r['p90_us'] / 1000:.1f} | {r['p99_us'] / 1000:.1f} | "
                     f"{errors} / {r['non_2xx']} | {r['app_cpu_ms_per_request']:.2f} + "
                     f"{r['pg_cpu_ms_per_request']:.2f} |")
    lines += [
        "",
        f"**Throughput ratio /twilio/sms : bare = {ratio:.2f}** (target >= {TARGET_RATIO}: "
        f"{'met' if ok_ratio else 'NOT met'}).",
        "",
        f"Open loop: exactly {s['rate']:.0f} requests per second for {s['fixed_seconds']:.0f} s "
        "per endpoint (this script's generator, latency from each request's scheduled start):",
        "",
        "| endpoint | requests | failures | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("/bench/bare", fb), ("/twilio/sms", fs)):
        lines.append(f"| {name} | {r['requests']} | {r['failures']} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} |")

    def cpu(r: dict) -> float:
        return r["app_cpu_ms_per_request"] + r["pg_cpu_ms_per_request"]

    lines += [
        "",
        f"**p99 of /twilio/sms at {s['rate']:.0f} req/s = {fs['p99_ms']:.1f} ms** (target < "
        f"{TARGET_P99_MS:.0f} ms: {'met' if ok_p99 else 'NOT met'}).",
        "",
        "Reading the figures. Every endpoint is CPU-bound on the same 2 cores (wrk, gunicorn "
        "and PostgreSQL share them, and so do other test runs), so throughput goes with the "
        f"inverse of CPU per request: the bare endpoint costs {cpu(bare):.2f} ms, storing one "
        f"text {cpu(runs['accept']):.2f} ms, the hand-written step {cpu(runs['floor']):.2f} ms "
        f"and the webhook {sms['app_cpu_ms_per_request']:.2f} ms in gunicorn plus "
        f"{sms['pg_cpu_ms_per_request']:.2f} ms in PostgreSQL. A ratio of {TARGET_RATIO} would "
        f"need the whole webhook in about {cpu(bare) / TARGET_RATIO:.1f} ms of CPU, which is "
        "about what a signature check, one INSERT and a commit cost here "
        f"(/bench/accept's ratio: {runs['accept']['rps'] / bare['rps']:.2f}). At "
        f"{s['rate']:.0f} req/s the webhook needs {s['rate'] * cpu(sms) / 1000:.2f} CPU-seconds "
        "per second, so its p99 stays low only while the box has that much to spare.",
        "",
    ]
    return "\n".join(lines)


def write_docs(section: str) -> None:
    path = ROOT / "docs" / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Webhook load\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


# ---- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="wrk seconds per endpoint")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--gthreads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--fixed-seconds", type=float, default=10.0)
    parser.add_argument("--write-docs", action="store_true",
                        help="write the results into docs/BENCHMARKS.md (## Webhook load)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    if not 1 <= args.duration <= 60 or not 1 <= args.fixed_seconds <= 60 or \
            not 1 <= args.rate <= 1000 or not 1 <= args.connections <= 64:
        parser.error("keep the load bounded: duration and fixed-seconds 1-60, rate 1-1000, "
                     "connections 1-64")
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("hard limit")))
    signal.alarm(HARD_LIMIT_S)

    fixed_total = int(args.rate * args.fixed_seconds)
    # Patients: the wrk pool answers up to len(REPLIES) rounds; the fixed-rate pool 2 rounds.
    wrk_pool = args.patients
    floor_pool = args.patients // 2
    fixed_pool = fixed_total // 2 + 1
    warm_pool = 100
    load_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    url = create_database()
    workdir = Path(tempfile.mkdtemp(prefix="webhook-load-"))
    try:
        print(f"seeding {wrk_pool + fixed_pool + warm_pool} patients in {make_url(url).database}",
              flush=True)
        seed(url, wrk_pool + fixed_pool + warm_pool + floor_pool)
        port = free_port()
        base = f"http://{HOST}:{port}"
        wrk_items = signed_requests(base, 0, wrk_pool, len(REPLIES), "A")
        fixed_items = signed_requests(base, wrk_pool, fixed_pool, 2, "B")
        warm_items = signed_requests(base, wrk_pool + fixed_pool, warm_pool, 2, "C")
        floor_items = signed_requests(base, wrk_pool + fixed_pool + warm_pool, floor_pool,
                                      len(REPLIES), "D")
        # /bench/accept stores each text once: every request needs its own MessageSid.
        accept_items = signed_requests(base, 0, 2500 * args.duration, 1, "E")
        bare_items = [(sig, body) for sig, body in fixed_items]  # the bare endpoint ignores them
        write_lines(workdir / "sms.txt", wrk_items)
        write_lines(workdir / "bare.txt", wrk_items[:5000])
        write_lines(workdir / "accept.txt", accept_items)
        write_lines(workdir / "floor.txt", floor_items)
        results: dict = {"wrk": {}, "fixed": {}}
        with gunicorn(url, port, workdir, args.workers, args.gthreads) as (process,
                                                                      gunicorn_command):
            print("warming up", flush=True)
            fixed_rate(port, "/twilio/sms", warm_items, rate=100, seconds=2)
            fixed_rate(port, "/bench/bare", bare_items, rate=100, seconds=2)
            database = make_url(url).database
            for name, path, lines in (("bare", "/bench/bare", workdir / "bare.txt"),
                                      ("accept", "/bench/accept", workdir / "accept.txt"),
                                      ("floor", "/bench/floor", workdir / "floor.txt"),
                                      ("sms", "/twilio/sms", workdir / "sms.txt")):
                print(f"wrk {path} for {args.duration} s", flush=True)
                settle(url)
                before = server_cpu(process.pid, database)
                result = run_wrk(port, path, lines, duration=args.duration,
                                 connections=args.connections, threads=args.threads)
                after = server_cpu(process.pid, database)
                for part in ("app", "pg"):
                    result[f"{part}_cpu_ms_per_request"] = (
                        (after[part] - before[part]) * 1000 / max(result["requests"], 1))
                results["wrk"][name] = result
                if results["wrk"][name]["wrapped_threads"] and name != "bare":
                    raise RuntimeError(f"wrk ran out of prepared requests for {path}: use more "
                                       "--patients or a shorter --duration")
            for name, path in (("bare", "/bench/bare"), ("sms", "/twilio/sms")):
                print(f"{args.rate:.0f} req/s to {path} for {args.fixed_seconds:.0f} s",
                      flush=True)
                results["fixed"][name] = fixed_rate(port, path, fixed_items, rate=args.rate,
                                                    seconds=args.fixed_seconds)
        command = "BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres " \
                  ".venv/bin/python benchmarks/webhook_load.py " + " ".join(argv or sys.argv[1:])
        results["settings"] = {
            "command": command.strip(), "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"Python {platform.python_version()}, {platform.machine()}, "
                       f"{os.cpu_count()} vCPUs, wrk and PostgreSQL on the same box",
            "load_before": load_before, "gunicorn": gunicorn_command,
            "patients": wrk_pool, "threads": args.threads, "connections": args.connections,
            "duration": args.duration, "rate": args.rate, "fixed_seconds": args.fixed_seconds,
        }
        section = report(results)
        print("\n" + section)
        print(json.dumps({k: v for k, v in results.items() if k != "settings"}, indent=1))
        if args.write_docs:
            write_docs(section)
            print("written to docs/BENCHMARKS.md")
        bare, sms = results["wrk"]["bare"], results["wrk"]["sms"]
        met = sms["rps"] / bare["rps"] >= TARGET_RATIO and \
            results["fixed"]["sms"]["p99_ms"] < TARGET_P99_MS
        return 0 if met else 1
    finally:
        signal.alarm(0)
        shutil.rmtree(workdir, ignore_errors=True)
        drop_database(url)


if __name__ == "__main__":
    sys.exit(main())
