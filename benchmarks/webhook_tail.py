"""Webhook tail latency and CPU per text (issue 17, item 3): /twilio/sms beside /bench/accept.

Run from the repository root (needs PostgreSQL on 127.0.0.1:5432 and `wrk`):

    .venv/bin/python benchmarks/webhook_tail.py [--rate 100] [--seconds 60] [--duration 10]
                                                [--write-docs]

One run, all on 127.0.0.1, bounded in time (HARD_LIMIT_S), cleaning up after itself (its
database is dropped, its gunicorn stopped, its temporary files removed):
1. a fresh database seeded as benchmarks/webhook_load.py does (patients mid-intake), and
   pre-signed requests, each with its own MessageSid;
2. `pg_test_fsync -s 2` on a file of the filesystem holding PostgreSQL's data directory: what
   one durable commit costs this disk (the floor of any commit below);
3. closed loop (wrk, `--duration` s each, the same server): /bench/accept (signature check, one
   INSERT, commit: the floor of any durable webhook) then /twilio/sms; requests per second and
   CPU per request (gunicorn + this database's PostgreSQL backends, from /proc);
4. open loop: exactly `--rate` requests per second for `--seconds` s on /twilio/sms, then the
   same on /bench/accept; latency from each request's scheduled start (a stall shows up as
   latency, never as fewer requests), and CPU per request at that rate;
5. meanwhile, for the correlation: every request's time in the app, in COMMIT, in the other
   statements, in the pool checkout and in the garbage collector (benchmarks/bench_app.py's
   trace, BENCH_TRACE_DIR); the workers' collections longer than 2 ms; this driver's own
   collections; every 0.25 s the host's CPU use, PostgreSQL's checkpointer (pg_stat_bgwriter),
   WAL syncs (pg_stat_wal), autovacuum workers and what the benchmark's backends wait for
   (pg_stat_activity); the checkpoint and autovacuum lines PostgreSQL logged during the run;
6. the slow requests (> SLOW_MS) grouped into stalls, each with what overlapped it.
Targets: p99 < 50 ms at 100 req/s; webhook throughput >= 0.7 x /bench/accept's; CPU per text
(app + PostgreSQL) <= 1.5 x /bench/accept's.
"""

from __future__ import annotations

import argparse
import gc
import glob
import http.client
import json
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import psycopg  # noqa: E402
import webhook_load as wl  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

HOST = wl.HOST
HARD_LIMIT_S = 900
SLOW_MS = 50.0
SAMPLE_S = 0.25
TARGET_P99_MS = 50.0
TARGET_THROUGHPUT = 0.7  # /twilio/sms : /bench/accept, closed loop
TARGET_CPU = 1.5  # CPU per text, /twilio/sms : /bench/accept


# ---- the disk's floor ---------------------------------------------------------------------


def pg_data_dir() -> str:
    with wl.admin() as connection:
        return connection.execute("SHOW data_directory").fetchone()[0]


def fsync_file(workdir: Path) -> Path:
    """A scratch file on the filesystem of PostgreSQL's data directory."""
    with_data = Path(pg_data_dir()).parent
    if os.path.exists(with_data) and os.stat(with_data).st_dev != os.stat(workdir).st_dev:
        return with_data / f"fsync-probe.{os.getpid()}"
    return workdir / "fsync-probe"


