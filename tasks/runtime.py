"""What tasks need at run time, built once per worker process: the configuration, the
database, the sender, the send-rate limiter and the clock."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from service import clock
from service.config import status_callback_url
from service.messaging.outbox import LaneCaps
from service.messaging.ratelimit import RateLimiter
from service.messaging.senders import Sender, sender_from_config
from service.store import Database, bounds_from_config

log = logging.getLogger(__name__)


class Runtime:
    """Per-process resources of a Celery app (a forked pool process builds its own)."""

    def __init__(self, config: Mapping[str, Any], *, sender: Sender | None = None) -> None:
        self.config = dict(config)
        self._sender = sender
        self._pid: int | None = None
        self._db: Database | None = None
        self._built_sender: Sender | None = None
        self._limiter: RateLimiter | None = None

    def _fresh(self) -> None:
        # A pool process forked from the parent must not reuse its connections.
        if self._pid != os.getpid():
            self._pid, self._db, self._built_sender, self._limiter = os.getpid(), None, None, None

    @property
    def db(self) -> Database:
        self._fresh()
        if self._db is None:
            self._db = Database(self.config["DATABASE_URL"], **bounds_from_config(self.config))
        return self._db

    @property
    def sender(self) -> Sender:
        if self._sender is not None:
            return self._sender
        self._fresh()
        if self._built_sender is None:
            self._built_sender = sender_from_config(self.config)
        return self._built_sender

    @property
    def limiter(self) -> RateLimiter:
        self._fresh()
        if self._limiter is None:
            rate = self.config.get("SEND_RATE_PER_SECOND") or 1.0
            service = self.config.get("TWILIO_MESSAGING_SERVICE_SID")
            self._limiter = RateLimiter(
                rate, redis_url=self.config.get("REDIS_URL"),
                key_prefix=self.config.get("REDIS_KEY_PREFIX") or "",
                lock_dir=self.config.get("BROKER_DIR"),
                lane_rates={service: self.config.get("MESSAGING_SERVICE_RATE_PER_SECOND")
                            or rate} if service else None)
        return self._limiter

    @property
    def lane_caps(self) -> LaneCaps:
        """How many texts of one lane are worth queuing at once (see outbox.LaneCaps)."""
        limiter = self.limiter
        service = self.config.get("TWILIO_MESSAGING_SERVICE_SID")
        return LaneCaps(number=math.ceil(limiter.per_second * limiter.max_wait),
                        service=math.ceil(1 / limiter.interval(service) * limiter.max_wait)
                        if service else None)

    def now(self) -> datetime:
        return clock.now()

    @property
    def status_callback(self) -> str | None:
        return status_callback_url(self.config.get("PUBLIC_BASE_URL"))

    @contextlib.contextmanager
    def only_one(self, name: str, *, ttl: int = 300) -> Iterator[bool]:
        """Yields True in at most one process at a time (others get False and skip the job)."""
        if self.config.get("REDIS_URL"):
            import redis

            client = redis.Redis.from_url(self.config["REDIS_URL"], socket_timeout=5,
                                          socket_connect_timeout=5)
            key = f"{self.config.get('REDIS_KEY_PREFIX') or ''}triage:lock:{name}"
            token = f"{os.getpid()}:{id(self)}"
            got = bool(client.set(key, token, nx=True, ex=ttl))
            try:
                yield got
            finally:
                if got and client.get(key) == token.encode():
                    client.delete(key)
                client.close()
            return
        directory = Path(self.config.get("BROKER_DIR") or "var/broker")
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / f"lock-{name}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)
