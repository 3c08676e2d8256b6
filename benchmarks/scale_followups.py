"""Scale benchmark: claiming, enqueueing and starting due follow-ups among many scheduled
ones, and outbound throughput through the fake Twilio over HTTP.

    .venv/bin/python benchmarks/scale_followups.py claim              # 1,000,000 / 10,000 due,
                                                                      # then 100,000 / 10,000
    .venv/bin/python benchmarks/scale_followups.py claim --sizes 1000000:1000
    .venv/bin/python benchmarks/scale_followups.py start --sizes 100000:10000
    .venv/bin/python benchmarks/scale_followups.py send               # 2 workers, 4 numbers

`claim`: a fresh PostgreSQL database (dropped afterwards) gets TOTAL scheduled follow-ups, DUE of
them due now (bulk INSERT ... SELECT generate_series), then a separate process runs the real
beat job `tasks.dispatch_due_followups` (one UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP
LOCKED LIMIT 500) RETURNING per batch, with a lease, then one `tasks.start_followups` message
per 100 claimed, published to a private redis-server) until nothing is left, measuring wall
time and peak memory (ru_maxrss of that process, and the tracemalloc peak in a second pass).
EXPLAIN (ANALYZE, BUFFERS) of the claim statement shows which indexes it uses.

`start`: the same seed, then the Procfile's worker line (`celery -A tasks.celery_app worker
--loglevel=INFO --concurrency=2`, dry-run sender) on a private redis-server; the beat job is run
once by a separate process, and the clock runs until every due follow-up has its first text in
the outbox; reports the time, the worker's memory (all its processes) and the CPU of the worker
and of its PostgreSQL backends (this machine is shared: CPU per follow-up is the figure that
does not depend on what else runs).

`send`: outbox rows for patients of several clinics (one sending number each) are sent by two
Celery worker processes through the fake Twilio server over HTTP, with the per-number rate
limit on; reports throughput and the closest spacing of two texts from one number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def create_database() -> str:
    import psycopg
    from sqlalchemy.engine import make_url

    from service.store import migrate

    name = f"triage_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    return url


def drop_database(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- claim ----------------------------------------------------------------------------------


def seed(url: str, total: int, due: int) -> float:
    """TOTAL follow-ups (one patient and open episode each), DUE of them due now; seconds."""
    import psycopg

    from service.accounts.clinics import create_clinic
    from service.store import Database
    from tests.e2e.harness import noon_timezone

    db = Database(url)
    with db.transaction() as session:
        clinic_id = create_clinic(session, name="Scale Clinic", numbers=["+16175559000"],
                                  timezone=noon_timezone()).id
    db.dispose()
    started = time.perf_counter()
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as connection:
        connection.execute("""
            INSERT INTO patients (clinic_id, phone_e164, language, calls_allowed, consent,
                                  opted_out, number_invalid, created_at)
            SELECT %(clinic)s, '+1617' || lpad(g::text, 7, '0'), 'en', false, 'given', false,
                   false, now() - interval '30 days'
            FROM generate_series(1, %(total)s) AS g""", {"clinic": clinic_id, "total": total})
        connection.execute("""
            INSERT INTO episodes (clinic_id, patient_id, status, opened_at, baseline_pain_score,
                                  intake_level, last_level)
            SELECT clinic_id, id, 'open', now() - interval '28 days', 6, 'soon', 'soon'
            FROM patients""")
        # The first DUE episodes are due (in the last hour); the rest over the next 6 weeks.
        connection.execute("""
            INSERT INTO followups (clinic_id, patient_id, episode_id, kind, due_at, status,
                                   attempts, created_at)
            SELECT clinic_id, patient_id, id, 'first',
                   CASE WHEN id <= %(due)s THEN now() - (id %% 3600) * interval '1 second'
                        ELSE now() + interval '1 hour' + (id %% 60480) * interval '1 minute'
                   END,
                   'scheduled', 0, now() - interval '28 days'
            FROM episodes""", {"due": due})
        connection.execute("ANALYZE")
    return time.perf_counter() - started


CLAIM_CHILD = r"""
import json, resource, sys, time, tracemalloc
sys.path.insert(0, sys.argv[3])
from service.config import load_config
from tasks.celery_app import make_celery