def pg_test_fsync(workdir: Path) -> dict:
    """pg_test_fsync -s 2 on a file beside the data directory's filesystem (the same device);
    its fdatasync line is what PostgreSQL's default wal_sync_method does at every commit."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_test_fsync"))
    if not binaries:
        return {"error": "pg_test_fsync not found"}
    data = pg_data_dir()
    target = workdir / "pg_test_fsync.out"
    with_data = Path(data).parent
    if os.path.exists(with_data) and os.stat(with_data).st_dev != os.stat(workdir).st_dev:
        target = with_data / f"pg_test_fsync.{os.getpid()}.out"
    try:
        out = subprocess.run([binaries[-1], "-s", "2", "-f", str(target)], capture_output=True,
                             text=True, timeout=120).stdout
    finally:
        target.unlink(missing_ok=True)
    result = {"binary": binaries[-1], "file": str(target), "data_directory": data,
              "same_device": os.stat(target.parent).st_dev == os.stat(with_data).st_dev}
    # The first section: one 8 kB write and its sync per operation, as a commit does.
    section = out.split("Compare file sync methods using one 8kB write:")[-1]
    section = section.split("Compare file sync methods using two")[0]
    for name in ("fdatasync", "fsync", "open_datasync"):
        match = re.search(rf"^\s+{name}\s+([\d.]+) ops/sec\s+([\d.]+) usecs/op", section,
                          re.MULTILINE)
        if match:
            result[name] = {"ops": float(match.group(1)), "us": float(match.group(2))}
    result["raw"] = out
    return result


# ---- sampling PostgreSQL and the host -----------------------------------------------------


def _host_cpu() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle, sum(fields[:8])


SAMPLE_SQL = """
SELECT (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter),
       (SELECT buffers_checkpoint FROM pg_stat_bgwriter),
       (SELECT wal_sync FROM pg_stat_wal),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'),
       (SELECT string_agg(wait_event_type || ':' || wait_event, ',')
          FROM pg_stat_activity
         WHERE datname = %(db)s AND state = 'active' AND wait_event IS NOT NULL
           AND pid <> pg_backend_pid())
"""


class Sampler(threading.Thread):
    def __init__(self, database_url: str, database: str) -> None:
        super().__init__(daemon=True)
        self.url, self.database = database_url, database
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
            previous = _host_cpu()
            while not self.stop.wait(SAMPLE_S):
                row = connection.execute(SAMPLE_SQL, {"db": self.database}).fetchone()
                busy, total = _host_cpu()
                self.samples.append({
                    "t": time.time(), "checkpoints": row[0], "buffers_checkpoint": row[1],
                    "wal_sync": row[2], "autovacuum": row[3], "waits": row[4] or "",
                    "host_busy": (busy - previous[0]) / max(total - previous[1], 1)})
                previous = busy, total


def pg_log_tail(offsets: dict[str, int] | None = None) -> tuple[dict[str, int], list[str]]:
    """The size of PostgreSQL's log files now, and (given the sizes before) the checkpoint and
    autovacuum lines written since."""
    sizes, lines = {}, []
    for path in glob.glob("/var/log/postgresql/postgresql-*.log"):
        try:
            sizes[path] = os.path.getsize(path)
            if offsets is not None:
                with open(path, errors="replace") as f:
                    f.seek(offsets.get(path, 0))
                    lines += [line.rstrip() for line in f
                              if "checkpoint" in line or "vacuum" in line]
        except OSError:
            continue
    return sizes, lines


def pg_stats(url: str) -> dict:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
        bg = connection.execute("SELECT checkpoints_timed, checkpoints_req, buffers_checkpoint, "
                                "checkpoint_write_time, checkpoint_sync_time "
                                "FROM pg_stat_bgwriter").fetchone()
        wal = connection.execute("SELECT wal_records, wal_bytes, wal_write, wal_sync "
                                 "FROM pg_stat_wal").fetchone()
        tables = connection.execute(
            "SELECT relname, autovacuum_count, autoanalyze_count, n_dead_tup "
            "FROM pg_stat_user_tables ORDER BY relname").fetchall()
    return {"checkpoints_timed": bg[0], "checkpoints_req": bg[1], "buffers_checkpoint": bg[2],
            "checkpoint_write_ms": bg[3], "checkpoint_sync_ms": bg[4],
            "wal_records": wal[0], "wal_bytes": int(wal[1]), "wal_write": wal[2],
            "wal_sync": wal[3],
            "autovacuum": {r[0]: r[1] for r in tables}, "autoanalyze": {r[0]: r[2] for r in tables}}


# ---- this driver's own pauses -------------------------------------------------------------


class DriverGC:
    """Collections in this process (the load generator) longer than 2 ms: a pause here delays
    requests as surely as one in the server."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._t = (0.0, 0.0)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = (time.perf_counter(), time.time())
        else:
            took = time.perf_counter() - self._t[0]
            if took > 0.002:
                self.events.append({"t0": self._t[1], "ms": took * 1000,
                                    "gen": info.get("generation")})


