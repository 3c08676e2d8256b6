"""A send-rate limit per sending lane (a number, or a Messaging Service) that holds across every
worker process.

Two parts, both kept in Redis (server time, Lua scripts, so workers on several machines agree)
or, with the embedded broker (one machine), in small files under the broker directory, each
read and written under an exclusive file lock:

- `reserve(lane)` books the lane's next free slot (slots are 1/rate seconds apart) and says how
  long until it starts. A sender whose slot is a moment away waits for it; one whose slot is
  further away holds its text and comes back at the slot, so a worker process never sleeps on
  one number while the others' texts wait behind it.
- `gate(lane)` is the limit itself: it lets a send through only when at least one interval has
  passed since the lane's last send went through (it waits the rest, briefly), whatever was
  booked. A sender that comes back late from a hold therefore never brings two sends of one
  lane closer than the interval.

The limit uses real time on purpose: it paces requests to Twilio, whatever the service's clock
says.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

MAX_WAIT_S = 90.0  # no slot further away than this is booked: the row goes back to the outbox

# KEYS[1] = the lane's booking key; ARGV = interval_us, max_wait_us. The wait in us, or -1.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = tonumber(ARGV[1])
local slot = math.max(now, last + interval)
if slot - now > tonumber(ARGV[2]) then return -1 end
redis.call('SET', KEYS[1], string.format('%.0f', slot), 'PX',
           math.floor((slot - now + interval) / 1000) + 1000)
return slot - now
"""

# KEYS[1] = the lane's last-send key; ARGV = interval_us. 0 when the send may go now (and it
# is recorded as the lane's last), else the us still to wait.
_GATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = redis.call('GET', KEYS[1])
local interval = tonumber(ARGV[1])
if last and now < tonumber(last) + interval then return tonumber(last) + interval - now end
redis.call('SET', KEYS[1], string.format('%.0f', now), 'PX', math.floor(interval / 1000) + 1000)
return 0
"""


def _key(lane: str | None) -> str:
    # Phone numbers do not need to sit in Redis keys or file names in the clear.
    return hashlib.sha256((lane or "default").encode()).hexdigest()[:16]


class RateLimiter:
    """Per-lane send slots. `per_second` is every lane's rate unless `lane_rates` names the
    lane (a Messaging Service's SID with its own throughput)."""

    def __init__(self, per_second: float, *, redis_url: str | None = None,
                 key_prefix: str = "", lock_dir: str | None = None,
                 max_wait: float = MAX_WAIT_S,
                 lane_rates: Mapping[str, float] | None = None) -> None:
        self.per_second = float(per_second)
        self.lane_rates = {k: float(v) for k, v in (lane_rates or {}).items() if k}
        self.redis_url, self.key_prefix = redis_url, key_prefix
        self.lock_dir = Path(lock_dir) if lock_dir else None
        self.max_wait = max_wait
        self._redis = None
        self._scripts: dict[str, object] = {}

    @property
    def backend(self) -> str:
        return "redis" if self.redis_url else "file"

    def interval(self, lane: str | None) -> float:
        return 1.0 / self.lane_rates.get(lane or "", self.per_second)

    # ---- the two parts ----------------------------------------------------------------------

    def reserve(self, lane: str | None) -> float | None:
        """Books the lane's next slot: seconds until it starts, or None when it is further
        away than `max_wait` (nothing is booked then)."""
        interval = self.interval(lane)
        if self.redis_url:
            wait_us = int(self._run("reserve", lane,
                                    round(interval * 1e6), round(self.max_wait * 1e6)))
            return None if wait_us < 0 else wait_us / 1e6
        with self._locked(lane, "slot") as (fd, now):
            raw = os.pread(fd, 64, 0).decode().strip()
            slot = max(now, (float(raw) if raw else 0.0) + interval)
            if slot - now > self.max_wait:
                return None
            _write(fd, slot)
            return slot - now

    def gate(self, lane: str | None, *, timeout: float | None = None) -> bool:
        """Waits until the lane's last send is at least one interval old, then counts this send
        as the lane's last. False if that did not happen within `timeout` (default: two
        intervals); nothing is counted then."""
        interval = self.interval(lane)
        deadline = time.monotonic() + (2 * interval if timeout is None else timeout)
        while True:
            wait = self._gate_once(lane, interval)
            if wait <= 0:
                return True
            if time.monotonic() + wait > deadline:
                return False
            time.sleep(wait)

    def acquire(self, lane: str | None) -> bool:
        """Books a slot, sleeps until it, and goes through the gate; False when no slot was
        free within `max_wait`."""
        wait = self.reserve(lane)
        if wait is None:
            log.warning("rate limit: no send slot within %.0fs", self.max_wait)
            return False
        if wait > 0:
            time.sleep(wait)
        return self.gate(lane, timeout=wait + 2 * self.interval(lane))

    # ---- backends ---------------------------------------------------------------------------

    def _gate_once(self, lane: str | None, interval: float) -> float:
        if self.redis_url:
            return int(self._run("gate", lane, round(interval * 1e6), kind="sent")) / 1e6
        with self._locked(lane, "sent") as (fd, now):
            raw = os.pread(fd, 64, 0).decode().strip()
            if raw and now < float(raw) + interval:
                return float(raw) + interval - now
            _write(fd, now)
            return 0.0

    def _run(self, name: str, lane: str | None, *args, kind: str = "slot"):
        if not self._scripts:
            import redis

            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=5,
                                               socket_connect_timeout=5)
            self._scripts = {"reserve": self._redis.register_script(_RESERVE),
                             "gate": self._redis.register_script(_GATE)}
        key = f"{self.key_prefix}triage:{kind}:{_key(lane)}"  # kind: slot (booked) | sent
        return self._scripts[name](keys=[key], args=list(args))

    def _locked(self, lane: str | None, kind: str):
        return _FileLock((self.lock_dir or Path("var/broker")) / f"{kind}-{_key(lane)}")


class _FileLock:
    """An exclusive lock on a small file, yielding its descriptor and the time once locked."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self.fd, time.time()

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing releases the lock


def _write(fd: int, value: float) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{value:.6f}".encode(), 0)
