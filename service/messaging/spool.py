"""The inbound spool: when the database is unavailable, raw inbound webhooks wait here (Redis,
else an append-only local file) and are replayed in order once it is back.

One order across both: every record carries `spooled_ns` (wall-clock nanoseconds when it was
spooled) and the replay merges Redis's list and the file by it, each backend keeping its own
arrival order. Redis becoming unreachable between two texts therefore cannot put the later
(file) text first. While Redis is unreachable nobody can tell what it holds, so a marker file
(`*.redis-holds`, written when a record goes to Redis, removed when a replay finds Redis empty)
says whether it may hold texts: then a sender's new texts queue behind (`holds`), and the file
is not replayed ahead of them.

Deployments sharing one Redis keep apart: every key is under REDIS_KEY_PREFIX and the file's
name carries the prefix, so a replay never takes another deployment's texts.

A record that fails for any other reason than the database being away (a malformed record, a
bug) cannot succeed by waiting: it is moved to the dead letters, kept whole beside the spool,
so that it does not hold up every text behind it. /healthz counts them (`spool_dead`).

The spool also keeps the senders known to have opted out (hashed, never the numbers), so that
during an outage, when the database cannot say, an opted-out patient gets no holding reply
(CLINICAL.md §7).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import heapq
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

log = logging.getLogger(__name__)

# Keys without a prefix (REDIS_KEY_PREFIX empty); Spool.key / dead_key / opted_out_key have it.
REDIS_KEY = "triage:spool:inbound"
DEAD_KEY = "triage:spool:dead"
OPTED_OUT_KEY = "triage:spool:opted-out"
# Failures that waiting cures: the replay stops there and keeps the order.
TRANSIENT = (OperationalError, InterfaceError)
# On the request path: a Redis that hangs costs a text at most this per call, then the file.
REDIS_TIMEOUT_S = 1.0
_file_lock = threading.Lock()


class _Unreachable(Exception):
    """Redis did not answer: what it holds is unknown."""


@contextlib.contextmanager
def _locked(path: Path):
    """This process's threads and other processes (web workers push, a task replays) in turn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock, open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _lines(path: Path) -> list[str]:
    try:
        return [ln for ln in path.read_text("utf-8").splitlines() if ln.strip()]
    except FileNotFoundError:
        return []


def sender_key(to: str, from_: str) -> str:
    """A sender of one clinic number, hashed: no phone number sits in Redis or a file."""
    return hashlib.sha256(f"{to.strip()}|{from_.strip()}".encode()).hexdigest()[:24]


def order_of(record: Mapping[str, Any]) -> int:
    """Where a record stands in the one order of the spool (records spooled before
    `spooled_ns` existed stand by their received_at)."""
    stamp = record.get("spooled_ns")
    if isinstance(stamp, int):
        return stamp
    try:
        return int(datetime.fromisoformat(record["received_at"]).timestamp() * 1e9)
    except (KeyError, TypeError, ValueError):
        return 0


