"""The inbound spool: when the database is unavailable, raw inbound webhooks wait here (Redis,
else an append-only local file) and are replayed in order once it is back. Twilio does not
retry inbound SMS webhooks, so this is all that stands between an outage and a lost answer."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

REDIS_KEY = "triage:spool:inbound"
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

    def replay(self, handle) -> int:
        """Feeds each spooled record to `handle(record)` in arrival order; a record leaves the
        spool only after `handle` returned. Stops at the first failure (order is kept)."""
        done = 0
        with _locked(self.path):
            if self.path.exists():
                lines = [ln for ln in self.path.read_text("utf-8").splitlines() if ln.strip()]
                while lines:
                    handle(json.loads(lines[0]))
                    lines.pop(0)
                    done += 1
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
            handle(json.loads(raw))
            client.lpop(REDIS_KEY)  # handled twice if this fails: the receipt makes it a no-op
            done += 1
        return done
