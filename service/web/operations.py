"""Operations: what /healthz adds about the broker and the backlog of due work."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from service import clock
from service.followups import schedule as followups
from service.store import get_db
from service.web.health import add_check


def init_app(app: Flask) -> None:
    # The broker is not critical for the web: inbound texts are handled without it, and due
    # rows wait in the database. The backlog's age is the number to alert on.
    add_check(app, "broker", lambda: broker_ping(app.config), critical=False)
    add_check(app, "oldest_due_seconds", lambda: oldest_due_seconds(app), critical=False)


def broker_ping(config) -> None:
    """Raises if the broker cannot be reached (Redis) or written to (the embedded broker)."""
    url = config.get("BROKER_URL") or config.get("REDIS_URL") or "filesystem://"
    if url.startswith("filesystem://"):
        folder = Path(config.get("BROKER_DIR") or "var/broker")
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # not created yet: the worker creates it under a writable dir
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"broker directory {folder} is not writable")
        return
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


def oldest_due_seconds(app: Flask) -> int:
    """Age of the oldest due-but-unsent outbox text or follow-up (0: nothing is late)."""
    with get_db(app).transaction() as session:
        return int(followups.oldest_due_seconds(session, clock.now()))