config = load_config({"DATABASE_URL": sys.argv[1], "REDIS_URL": sys.argv[2],
                      "SECRET_KEY": "bench", "ENV": "development"})
app = make_celery(config)
dispatch = app.tasks["tasks.dispatch_due_followups"]
trace = sys.argv[4] == "trace"
app.triage.db.ping()  # connect before measuring
if trace:
    tracemalloc.start()
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
calls, claimed, slowest = 0, 0, 0.0
started = time.perf_counter()
while True:
    t = time.perf_counter()
    n = dispatch()  # the beat job, run in this process: claim, commit, publish
    slowest = max(slowest, time.perf_counter() - t)
    calls += 1
    claimed += n
    if n == 0:
        break
elapsed = time.perf_counter() - started
out = {"claimed": claimed, "calls": calls, "seconds": elapsed, "slowest_call": slowest,
       "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "base_rss_kb": base_rss}
if trace:
    out["tracemalloc_peak_kb"] = tracemalloc.get_traced_memory()[1] // 1024
print(json.dumps(out))
"""


def run_claim(url: str, redis_url: str, mode: str) -> dict:
    answer = subprocess.run([sys.executable, "-c", CLAIM_CHILD, url, redis_url, str(ROOT), mode],
                            capture_output=True, text=True, timeout=900, cwd=ROOT,
                            env={**os.environ, "LOG_LEVEL": "WARNING"})
    if answer.returncode != 0:
        raise RuntimeError(answer.stderr[-3000:])
    return json.loads(answer.stdout.strip().splitlines()[-1])


def explain_claim(url: str) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the real claim statement, rolled back."""
    from sqlalchemy.dialects import postgresql

    from service.followups import schedule as followups
    from service.store import make_engine

    query = followups.claim_statement(datetime.now(UTC))
    sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            plan = [r[0] for r in connection.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql)]
            connection.rollback()
    finally:
        engine.dispose()
    return plan


def claim_scenario(total: int, due: int, redis_url: str, *, trace: bool = True) -> dict:
    import redis
    import sqlalchemy as sa

    from service.store import make_engine

    url = create_database()
    try:
        seconds = seed(url, total, due)
        plan = explain_claim(url)
        timed = run_claim(url, redis_url, "time")
        queued = redis.Redis.from_url(redis_url).llen("celery")
        engine = make_engine(url)
        with engine.begin() as connection:
            claimed = connection.execute(sa.text(
                "SELECT count(*) FROM followups WHERE status = 'claimed'")).scalar()
            # Put them back (and empty the queue) for the second, traced pass.
            connection.execute(sa.text("UPDATE followups SET status = 'scheduled', "
                                       "claimed_until = NULL WHERE status = 'claimed'"))
            connection.exec_driver_sql("ANALYZE followups")
        engine.dispose()
        redis.Redis.from_url(redis_url).flushdb()  # the private benchmark redis only
        traced = run_claim(url, redis_url, "trace") if trace else None
        redis.Redis.from_url(redis_url).flushdb()
        return {"total": total, "due": due, "seed_seconds": seconds, "claimed": claimed,
                "queued": queued, "timed": timed, "traced": traced, "plan": plan}
    finally:
        drop_database(url)


