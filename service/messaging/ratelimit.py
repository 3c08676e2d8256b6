"""A send-rate limit per sending number that holds across every worker process.

Each send reserves the next free slot of its number (slots are 1/rate seconds apart) and waits
until that slot starts. With Redis the slot is kept in Redis (server time, a Lua script, so
workers on several machines agree); with the embedded broker (one machine) it is kept in a
small file under the broker directory, reserved under an exclusive file lock. The limit uses
real time on purpose: it paces requests to Twilio, whatever the service's clock says.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0  # a send that would wait longer gives its row back to the outbox

# KEYS[1] = the number's key; ARGV = interval_ms, max_wait_ms. Returns the wait in ms, or -1.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = tonumber(ARGV[1])
local slot = math.max(now, last + interval)
if slot - now > tonumber(ARGV[2]) then return -1 end
redis.call('SET', KEYS[1], slot, 'PX', slot - now + interval + 1000)
return slot - now
"""


def _key(number: str | None) -> str:
    # Phone numbers do not need to sit in Redis keys or file names in the clear.
    return hashlib.sha256((number or "default").encode()).hexdigest()[:16]


class RateLimiter:
    """`acquire(number)` blocks until this process may send from `number`; False on timeout."""

    def __init__(self, per_second: float, *, redis_url: str | None = None,
                 key_prefix: str = "", lock_dir: str | None = None,
                 max_wait: float = MAX_WAIT_S) -> None:
        self.interval = 1.0 / per_second
        self.redis_url, self.key_prefix = redis_url, key_prefix
        self.lock_dir = Path(lock_dir) if lock_dir else None
        self.max_wait = max_wait
        self._redis = None
        self._script = None

    @property
    def backend(self) -> str:
        return "redis" if self.redis_url else "file"

    def acquire(self, number: str | None) -> bool:
        wait = self._reserve_redis(number) if self.redis_url else self._reserve_file(number)
        if wait is None:
            log.warning("rate limit: no send slot within %.0fs", self.max_wait)
            return False
        if wait > 0:
            time.sleep(wait)
        return True

    def _reserve_redis(self, number: str | None) -> float | None:
        if self._script is None:
            import redis

            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=5,
                                               socket_connect_timeout=5)
            self._script = self._redis.register_script(_RESERVE)
        key = f"{self.key_prefix}triage:rate:{_key(number)}"
        wait_ms = int(self._script(keys=[key], args=[max(1, round(self.interval * 1000)),
                                                     round(self.max_wait * 1000)]))
        return None if wait_ms < 0 else wait_ms / 1000.0

    def _reserve_file(self, number: str | None) -> float | None:
        directory = self.lock_dir or Path("var/broker")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"rate-{_key(number)}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 64, 0).decode().strip()
            last = float(raw) if raw else 0.0
            now = time.time()
            slot = max(now, last + self.interval)
            if slot - now > self.max_wait:
                return None
            data = f"{slot:.6f}".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            return slot - now
        finally:
            os.close(fd)  # closing releases the lock
