"""The inbound spool: when the database is unavailable, raw inbound webhooks wait here (Redis,
else an append-only local file) and are replayed in order once it is back. Twilio does not
retry inbound SMS webhooks, so this is all that stands between an outage and a lost answer.

A record that fails for any other reason than the database being away (a malformed record, a
bug) cannot succeed by waiting: it is moved to the dead letters, kept whole beside the spool,
so that it does not hold up every text behind it. /healthz counts them (`spool_dead`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import InterfaceError, OperationalError

log = logging.getLogger(__name__)

REDIS_KEY = "triage:spool:inbound"
DEAD_KEY = "triage:spool:dead"
# Failures that waiting cures: the replay stops there and keeps the order.
TRANSIENT = (OperationalError, InterfaceError)
_file_lock = threading.Lock()


@contextlib.contextmanager
def _locked(path: Path):
    """This process's threads and other processes (web workers push, a task replays) in turn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock, open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield


class Spool:
    def __init__(self, *, redis_url: str | None, spool_dir: str):
        self.redis_url = redis_url
        self.path = Path(spool_dir) / "inbound.jsonl"
        self.dead_path = Path(spool_dir) / "inbound.dead.jsonl"
        self._redis = None

    def _client(self):
        if self._redis is None and self.redis_url:
            import redis

            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=2,
                                               socket_connect_timeout=2)
        return self._redis

    def push(self, record: dict) -> str:
        """Keeps one inbound request; returns where it went. Falls back to the file."""
        line = json.dumps(record, sort_keys=True)
        client = self._client()
        if client is not None:
            try:
                client.rpush(REDIS_KEY, line)
                return "redis"
            except Exception as exc:  # Redis down too: the file still keeps it
                log.warning("spool: redis unavailable (%s), using the file", type(exc).__name__)
        with _locked(self.path), open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return "file"

    def pending(self) -> int:
        count = 0
        client = self._client()
        if client is not None:
            try:
                count += client.llen(REDIS_KEY)
            except Exception:
                pass
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                count += sum(1 for line in fh if line.strip())
        return count

    def holds(self, sender: str) -> bool:
        """Does an earlier text from `sender` still wait here? Its later texts must queue behind
        it (replayed in order), or the conversation would take the answers out of order."""
        if self.path.exists():
            with _locked(self.path), open(self.path, encoding="utf-8") as fh:
                if any(json.loads(line).get("from") == sender for line in fh if line.strip()):
                    return True
        client = self._client()
        if client is not None:
            try:
                if client.llen(REDIS_KEY):
                    return any(json.loads(raw).get("from") == sender
                               for raw in client.lrange(REDIS_KEY, 0, -1))
            except Exception as exc:  # Redis away: what it holds is replayed when it is back
                log.warning("spool: redis unavailable (%s) for a lookup", type(exc).__name__)
        return False

    def replay(self, handle, *, transient: tuple[type[BaseException], ...] = TRANSIENT) -> int:
        """Feeds each spooled record to `handle(record)` in arrival order; a record leaves the
        spool only after `handle` returned, or failed in a way waiting cannot cure (it goes to
        the dead letters). A `transient` failure stops the replay (order is kept) and is raised.
        Returns how many records were handled."""
        done = 0
        with _locked(self.path):
            if self.path.exists():
                lines = [ln for ln in self.path.read_text("utf-8").splitlines() if ln.strip()]
                while lines:
                    done += self._feed(handle, lines[0], transient, "file")
                    lines.pop(0)
                    tmp = self.path.with_suffix(".tmp")
                    tmp.write_text("".join(ln + "\n" for ln in lines), "utf-8")
                    os.replace(tmp, self.path)
        client = self._client()
        while client is not None:
            try:
                raw = client.lindex(REDIS_KEY, 0)
            except Exception as exc:  # Redis away: its records wait for the next replay
                log.warning("spool: redis unavailable (%s) for replay", type(exc).__name__)
                break
            if raw is None:
                break
            done += self._feed(handle, raw, transient, "redis")
            client.lpop(REDIS_KEY)  # handled twice if this fails: the receipt makes it a no-op
        return done

    def _feed(self, handle, raw: str | bytes, transient, where: str) -> int:
        record = json.loads(raw)
        try:
            handle(record)
        except transient:
            raise
        except Exception as exc:
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
            self._client().rpush(DEAD_KEY, line)
            return
        with open(self.dead_path, "a", encoding="utf-8") as fh:  # under the spool's lock
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def dead(self) -> list[dict]:
        """The dead letters: {"record", "error", "at"}, oldest first (file, then Redis)."""
        out = []
        if self.dead_path.exists():
            out += [json.loads(ln) for ln in self.dead_path.read_text("utf-8").splitlines()
                    if ln.strip()]
        client = self._client()
        if client is not None:
            with contextlib.suppress(Exception):
                out += [json.loads(raw) for raw in client.lrange(DEAD_KEY, 0, -1)]
        return out

    def dead_count(self) -> int:
        count = 0
        if self.dead_path.exists():
            with open(self.dead_path, encoding="utf-8") as fh:
                count += sum(1 for line in fh if line.strip())
        client = self._client()
        if client is not None:
            with contextlib.suppress(Exception):
                count += client.llen(DEAD_KEY)
        return count
