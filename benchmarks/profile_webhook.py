"""Where a text's CPU goes: cProfile of /twilio/sms (and /bench/accept) in-process.

    .venv/bin/python benchmarks/profile_webhook.py [--requests 1500] [--sort tottime]

A fresh PostgreSQL database (dropped at the end) seeded as benchmarks/webhook_load.py does;
the pre-signed requests go through Flask's test client in this process (no gunicorn, no
network), first unprofiled (warm-up), then under cProfile; prints the time per request of each
endpoint and the top functions. Bounded: at most 5000 requests, one process.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import webhook_load as wl  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--path", default="/twilio/sms")
    parser.add_argument("--filter", default="", help="only functions whose path matches")
    parser.add_argument("--timing", action="store_true",
                        help="no profiler: CPU per request of /bench/accept and --path")
    parser.add_argument("--dump", help="write the raw profile here (pstats)")
    parser.add_argument("--cpu", action="store_true",
                        help="profile CPU time (time.process_time), not wall time: waits on "
                             "the database then count for nothing")
    args = parser.parse_args()
    n = min(args.requests, 5000)
    url = wl.create_database()
    try:
        wl.seed(url, n + 200)
        base = "http://127.0.0.1:5000"
        os.environ.update({"DATABASE_URL": url, "TWILIO_AUTH_TOKEN": wl.AUTH_TOKEN,
                           "PUBLIC_BASE_URL": base, "ENV": "development", "SECRET_KEY": "bench",
                           "LOG_LEVEL": "WARNING", "SIMULATOR_ENABLED": "false"})
        for name in ("REDIS_URL", "BROKER_URL", "TWILIO_ACCOUNT_SID"):
            os.environ.pop(name, None)
        import bench_app

        client = bench_app.app.test_client()
        warm = wl.signed_requests(base, n, 200, 1, "W")
        items = wl.signed_requests(base, 0, n, 1, "P")

        def send(path, batch):
            for signature, body in batch:
                response = client.post(path, data=body, headers={
                    "X-Twilio-Signature": signature,
                    "Content-Type": "application/x-www-form-urlencoded"})
                assert response.status_code == 200, response.data
        send(args.path, warm)
        if args.timing:
            # No profiler: CPU per request of this process (Flask's test client included, the
            # same for every endpoint) and of the database's backends, /bench/accept beside.
            database = wl.make_url(url).database
            accept = wl.signed_requests(base, 0, n, 1, "Q")
            send("/bench/accept", wl.signed_requests(base, 0, 200, 1, "V"))
            for path, batch in (("/bench/accept", accept), (args.path, items)):
                pg0, cpu0 = wl.server_cpu(-1, database)["pg"], time.process_time()
                send(path, batch)
                cpu, pg = time.process_time() - cpu0, wl.server_cpu(-1, database)["pg"] - pg0
                print(f"{path}: {n} requests, CPU per request {cpu / n * 1000:.2f} ms here + "
                      f"{pg / n * 1000:.2f} ms PostgreSQL = {(cpu + pg) / n * 1000:.2f} ms")
            bench_app.get_db(bench_app.app).dispose()
            return 0
        profiler = cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()
        started, cpu = time.perf_counter(), time.process_time()
        profiler.enable()
        send(args.path, items)
        profiler.disable()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"{args.path}: {n} requests, {wall / n * 1000:.2f} ms wall, "
              f"{cpu / n * 1000:.2f} ms CPU per request (under cProfile)")
        stats = pstats.Stats(profiler)
        if args.dump:
            stats.dump_stats(args.dump)
        stats.sort_stats(args.sort).print_stats(*([args.filter] if args.filter else []), args.top)
        bench_app.get_db(bench_app.app).dispose()
    finally:
        wl.drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