class Spool:
    def __init__(self, *, redis_url: str | None, spool_dir: str, key_prefix: str = ""):
        self.redis_url = redis_url
        self.key = f"{key_prefix}{REDIS_KEY}"
        self.dead_key = f"{key_prefix}{DEAD_KEY}"
        self.opted_out_key = f"{key_prefix}{OPTED_OUT_KEY}"
        # A prefix is a deployment: its file is its own even in a shared SPOOL_DIR.
        stem = "inbound" + (f"-{re.sub(r'[^A-Za-z0-9_.-]', '_', key_prefix)}"
                            if key_prefix else "")
        directory = Path(spool_dir)
        self.path = directory / f"{stem}.jsonl"
        self.dead_path = directory / f"{stem}.dead.jsonl"
        self.redis_marker = directory / f"{stem}.redis-holds"
        self.opted_out_path = directory / f"{stem}.opted-out"
        self._redis = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Spool:
        return cls(redis_url=config.get("REDIS_URL"), spool_dir=config["SPOOL_DIR"],
                   key_prefix=config.get("REDIS_KEY_PREFIX") or "")

    def _client(self):
        if self._redis is None and self.redis_url:
            import redis

            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                               socket_connect_timeout=REDIS_TIMEOUT_S)
        return self._redis

    def push(self, record: dict) -> str:
        """Keeps one inbound request; returns where it went. Falls back to the file."""
        record = {**record, "spooled_ns": record.get("spooled_ns") or time.time_ns()}
        line = json.dumps(record, sort_keys=True)
        client = self._client()
        if client is not None:
            try:
                client.rpush(self.key, line)
            except Exception as exc:  # Redis down too: the file still keeps it
                log.warning("spool: redis unavailable (%s), using the file", type(exc).__name__)
            else:
                if not self.redis_marker.exists():
                    self.redis_marker.parent.mkdir(parents=True, exist_ok=True)
                    self.redis_marker.touch()
                return "redis"
        with _locked(self.path):
            _append(self.path, line)
        return "file"

    def pending(self) -> int:
        count = len(_lines(self.path))
        client = self._client()
        if client is not None:
            with contextlib.suppress(Exception):
                count += client.llen(self.key)
        return count

    def _redis_records(self) -> list[str]:
        """What Redis holds, oldest first; [] without Redis; _Unreachable when it is away and
        may hold texts."""
        client = self._client()
        if client is None:
            return []
        try:
            return [raw.decode() if isinstance(raw, bytes) else raw
                    for raw in client.lrange(self.key, 0, -1)]
        except Exception as exc:
            log.warning("spool: redis unavailable (%s) for a lookup", type(exc).__name__)
            if self.redis_marker.exists():
                raise _Unreachable from exc
            return []  # nothing went to Redis since it was last found empty

    def holds(self, sender: str) -> bool:
        """Does an earlier text from `sender` still wait here? Its later texts must queue behind
        it (replayed in order), or the conversation would take the answers out of order.
        Unknown (Redis away after texts went to it) counts as yes."""
        if any(json.loads(line).get("from") == sender for line in _lines(self.path)):
            return True
        try:
            return any(json.loads(raw).get("from") == sender for raw in self._redis_records())
        except _Unreachable:
            return True

    def replay(self, handle, *, transient: tuple[type[BaseException], ...] = TRANSIENT) -> int:
        """Feeds each spooled record to `handle(record)` in the spool's one order (Redis and
        the file merged by `spooled_ns`); a record leaves the spool only after `handle`
        returned, or failed in a way waiting cannot cure (it goes to the dead letters). A
        `transient` failure stops the replay (order is kept) and is raised. While Redis is
        away and may hold texts, nothing is replayed: they could come before the file's.
        Returns how many records were handled."""
        try:
            from_redis = self._redis_records()
        except _Unreachable:
            log.warning("spool: redis unreachable and may hold texts; replay waits for it")
            return 0
        from_file = _lines(self.path)
        done = 0
        for raw, where in self._merged(from_file, from_redis):
            done += self._feed(handle, raw, transient, where)
            self._remove(raw, where)
        client = self._client()
        if client is not None and self.redis_marker.exists():
            with contextlib.suppress(Exception):
                if client.llen(self.key) == 0:
                    self.redis_marker.unlink(missing_ok=True)
        return done

    @staticmethod
    def _merged(from_file: list[str], from_redis: list[str]) -> Iterator[tuple[str, str]]:
        def tagged(lines, where):
            for raw in lines:
                try:
                    stamp = order_of(json.loads(raw))
                except ValueError:
                    stamp = 0  # unreadable: it goes first, to the dead letters
                yield stamp, raw, where

        # Each backend's own order is kept; between them, the stamps decide (a tie: Redis's
        # first, as texts went to the file only once Redis failed).
        for _stamp, raw, where in heapq.merge(tagged(from_redis, "redis"),
                                              tagged(from_file, "file"), key=lambda t: t[0]):
            yield raw, where

    def _remove(self, raw: str, where: str) -> None:
        if where == "redis":
            # Handled twice if this fails: the receipt makes the second a no-op.
            with contextlib.suppress(Exception):
                self._client().lrem(self.key, 1, raw)
            return
        # Under the lock only for the rewrite: texts appended meanwhile are kept.
        with _locked(self.path):
            lines = _lines(self.path)
            with contextlib.suppress(ValueError):
                lines.remove(raw)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in lines), "utf-8")
            os.replace(tmp, self.path)

    def _feed(self, handle, raw: str, transient, where: str) -> int:
        try:
            record = json.loads(raw)
            handle(record)
        except transient:
            raise
        except Exception as exc:
            record = _readable(raw)
            # Only the error's name: its message can hold the patient's number or words.
            log.error("spool: inbound %s failed (%s) and was moved to the dead letters",
                      record.get("sid"), type(exc).__name__)
            self._bury(record, type(exc).__name__, where)
            return 0
        return 1

    def _bury(self, record: dict, error: str, where: str) -> None:
        line = json.dumps({"record": record, "error": error,
                           "at": datetime.now(UTC).isoformat()}, sort_keys=True)
        if where == "redis":
            self._client().rpush(self.dead_key, line)
            return
        with _locked(self.path):
            _append(self.dead_path, line)

    def dead(self) -> list[dict]:
        """The dead letters: {"record", "error", "at"}, oldest first (file, then Redis)."""
        out = [json.loads(ln) for ln in _lines(self.dead_path)]
        client = self._client()
        if client is not None:
            with contextlib.suppress(Exception):
                out += [json.loads(raw) for raw in client.lrange(self.dead_key, 0, -1)]
        return out

    def dead_count(self) -> int:
        count = len(_lines(self.dead_path))
        client = self._client()
        if client is not None:
            with contextlib.suppress(Exception):
                count += client.llen(self.dead_key)
        return count

    # ---- who must get no holding reply -------------------------------------------------

    def remember_opt_out(self, to: str, from_: str, opted_out: bool) -> None:
        """Records what the database said about this sender's opt-out, where an outage can
        still read it: Redis, and this machine's file (for an outage of both)."""
        key = sender_key(to, from_)
        client = self._client()
        if client is not None:
            try:
                (client.sadd if opted_out else client.srem)(self.opted_out_key, key)
            except Exception as exc:
                log.warning("spool: redis unavailable (%s) for the opt-out list",
                            type(exc).__name__)
        with _locked(self.path):
            known = set(_lines(self.opted_out_path))
            if (key in known) == opted_out:
                return
            if opted_out:
                _append(self.opted_out_path, key)
            else:
                tmp = self.opted_out_path.with_suffix(".tmp")
                tmp.write_text("".join(k + "\n" for k in known - {key}), "utf-8")
                os.replace(tmp, self.opted_out_path)

    def remember_patient_opt_out(self, clinic_numbers: Iterable[str], phone: str,
                                 opted_out: bool) -> None:
        """remember_opt_out for a patient on every number of their clinic they could text."""
        for number in clinic_numbers:
            self.remember_opt_out(number, phone, opted_out)

    def opted_out(self, to: str, from_: str) -> bool:
        """Is this sender known to have opted out (so: no holding reply)?"""
        key = sender_key(to, from_)
        if key in _lines(self.opted_out_path):
            return True
        client = self._client()
        if client is not None:
            with contextlib.suppress(Exception):
                return bool(client.sismember(self.opted_out_key, key))
        return False


def _readable(raw: str) -> dict:
    try:
        record = json.loads(raw)
    except ValueError:
        return {"raw": raw}
    return record if isinstance(record, dict) else {"raw": raw}