def cmd_claim(args) -> None:
    from tests.e2e.harness import RedisServer

    log_dir = Path(tempfile.mkdtemp(prefix="bench-claim-"))
    redis_server = RedisServer(log_dir).start()
    results = []
    try:
        for spec in args.sizes:
            total, due = (int(x) for x in spec.split(":"))
            print(f"== {total:,} scheduled, {due:,} due", flush=True)
            result = claim_scenario(total, due, redis_server.url, trace=not args.no_trace)
            results.append(result)
            t, tr = result["timed"], result["traced"]
            print(f"seeded in {result['seed_seconds']:.1f}s; claimed {t['claimed']:,} "
                  f"(rows claimed {result['claimed']:,}, messages queued {result['queued']:,}) "
                  f"in {t['seconds']:.2f}s over {t['calls']} dispatch calls "
                  f"({1000 * t['seconds'] / max(1, t['claimed']):.3f} ms per follow-up, "
                  f"slowest call {1000 * t['slowest_call']:.0f} ms); "
                  f"maxrss {t['maxrss_kb'] / 1024:.1f} MiB (at start {t['base_rss_kb'] / 1024:.1f}"
                  f" MiB)" + (f"; tracemalloc peak {tr['tracemalloc_peak_kb'] / 1024:.2f} MiB "
                              f"(traced pass {tr['seconds']:.2f}s)" if tr else ""), flush=True)
            print("EXPLAIN (ANALYZE, BUFFERS) of one claim batch:")
            print("\n".join("    " + line for line in result["plan"]), flush=True)
    finally:
        redis_server.stop()
        shutil.rmtree(log_dir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


# ---- start --------------------------------------------------------------------------------


def _group_rss_kb(pid: int) -> int:
    """Resident memory of a process and its children (a Celery worker and its pool)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines()
                              if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def _cpu_seconds(pids) -> float:
    """User + system CPU of these processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def _group_pids(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def start_scenario(total: int, due: int, log_dir: Path, *, timeout: float) -> dict:
    """The real beat job claims and enqueues; the Procfile's worker (celery worker
    --concurrency=2, dry-run sender) starts them; done when every due follow-up has its first
    text in the outbox, as seen by a poll every 0.5 s."""
    import redis
    import sqlalchemy as sa

    from service.store import make_engine
    from tests.e2e.harness import VENV_BIN, Proc, RedisServer, wait_for

    redis_server = RedisServer(log_dir).start()
    url = create_database()
    engine = make_engine(url)
    worker = None
    try:
        seed_seconds = seed(url, total, due)
        plan = explain_claim(url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
        env.update({"PATH": f"{VENV_BIN}:{env.get('PATH', '')}", "PYTHONPATH": str(ROOT),
                    "ENV": "development", "DATABASE_URL": url, "REDIS_URL": redis_server.url,
                    "SECRET_KEY": "bench", "DRY_RUN": "1", "SPOOL_DIR": str(log_dir / "spool"),
                    "BROKER_DIR": str(log_dir / "broker")})
        # The Procfile's worker line, as it is.
        worker = Proc("worker", [str(VENV_BIN / "celery"), "-A", "tasks.celery_app", "worker",
                                 "--loglevel=INFO", "--concurrency=2"], env=env, log_dir=log_dir)
        wait_for(lambda: "ready." in worker.log_path.read_text(errors="replace")
                 or not worker.alive(), timeout=60, what="worker ready")
        assert worker.alive(), worker.tail()
        rss_ready = _group_rss_kb(worker.pid)
        samples = [rss_ready]
        cpu_ready = _cpu_seconds(_group_pids(worker.pid))
        t0 = datetime.now(UTC)
        claimed = run_claim(url, redis_server.url, "time")
        count = sa.text("SELECT count(DISTINCT o.checkin_id) FROM outbox o JOIN checkins c "
                        "ON c.id = o.checkin_id WHERE c.followup_id IS NOT NULL")

        timeline, warm = [], []

        def done() -> bool:
            samples.append(_group_rss_kb(worker.pid))
            with engine.connect() as connection:
                n = connection.execute(count).scalar()
            timeline.append((round((datetime.now(UTC) - t0).total_seconds(), 1), n))
            if n and not warm:
                warm.append(samples[-1])  # after the first batches: code and caches loaded
            return n >= due

        wait_for(done, timeout=timeout, interval=0.5, what=f"{due} follow-ups started")
        worker_cpu = _cpu_seconds(_group_pids(worker.pid)) - cpu_ready
        with engine.connect() as connection:
            # The worker's PostgreSQL backends (on this machine): their CPU since they started.
            backends = connection.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).scalars().all()
        postgres_cpu = _cpu_seconds(backends)
        load = os.getloadavg()[0]
        with engine.connect() as connection:
            first, last = connection.execute(sa.text(
                "SELECT min(o.created_at), max(o.created_at) FROM outbox o JOIN checkins c "
                "ON c.id = o.checkin_id WHERE c.followup_id IS NOT NULL")).one()
            outcomes = dict(connection.execute(sa.text(
                "SELECT status, count(*) FROM followups WHERE due_at <= now() + interval "
                "'1 minute' OR status <> 'scheduled' GROUP BY status")).all())
        tasks_received = worker.log_path.read_text(errors="replace").count(
            "Task tasks.start_followups[")
        messages_left = redis.Redis.from_url(redis_server.url).llen("celery")
        if os.environ.get("BENCH_KEEP_LOG"):
            shutil.copy(worker.log_path, os.environ["BENCH_KEEP_LOG"])
        return {"total": total, "due": due, "seed_seconds": seed_seconds, "claim": claimed,
                # Seen committed (polled every 0.5 s); the rows' own times are when their
                # task began.
                "first_started_s": next(t for t, n in timeline if n > 0),
                "all_started_s": timeline[-1][0],
                "rows_first_s": (first - t0).total_seconds(),
                "rows_last_s": (last - t0).total_seconds(), "outcomes": outcomes,
                "start_tasks": tasks_received // 2, "queued_after": messages_left,
                "worker_rss_ready_kb": rss_ready, "worker_rss_warm_kb": warm[0], "worker_rss_peak_kb": max(samples),
                "worker_rss_end_kb": samples[-1], "worker_cpu_s": worker_cpu, "plan": plan,
                "postgres_cpu_s": postgres_cpu, "load_average": load, "timeline": timeline[::max(1, len(timeline) // 12)]}
    finally:
        if worker is not None:
            worker.stop(grace=5)
        engine.dispose()
        drop_database(url)
        redis_server.stop()


def cmd_start(args) -> None:
    results = []
    for spec in args.sizes:
        total, due = (int(x) for x in spec.split(":"))
        log_dir = Path(tempfile.mkdtemp(prefix="bench-start-"))
        try:
            print(f"== {total:,} scheduled, {due:,} due; Procfile worker (2 processes)",
                  flush=True)
            r = start_scenario(total, due, log_dir, timeout=args.timeout)
        finally:
            shutil.rmtree(log_dir, ignore_errors=True)
        results.append(r)
        c = r["claim"]
        print(f"seeded in {r['seed_seconds']:.1f}s; claimed and enqueued {c['claimed']:,} in "
              f"{c['seconds']:.2f}s ({c['calls']} dispatch calls, slowest "
              f"{1000 * c['slowest_call']:.0f} ms, dispatcher maxrss "
              f"{c['maxrss_kb'] / 1024:.1f} MiB from {c['base_rss_kb'] / 1024:.1f} MiB); "
              f"first text in the outbox after {r['first_started_s']:.2f}s, all {due:,} after "
              f"{r['all_started_s']:.2f}s ({due / max(r['all_started_s'], 1e-9):.0f} "
              f"follow-ups/s) in {r['start_tasks']} start tasks; follow-ups by status "
              f"{r['outcomes']}; worker RSS (all processes) {r['worker_rss_ready_kb'] / 1024:.0f}"
              f" MiB ready, {r['worker_rss_warm_kb'] / 1024:.0f} MiB after the first batches, "
              f"{r['worker_rss_peak_kb'] / 1024:.0f} MiB peak, "
              f"{r['worker_rss_end_kb'] / 1024:.0f} MiB at the end", flush=True)
        print(f"CPU: worker {r['worker_cpu_s']:.1f}s ({1000 * r['worker_cpu_s'] / due:.2f} ms per "
              f"follow-up), its PostgreSQL backends {r['postgres_cpu_s']:.1f}s "
              f"({1000 * r['postgres_cpu_s'] / due:.2f} ms per follow-up); load average at the "
              f"end {r['load_average']:.1f} on {os.cpu_count()} cores", flush=True)
        print("started over time (s, follow-ups): " + ", ".join(
            f"{t:g}:{n}" for t, n in r["timeline"]), flush=True)
        print("claim statement (one batch of 500), EXPLAIN ANALYZE: " + "; ".join(
            line.strip() for line in r["plan"] if "Index Scan" in line
            or "Execution Time" in line), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


# ---- send -----------------------------------------------------------------------------------


def seed_outbox(url: str, *, numbers: int, texts: int, grouped: bool = False,
                service: bool = False) -> None:
    """TEXTS queued texts, one patient each, from NUMBERS clinics (one number each): taking
    turns, or `grouped` clinic after clinic (as a batch of one clinic's follow-ups queues
    them). `service`: one clinic owning all NUMBERS numbers (its texts go through the
    Messaging Service)."""
    from service.accounts.clinics import create_clinic
    from service.messaging import outbox
    from service.store import Database
    from service.store.models import Patient
    from tests.e2e.harness import clinic_phone, noon_timezone, patient_phone

    now = datetime.now(UTC)
    tz = noon_timezone(now)
    db = Database(url)
    with db.transaction() as session:
        if service:
            clinics = [create_clinic(session, name="Service Clinic", timezone=tz,
                                     numbers=[clinic_phone(c) for c in range(numbers)])]
        else:
            clinics = [create_clinic(session, name=f"Send Clinic {c}", numbers=[clinic_phone(c)],
                                     timezone=tz) for c in range(numbers)]
        for i in range(texts):
            n = len(clinics)
            clinic = clinics[i * n // texts] if grouped else clinics[i % n]
            patient = Patient(clinic_id=clinic.id, phone_e164=patient_phone(i), consent="given",
                              timezone=tz, created_at=now - timedelta(days=1))
            session.add(patient)
            session.flush()
            outbox.enqueue(session, clinic=clinic, patient=patient, kind="checkin", now=now,
                           body=f"Benchmark text {i}: how is your back today?", tz=tz)
    db.dispose()


SERVICE_SID = "MG" + "5e" * 16


def send_scenario(*, numbers: int, texts: int, rate: float, workers: int,
                  concurrency: int, grouped: bool = False, service: bool = False) -> dict:
    import sqlalchemy as sa

    from service.store import make_engine
    from tests.e2e.harness import RedisServer, Stack, wait_for
    from tests.support.twilio import FakeTwilio

    url = create_database()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-send-"))
    fake = FakeTwilio(callback_delay=0.0).serve()
    fake.set_callbacks(False)  # only the sends are measured
    redis_server = RedisServer(log_dir).start()
    stack = Stack(database_url=url, redis=redis_server, fake_url=fake.url,
                  account_sid=fake.account_sid, auth_token=fake.auth_token, log_dir=log_dir,
                  send_rate=rate)
    engine = make_engine(url)
    try:
        seed_outbox(url, numbers=numbers, texts=texts, grouped=grouped, service=service)
        extra = {"TWILIO_MESSAGING_SERVICE_SID": SERVICE_SID,
                 "MESSAGING_SERVICE_RATE_PER_SECOND": str(rate)} if service else {}
        procs = [stack.worker(f"w{w}", concurrency=concurrency, **extra)
                 for w in range(workers)]
        cpu_before = sum(_cpu_seconds(_group_pids(p.pid)) for p in procs)
        stack.beat("main", **extra)
        wait_for(lambda: len(fake.messages()) >= texts, timeout=600, interval=0.5,
                 what="every text sent")
        worker_cpu = sum(_cpu_seconds(_group_pids(p.pid)) for p in procs) - cpu_before
        with engine.connect() as connection:
            unsent = connection.execute(sa.text(
                "SELECT count(*) FROM outbox WHERE status <> 'sent'")).scalar()
    finally:
        stack.stop()
        redis_server.stop()
        engine.dispose()
        drop_database(url)
    creates = [r for r in fake.requests() if r["method"] == "POST" and r["answer"] == 201]
    fake.stop()
    shutil.rmtree(log_dir, ignore_errors=True)
    times = sorted(r["received_at"] for r in creates)
    by_number: dict[str, list[float]] = {}  # by sending lane: the From, or the service
    for r in creates:
        lane = r["form"].get("From") or r["form"]["MessagingServiceSid"]
        by_number.setdefault(lane, []).append(r["received_at"])
    spacing = min(b - a for ts in by_number.values()
                  for a, b in zip(sorted(ts), sorted(ts)[1:], strict=False))
    per_number = {n: (len(ts) - 1) / (max(ts) - min(ts)) for n, ts in by_number.items()
                  if len(ts) > 1}
    # Twilio's view of a lane's rate: the most texts it received from one lane within any one
    # second (at the limit: the rate, or one more when a window starts on a send).
    busiest_second = max(_most_within(sorted(ts), 1.0) for ts in by_number.values())
    elapsed = times[-1] - times[0]
    # The steady rate, away from the start (the first slots of every lane) and the end (the
    # lanes finishing one by one): the middle 80% of the texts.
    middle = times[len(times) // 10: len(times) - len(times) // 10]
    sustained = (len(middle) - 1) / (middle[-1] - middle[0])
    duplicates = len(creates) - len({(r["form"]["To"], r["form"]["Body"]) for r in creates})
    return {"numbers": numbers, "texts": texts, "rate_per_number": rate, "workers": workers,
            "concurrency": concurrency, "sent": len(creates), "unsent": unsent,
            "duplicates": duplicates, "seconds": elapsed,
            "throughput": (len(creates) - 1) / elapsed, "sustained": sustained,
            "min_spacing_same_number": spacing, "lanes": len(by_number), "service": service,
            "busiest_second": busiest_second, "worker_cpu_ms_per_text": 1000 * worker_cpu / texts,
            "max_rate_one_number": max(per_number.values())}


def _most_within(times: list[float], window: float) -> int:
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def cmd_send(args) -> None:
    results = []
    for rate, texts in ((args.rate, args.texts), (args.fast_rate, args.fast_texts)):
        if not texts:
            continue
        if args.service:
            what = (f"one clinic with {args.numbers} numbers through a Messaging Service, "
                    f"limit {rate:g}/s for the service")
        else:
            order = "queued number after number" if args.grouped else "numbers taking turns"
            what = f"{args.numbers} numbers ({order}), limit {rate:g}/s per number"
        print(f"== {texts} texts from {what}, {args.workers} workers x {args.concurrency}",
              flush=True)
        r = send_scenario(numbers=args.numbers, texts=texts, rate=rate, workers=args.workers,
                          concurrency=args.concurrency, grouped=args.grouped,
                          service=args.service)
        results.append(r)
        print(f"sent={r['sent']} unsent={r['unsent']} duplicates={r['duplicates']} in "
              f"{r['seconds']:.1f}s: {r['throughput']:.1f} texts/s overall, "
              f"{r['sustained']:.1f}/s sustained (middle 80%); {r['lanes']} sending lane(s), "
              f"busiest {r['max_rate_one_number']:.2f}/s on average and "
              f"{r['busiest_second']} texts in its busiest second; closest two texts of one lane "
              f"{1000 * r['min_spacing_same_number']:.0f} ms apart (limit "
              f"{1000 / rate:.0f} ms); worker CPU {r['worker_cpu_ms_per_text']:.1f} ms per text",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    claim = sub.add_parser("claim")
    claim.add_argument("--sizes", nargs="+", default=["1000000:10000", "100000:10000"],
                       help="TOTAL:DUE pairs")
    claim.add_argument("--no-trace", action="store_true",
                       help="skip the second pass under tracemalloc (slow for big runs)")
    claim.add_argument("--json")
    start = sub.add_parser("start")
    start.add_argument("--sizes", nargs="+", default=["1000000:10000"], help="TOTAL:DUE pairs")
    start.add_argument("--timeout", type=float, default=600.0)
    start.add_argument("--json")
    send = sub.add_parser("send")
    send.add_argument("--numbers", type=int, default=4)
    send.add_argument("--texts", type=int, default=120)
    send.add_argument("--rate", type=float, default=1.0, help="the product default")
    send.add_argument("--fast-texts", type=int, default=1000)
    send.add_argument("--fast-rate", type=float, default=50.0)
    send.add_argument("--workers", type=int, default=2)
    send.add_argument("--concurrency", type=int, default=2)
    send.add_argument("--grouped", action="store_true",
                      help="queue the texts number after number instead of taking turns")
    send.add_argument("--service", action="store_true",
                      help="one clinic owning all the numbers, sending through a Messaging "
                           "Service limited to --rate / --fast-rate")
    send.add_argument("--json")
    args = parser.parse_args()
    {"claim": cmd_claim, "start": cmd_start, "send": cmd_send}[args.command](args)


if __name__ == "__main__":
    main()