class FsyncProbe(threading.Thread):
    """The disk's own tail in the same run: every PROBE_EVERY_S, one 8 kB write and fdatasync
    (what a commit's WAL flush does) on a file of the data directory's filesystem, timed."""

    PROBE_EVERY_S = 0.02

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.events: list[tuple[float, float]] = []  # (wall time, ms)
        self.stop = threading.Event()

    def run(self) -> None:
        block = os.urandom(8192)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while not self.stop.wait(self.PROBE_EVERY_S):
                t, started = time.time(), time.perf_counter()
                os.pwrite(fd, block, 0)
                os.fdatasync(fd)
                self.events.append((t, (time.perf_counter() - started) * 1000))
        finally:
            os.close(fd)
            self.path.unlink(missing_ok=True)


def full_collections(port: int) -> dict[int, dict]:
    """/bench/gc on each worker (new connections until both answered, at most 20 tries)."""
    seen: dict[int, dict] = {}
    for _ in range(20):
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        connection.request("POST", "/bench/gc")
        answer = json.loads(connection.getresponse().read())
        connection.close()
        seen.setdefault(answer["pid"], answer)
        if len(seen) >= 2:
            break
    return seen


# ---- open loop ----------------------------------------------------------------------------


def _sid(body: str) -> str:
    return re.search(r"MessageSid=([^&]+)", body).group(1)


def force_full_collection(port: int, at: float, out: list[dict]) -> threading.Timer:
    """At `at` seconds from now, one full collection in one worker (/bench/gc): what Python
    does by itself whenever enough objects survived (its generation-2 threshold), at a moment
    chosen here so that the open loop sees it."""
    def run() -> None:
        t = time.time()
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        connection.request("POST", "/bench/gc")
        out.append({**json.loads(connection.getresponse().read()), "t": t})
        connection.close()

    timer = threading.Timer(at, run)
    timer.daemon = True
    timer.start()
    return timer


def open_loop(port: int, path: str, items: list[tuple[str, str]], *, rate: float,
              seconds: float, workers: int = 32) -> list[dict]:
    """Request i is due at start + i/rate whatever happened to the others; each record has the
    wall-clock time it was due, when a client thread sent it, its latency from the due time, its
    status and its MessageSid."""
    total = int(rate * seconds)
    if len(items) < total:
        raise ValueError(f"{total} requests need {total} prepared bodies, have {len(items)}")
    jobs: queue.Queue = queue.Queue()
    records: list[dict] = []
    lock = threading.Lock()

    def worker() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        while True:
            job = jobs.get()
            if job is None:
                return
            due, (signature, body) = job
            sent = time.perf_counter()
            headers = {"Content-Type": "application/x-www-form-urlencoded",
                       "X-Twilio-Signature": signature}
            status: int | str = "none"
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
            end, wall = time.perf_counter(), time.time()
            # The due time on the wall clock (the server's traces use it), taken now: the wall
            # clock may be slewed (NTP) while the loop runs, so no offset fixed at the start.
            with lock:
                records.append({"due": wall - (end - due), "lag_ms": (sent - due) * 1000,
                                "ms": (end - due) * 1000, "status": status, "sid": _sid(body)})

    wl.feed_at_rate(jobs, worker, workers, items, rate=rate, total=total)
    return records


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


def read_traces(trace_dir: Path) -> tuple[dict[str, dict], list[dict]]:
    requests, gcs = {}, []
    for path in trace_dir.glob("trace-*.jsonl"):
        pid = int(path.stem.split("-")[1])
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            record["pid"] = pid
            if record["k"] == "req" and record.get("sid"):
                requests[record["sid"]] = record
            elif record["k"] == "gc":
                gcs.append(record)
    return requests, gcs


