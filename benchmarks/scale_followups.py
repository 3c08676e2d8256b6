"""Scale benchmark: claiming and enqueueing due follow-ups among many scheduled ones, and
outbound throughput through the fake Twilio over HTTP.

    .venv/bin/python benchmarks/scale_followups.py claim              # 1,000,000 / 10,000 due,
                                                                      # then 100,000 / 10,000
    .venv/bin/python benchmarks/scale_followups.py claim --sizes 1000000:1000
    .venv/bin/python benchmarks/scale_followups.py send               # 2 workers, 4 numbers

`claim`: a fresh PostgreSQL database (dropped afterwards) gets TOTAL scheduled follow-ups, DUE of
them due now (bulk INSERT ... SELECT generate_series), then a separate process runs the real
beat job `tasks.dispatch_due_followups` (claim with FOR UPDATE SKIP LOCKED and a lease, then
one `tasks.start_followup` message per claimed row published to a private redis-server) until
nothing is left, measuring wall time and peak memory (ru_maxrss of that process, and the
tracemalloc peak in a second pass). EXPLAIN (ANALYZE, BUFFERS) of the claim query shows which
index it uses.

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
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    from service.followups import schedule as followups
    from service.store import make_engine
    from service.store.models import FollowUp

    now = datetime.now(UTC)
    query = (sa.select(FollowUp.id).where(followups._due(now))
             .order_by(FollowUp.due_at, FollowUp.id).limit(followups.CLAIM_BATCH)
             .with_for_update(skip_locked=True))
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


# ---- send -----------------------------------------------------------------------------------


def seed_outbox(url: str, *, numbers: int, texts: int) -> None:
    from service.accounts.clinics import create_clinic
    from service.messaging import outbox
    from service.store import Database
    from service.store.models import Patient
    from tests.e2e.harness import clinic_phone, noon_timezone, patient_phone

    now = datetime.now(UTC)
    tz = noon_timezone(now)
    db = Database(url)
    with db.transaction() as session:
        clinics = [create_clinic(session, name=f"Send Clinic {c}", numbers=[clinic_phone(c)],
                                 timezone=tz) for c in range(numbers)]
        for i in range(texts):
            clinic = clinics[i % numbers]
            patient = Patient(clinic_id=clinic.id, phone_e164=patient_phone(i), consent="given",
                              timezone=tz, created_at=now - timedelta(days=1))
            session.add(patient)
            session.flush()
            outbox.enqueue(session, clinic=clinic, patient=patient, kind="checkin", now=now,
                           body=f"Benchmark text {i}: how is your back today?", tz=tz)
    db.dispose()


def send_scenario(*, numbers: int, texts: int, rate: float, workers: int,
                  concurrency: int) -> dict:
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
        seed_outbox(url, numbers=numbers, texts=texts)
        for w in range(workers):
            stack.worker(f"w{w}", concurrency=concurrency)
        stack.beat("main")
        wait_for(lambda: len(fake.messages()) >= texts, timeout=600, interval=0.5,
                 what="every text sent")
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
    by_number: dict[str, list[float]] = {}
    for r in creates:
        by_number.setdefault(r["form"]["From"], []).append(r["received_at"])
    spacing = min(b - a for ts in by_number.values()
                  for a, b in zip(sorted(ts), sorted(ts)[1:], strict=False))
    per_number = {n: (len(ts) - 1) / (max(ts) - min(ts)) for n, ts in by_number.items()
                  if len(ts) > 1}
    elapsed = times[-1] - times[0]
    duplicates = len(creates) - len({(r["form"]["To"], r["form"]["Body"]) for r in creates})
    return {"numbers": numbers, "texts": texts, "rate_per_number": rate, "workers": workers,
            "concurrency": concurrency, "sent": len(creates), "unsent": unsent,
            "duplicates": duplicates, "seconds": elapsed,
            "throughput": (len(creates) - 1) / elapsed, "min_spacing_same_number": spacing,
            "max_rate_one_number": max(per_number.values())}


def cmd_send(args) -> None:
    results = []
    for rate, texts in ((args.rate, args.texts), (args.fast_rate, args.fast_texts)):
        print(f"== {texts} texts from {args.numbers} numbers, limit {rate:g}/s per number, "
              f"{args.workers} workers x {args.concurrency}", flush=True)
        r = send_scenario(numbers=args.numbers, texts=texts, rate=rate, workers=args.workers,
                          concurrency=args.concurrency)
        results.append(r)
        print(f"sent={r['sent']} unsent={r['unsent']} duplicates={r['duplicates']} in "
              f"{r['seconds']:.1f}s: {r['throughput']:.1f} texts/s overall; busiest number "
              f"{r['max_rate_one_number']:.2f}/s; closest two texts from one number "
              f"{1000 * r['min_spacing_same_number']:.0f} ms apart (limit "
              f"{1000 / rate:.0f} ms)", flush=True)
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
    send = sub.add_parser("send")
    send.add_argument("--numbers", type=int, default=4)
    send.add_argument("--texts", type=int, default=120)
    send.add_argument("--rate", type=float, default=1.0, help="the product default")
    send.add_argument("--fast-texts", type=int, default=1000)
    send.add_argument("--fast-rate", type=float, default=50.0)
    send.add_argument("--workers", type=int, default=2)
    send.add_argument("--concurrency", type=int, default=2)
    send.add_argument("--json")
    args = parser.parse_args()
    {"claim": cmd_claim, "send": cmd_send}[args.command](args)


if __name__ == "__main__":
    main()