def stalls(records: list[dict], traces: dict[str, dict], server_gc: list[dict],
           driver_gc: list[dict], samples: list[dict],
           fsyncs: list[tuple[float, float]]) -> list[dict]:
    """Slow requests (> SLOW_MS) grouped into stalls: requests whose [due, end] overlap; each
    stall with where its slowest request spent its time and what else happened meanwhile."""
    slow = sorted((r for r in records if r["ms"] > SLOW_MS), key=lambda r: r["due"])
    groups: list[list[dict]] = []
    for r in slow:
        if groups and r["due"] <= max(x["due"] + x["ms"] / 1000 for x in groups[-1]) + 0.05:
            groups[-1].append(r)
        else:
            groups.append([r])
    out = []
    for group in groups:
        t0 = group[0]["due"]
        t1 = max(x["due"] + x["ms"] / 1000 for x in group)
        worst = max(group, key=lambda x: x["ms"])
        trace = traces.get(worst["sid"], {})
        in_window = [traces[x["sid"]] for x in group if x["sid"] in traces]
        window = [s for s in samples if t0 - SAMPLE_S <= s["t"] <= t1 + SAMPLE_S]
        out.append({
            "start": t0, "span_ms": (t1 - t0) * 1000, "slow_requests": len(group),
            "worst_ms": worst["ms"],
            # The worst request: from due to the app, in the app, and of that in COMMIT, etc.
            "worst_client_lag_ms": worst["lag_ms"],
            "worst_before_app_ms": (trace["t0"] - worst["due"]) * 1000 if trace else None,
            "worst_app_ms": trace.get("ms"), "worst_commit_ms": trace.get("commit_ms"),
            "worst_exec_ms": trace.get("exec_ms"), "worst_checkout_ms": trace.get("checkout_ms"),
            "worst_gc_ms": trace.get("gc_ms"),
            "max_app_ms": max((x["ms"] for x in in_window), default=None),
            "max_commit_ms": max((x["commit_ms"] for x in in_window), default=None),
            "server_gc_ms": sum(e["ms"] for e in server_gc if t0 - 0.5 <= e["t0"] <= t1),
            "driver_gc_ms": sum(e["ms"] for e in driver_gc if t0 - 0.5 <= e["t0"] <= t1),
            "checkpoint_buffers": (window[-1]["buffers_checkpoint"] -
                                   window[0]["buffers_checkpoint"]) if window else None,
            "autovacuum": max((s["autovacuum"] for s in window), default=None),
            "host_busy": max((s["host_busy"] for s in window), default=None),
            "probe_fsync_ms": max((ms for t, ms in fsyncs if t0 - 0.1 <= t <= t1), default=None),
            "waits": sorted({w for s in window for w in s["waits"].split(",") if w}),
        })
    return out


def summarize(records: list[dict], traces: dict[str, dict], cpu: dict, seconds: float) -> dict:
    latencies = [r["ms"] for r in records]
    mine = [traces[r["sid"]] for r in records if r["sid"] in traces]
    return {
        "requests": len(records), "failures": sum(r["status"] != 200 for r in records),
        "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99), "max_ms": max(latencies),
        "over_50ms": sum(x > 50 for x in latencies), "over_20ms": sum(x > 20 for x in latencies),
        "app_p50_ms": pct([t["ms"] for t in mine], 50),
        "app_p99_ms": pct([t["ms"] for t in mine], 99),
        "commit_p50_ms": pct([t["commit_ms"] for t in mine], 50),
        "commit_p99_ms": pct([t["commit_ms"] for t in mine], 99),
        "commit_max_ms": max((t["commit_ms"] for t in mine), default=float("nan")),
        "checkout_p99_ms": pct([t["checkout_ms"] for t in mine], 99),
        "checkout_max_ms": max((t["checkout_ms"] for t in mine), default=float("nan")),
        "gc_in_request_max_ms": max((t["gc_ms"] for t in mine), default=float("nan")),
        "client_lag_max_ms": max(r["lag_ms"] for r in records),
        "app_cpu_ms": cpu["app"] * 1000 / max(len(records), 1),
        "pg_cpu_ms": cpu["pg"] * 1000 / max(len(records), 1),
        "seconds": seconds,
    }


# ---- report -------------------------------------------------------------------------------


def report(results: dict) -> str:
    s, fsync = results["settings"], results["fsync"]
    closed, opened = results["closed"], results["open"]
    ca, cs = closed["accept"], closed["sms"]
    oa, osms = opened["accept"], opened["sms"]

    def cpu(r: dict, a: str = "app_cpu_ms_per_request", p: str = "pg_cpu_ms_per_request"):
        return r[a] + r[p]

    throughput = cs["rps"] / ca["rps"]
    cpu_ratio = cpu(cs) / cpu(ca)
    open_cpu_ratio = (osms["app_cpu_ms"] + osms["pg_cpu_ms"]) / (oa["app_cpu_ms"] +
                                                                 oa["pg_cpu_ms"])
    fd = fsync.get("fdatasync", {})
    lines = [
        f"Measured {s['when']} ({s['machine']}; load average {s['load_before']} before the "
        f"run, {s['load_after']} after). Server: `{s['gunicorn']}`, {s['patients']} patients "
        "mid-intake, every request pre-signed with its own MessageSid.",
        "",
        f"Disk floor, same run: `pg_test_fsync -s 2` (file on the data directory's "
        f"filesystem): fdatasync (PostgreSQL's wal_sync_method here) "
        f"{fd.get('us', float('nan')):.0f} µs per 8 kB write+sync "
        f"({fd.get('ops', float('nan')):.0f}/s).",
        "",
        f"Closed loop (`wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s`, one "
        "endpoint after the other on the same server):",
        "",
        "| endpoint | requests | req/s | p50 ms | p99 ms | CPU ms/text: app + PostgreSQL |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("/bench/accept", ca), ("/twilio/sms", cs)):
        lines.append(f"| {name} | {r['requests']} | {r['rps']:.0f} | {r['p50_us'] / 1000:.1f} | "
                     f"{r['p99_us'] / 1000:.1f} | {r['app_cpu_ms_per_request']:.2f} + "
                     f"{r['pg_cpu_ms_per_request']:.2f} = {cpu(r):.2f} |")
    lines += [
        "",
        f"**Throughput /twilio/sms : /bench/accept = {throughput:.2f}** (target >= "
        f"{TARGET_THROUGHPUT}: {'met' if throughput >= TARGET_THROUGHPUT else 'NOT met'}); "
        f"**CPU per text /twilio/sms : /bench/accept = {cpu_ratio:.2f}** (target <= "
        f"{TARGET_CPU}: {'met' if cpu_ratio <= TARGET_CPU else 'NOT met'}).",
        "",
        f"Open loop: exactly {s['rate']:.0f} requests per second for {s['seconds']:.0f} s on "
        "each endpoint (latency from each request's scheduled start); app = time in the Flask "
        "app, commit = waiting for COMMIT, from the server's trace:",
        "",
        "| endpoint | requests | failures | p50 ms | p99 ms | max ms | > 50 ms | app p99 ms "
        "| commit p50 / p99 / max ms | pool checkout max ms | CPU ms/text |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("/twilio/sms", osms), ("/bench/accept", oa)):
        lines.append(f"| {name} | {r['requests']} | {r['failures']} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['over_50ms']} | "
                     f"{r['app_p99_ms']:.1f} | {r['commit_p50_ms']:.2f} / "
                     f"{r['commit_p99_ms']:.1f} / {r['commit_max_ms']:.1f} | "
                     f"{r['checkout_max_ms']:.1f} | {r['app_cpu_ms']:.2f} + "
                     f"{r['pg_cpu_ms']:.2f} |")
    lines += [
        "",
        f"**p99 of /twilio/sms at {s['rate']:.0f} req/s for {s['seconds']:.0f} s = "
        f"{osms['p99_ms']:.1f} ms** (target < {TARGET_P99_MS:.0f} ms: "
        f"{'met' if osms['p99_ms'] < TARGET_P99_MS else 'NOT met'}); CPU per text at that "
        f"rate, /twilio/sms : /bench/accept = {open_cpu_ratio:.2f}.",
        "",
        f"PostgreSQL during the run: {results['pg_delta']['checkpoints']} checkpoint(s), "
        f"{results['pg_delta']['buffers_checkpoint']} buffers written by the checkpointer, "
        f"autovacuum runs on {results['pg_delta']['autovacuumed'] or 'no table'}; "
        f"collections > 2 ms: {len(results['server_gc'])} in the workers (longest "
        f"{max([e['ms'] for e in results['server_gc']], default=0):.1f} ms), "
        f"{len(results['driver_gc'])} in the load generator. The disk's own 8 kB write + "
        f"fdatasync every 20 ms during both open loops (same filesystem): "
        f"{results['probe']['count']} probes, p50 {results['probe']['p50_ms']:.2f} ms, p99 "
        f"{results['probe']['p99_ms']:.2f} ms, max {results['probe']['max_ms']:.1f} ms, "
        f"{results['probe']['over_10ms']} over 10 ms.",
        "",
        "One full collection (gc.collect(), /bench/gc) in each worker after the run: "
        + "; ".join(f"{g['ms']:.0f} ms with {g['tracked']} objects tracked and {g['frozen']} "
                    f"frozen (collections by generation so far: {g['collections']})"
                    for g in results["full_gc"].values())
        + f" (gc.freeze() after start-up: {s['gc_freeze']}).",
        "",
    ]
    for forced in results["forced_gc"]:
        name = "/twilio/sms" if forced["t"] < results["open_start"]["accept"] else "/bench/accept"
        start = results["open_start"]["sms" if name == "/twilio/sms" else "accept"]
        lines += [f"Forced full collection (--force-gc-at) during {name}'s loop at "
                  f"{forced['t'] - start:.1f} s: {forced['ms']:.1f} ms in worker "
                  f"{forced['pid']}.", ""]
    for name in ("sms", "accept"):
        found = results["stalls"][name]
        lines.append(f"Stalls (requests > {SLOW_MS:.0f} ms, grouped when they overlap) on "
                     f"{'/twilio/sms' if name == 'sms' else '/bench/accept'}: {len(found)}"
                     + (":" if found else "."))
        if found:
            lines += ["", "| at (s into the loop) | span ms | slow requests | worst ms | "
                      "worst: before app / in app / commit ms | max commit ms in it | "
                      "GC ms: workers / generator | disk probe max ms | checkpoint buffers | "
                      "autovacuum | host busy | PostgreSQL waits |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
            start = results["open_start"][name]
            for st in found[:15]:
                def f(x, fmt="{:.0f}"):
                    return "–" if x is None else fmt.format(x)
                lines.append(
                    f"| {st['start'] - start:.1f} | {st['span_ms']:.0f} | {st['slow_requests']} "
                    f"| {st['worst_ms']:.0f} | {f(st['worst_before_app_ms'])} / "
                    f"{f(st['worst_app_ms'])} / {f(st['worst_commit_ms'], '{:.1f}')} | "
                    f"{f(st['max_commit_ms'], '{:.1f}')} | {st['server_gc_ms']:.0f} / "
                    f"{st['driver_gc_ms']:.0f} | {f(st['probe_fsync_ms'], '{:.1f}')} | "
                    f"{f(st['checkpoint_buffers'])} | "
                    f"{f(st['autovacuum'])} | {f(st['host_busy'], '{:.0%}')} | "
                    f"{', '.join(st['waits']) or '–'} |")
            if len(found) > 15:
                lines.append(f"| … {len(found) - 15} more | | | | | | | | | | | |")
        lines.append("")
    return "\n".join(lines)


def write_docs(section: str, title: str) -> None:
    path = ROOT / "docs" / "BENCHMARKS.md"
    text = path.read_text()
    marker = f"<!-- webhook_tail: {title} -->"
    block = f"{marker}\n{section.rstrip()}\n<!-- /webhook_tail: {title} -->\n"
    pattern = re.compile(re.escape(marker) + r".*?<!-- /webhook_tail: " + re.escape(title)
                         + r" -->\n", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


# ---- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="open loop, per endpoint")
    parser.add_argument("--duration", type=int, default=10, help="closed loop, per endpoint")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--gthreads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--no-fsync-test", action="store_true")
    parser.add_argument("--force-gc-at", type=float, default=0.0, metavar="S",
                        help="one full collection in one worker S seconds into each open loop")
    parser.add_argument("--write-docs", metavar="TITLE",
                        help="write the report into docs/BENCHMARKS.md under this title")
    parser.add_argument("--json", metavar="PATH", help="also write every record here")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    if not 1 <= args.duration <= 60 or not 1 <= args.seconds <= 60 or \
            not 1 <= args.rate <= 300 or not 1 <= args.connections <= 64:
        parser.error("keep the load bounded: duration and seconds 1-60, rate 1-300, "
                     "connections 1-64")
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("hard limit")))
    signal.alarm(HARD_LIMIT_S)
    driver_gc = DriverGC()
    gc.callbacks.append(driver_gc)

    total = int(args.rate * args.seconds)
    closed_pool, open_pool, warm_pool = 2000, total // 2 + 1, 100
    load_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    url = wl.create_database()
    database = make_url(url).database
    workdir = Path(tempfile.mkdtemp(prefix="webhook-tail-"))
    trace_dir = workdir / "trace"
    trace_dir.mkdir()
    os.environ["BENCH_TRACE_DIR"] = str(trace_dir)
    try:
        print(f"seeding {closed_pool + open_pool + warm_pool} patients in {database}", flush=True)
        wl.seed(url, closed_pool + open_pool + warm_pool)
        port = wl.free_port()
        base = f"http://{HOST}:{port}"
        closed_items = wl.signed_requests(base, 0, closed_pool, len(wl.REPLIES), "A")
        open_items = wl.signed_requests(base, closed_pool, open_pool, 2, "B")
        warm_items = wl.signed_requests(base, closed_pool + open_pool, warm_pool, 2, "C")
        accept_closed = wl.signed_requests(base, 0, 3000 * args.duration, 1, "E")
        accept_open = wl.signed_requests(base, 0, total, 1, "F")
        accept_warm = wl.signed_requests(base, 0, 200, 1, "W")
        wl.write_lines(workdir / "sms.txt", closed_items)
        wl.write_lines(workdir / "accept.txt", accept_closed)
        results: dict = {"closed": {}, "open": {}, "open_start": {}, "cpu_open": {},
                         "forced_gc": []}
        if not args.no_fsync_test:
            print("pg_test_fsync -s 2", flush=True)
            results["fsync"] = pg_test_fsync(workdir)
        else:
            results["fsync"] = {}
        with wl.gunicorn(url, port, workdir, args.workers, args.gthreads) as (process, command):
            print("warming up", flush=True)
            loaded_at = time.time()
            open_loop(port, "/twilio/sms", warm_items, rate=100, seconds=2)
            open_loop(port, "/bench/accept", accept_warm, rate=100, seconds=2)
            for name, path, lines in (("accept", "/bench/accept", workdir / "accept.txt"),
                                      ("sms", "/twilio/sms", workdir / "sms.txt")):
                print(f"wrk {path} for {args.duration} s", flush=True)
                wl.settle(url)
                before = wl.server_cpu(process.pid, database)
                result = wl.run_wrk(port, path, lines, duration=args.duration,
                                    connections=args.connections, threads=args.threads)
                after = wl.server_cpu(process.pid, database)
                for part in ("app", "pg"):
                    result[f"{part}_cpu_ms_per_request"] = (
                        (after[part] - before[part]) * 1000 / max(result["requests"], 1))
                if result["wrapped_threads"]:
                    raise RuntimeError(f"wrk ran out of prepared requests for {path}")
                results["closed"][name] = result
            wl.settle(url)
            # This generator's own heap (the prepared requests) is frozen out of its garbage
            # collector: a full collection here would delay requests and pass for the server's
            # stall. Its remaining collections are recorded all the same (driver_gc).
            gc.collect()
            gc.freeze()
            stats_before = pg_stats(url)
            log_sizes, _ = pg_log_tail()
            sampler = Sampler(wl.ADMIN_URL, database)  # its backend is not counted
            sampler.start()
            probe = FsyncProbe(fsync_file(workdir))
            probe.start()
            records = {}
            for name, path, items in (("sms", "/twilio/sms", open_items),
                                      ("accept", "/bench/accept", accept_open)):
                print(f"{args.rate:.0f} req/s to {path} for {args.seconds:.0f} s", flush=True)
                before = wl.server_cpu(process.pid, database)
                results["open_start"][name] = time.time()
                timer = (force_full_collection(port, args.force_gc_at, results["forced_gc"])
                         if args.force_gc_at else None)
                records[name] = open_loop(port, path, items, rate=args.rate,
                                          seconds=args.seconds)
                if timer is not None:
                    timer.join(timeout=15)
                after = wl.server_cpu(process.pid, database)
                results["cpu_open"][name] = {k: after[k] - before[k] for k in after}
            sampler.stop.set()
            probe.stop.set()
            sampler.join(timeout=5)
            probe.join(timeout=5)
            results["full_gc"] = full_collections(port)
            stats_after = pg_stats(url)
            _, log_lines = pg_log_tail(log_sizes)
        traces, server_gc = read_traces(trace_dir)
        # The collections while the loops ran (not the workers' start-up nor their exit).
        loops_end = results["open_start"]["accept"] + args.seconds + 1
        server_gc = [e for e in server_gc if loaded_at <= e["t0"] <= loops_end]
        for name in ("sms", "accept"):
            results["open"][name] = summarize(records[name], traces, results["cpu_open"][name],
                                              args.seconds)
        results["stalls"] = {name: stalls(records[name], traces, server_gc, driver_gc.events,
                                          sampler.samples, probe.events)
                             for name in ("sms", "accept")}
        fs = [ms for _, ms in probe.events]
        results["probe"] = {"count": len(fs), "p50_ms": pct(fs, 50), "p99_ms": pct(fs, 99),
                            "max_ms": max(fs, default=float("nan")),
                            "over_10ms": sum(x > 10 for x in fs)}
        results["server_gc"], results["driver_gc"] = server_gc, driver_gc.events
        results["pg_log"] = log_lines
        results["pg_delta"] = {
            "checkpoints": (stats_after["checkpoints_timed"] + stats_after["checkpoints_req"]
                            - stats_before["checkpoints_timed"]
                            - stats_before["checkpoints_req"]),
            "buffers_checkpoint": stats_after["buffers_checkpoint"]
            - stats_before["buffers_checkpoint"],
            "wal_sync": stats_after["wal_sync"] - stats_before["wal_sync"],
            "autovacuumed": ", ".join(
                t for t, n in stats_after["autovacuum"].items()
                if n != stats_before["autovacuum"].get(t)
                or stats_after["autoanalyze"][t] != stats_before["autoanalyze"].get(t)),
        }
        shown = list(argv if argv is not None else sys.argv[1:])
        if "--json" in shown:  # where this run's raw records went: not part of the figures
            del shown[shown.index("--json"):shown.index("--json") + 2]
        cmd = ("WEB_GC_FREEZE=0 " if os.environ.get("WEB_GC_FREEZE") == "0" else "") + \
            ".venv/bin/python benchmarks/webhook_tail.py " + \
            shlex.join(shown)
        results["settings"] = {
            "command": cmd.strip(), "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"Python {platform.python_version()}, {platform.machine()}, "
                       f"{os.cpu_count()} vCPUs, wrk and PostgreSQL on the same box",
            "load_before": load_before,
            "load_after": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
            "gunicorn": command, "patients": closed_pool + open_pool,
            "gc_freeze": "off (WEB_GC_FREEZE=0)" if os.environ.get("WEB_GC_FREEZE") == "0"
            else "on",
            "threads": args.threads, "connections": args.connections,
            "duration": args.duration, "rate": args.rate, "seconds": args.seconds,
        }
        section = report(results)
        print("\n" + section)
        if log_lines:
            print("PostgreSQL log during the run:\n" + "\n".join(log_lines))
        if args.json:
            Path(args.json).write_text(json.dumps(
                {**results, "records": records, "traces": traces,
                 "samples": sampler.samples}, indent=None, default=str))
        if args.write_docs:
            write_docs("Command:\n\n```\n" + results["settings"]["command"] + "\n```\n\n"
                       + section, args.write_docs)
            print("written to docs/BENCHMARKS.md")
        closed = results["closed"]
        met = (results["open"]["sms"]["p99_ms"] < TARGET_P99_MS
               and closed["sms"]["rps"] / closed["accept"]["rps"] >= TARGET_THROUGHPUT)
        return 0 if met else 1
    finally:
        signal.alarm(0)
        shutil.rmtree(workdir, ignore_errors=True)
        wl.drop_database(url)


if __name__ == "__main__":
    sys.exit(main())
