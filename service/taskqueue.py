"""The one way the service layer asks Celery for something: a task by name (never an import of
`tasks`), and the broker settings that the worker (tasks.celery_app) and the web agree on.

Nothing depends on these messages: work is committed as rows first, and the beat picks every
due row up within a minute. A message only makes it happen sooner, so a failed one is logged
and forgotten.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# kombu imports it by name when a connection is first made (service/broker.py says why).
REDIS_TRANSPORT = "service.broker:Transport"

_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def broker_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Celery settings (lowercase) for reaching the broker of this configuration.

    REDIS_URL (or BROKER_URL) gives the Redis broker; without one, kombu's filesystem
    transport under BROKER_DIR (default var/broker), which needs no server.
    """
    url = config.get("BROKER_URL") or config.get("REDIS_URL") or "filesystem://"
    settings: dict[str, Any] = {"broker_url": url}
    if url.startswith("filesystem://"):
        url = settings["broker_url"] = "filesystem://localhost//"  # kombu warns without a host
        base = Path(config.get("BROKER_DIR") or "var/broker")
        queue, control = base / "queue", base / "control"
        for folder in (queue, control):
            folder.mkdir(parents=True, exist_ok=True)
        settings["broker_transport_options"] = {
            "data_folder_in": str(queue), "data_folder_out": str(queue),
            "control_folder": str(control),
            # An empty poll waits this long; the default (1 s) with one message per poll and
            # prefetch 1 lets a burst of beat jobs delay the texts behind them by seconds.
            "polling_interval": 0.2,
        }
    else:
        if url.startswith(("redis://", "rediss://")):
            # kombu's Redis transport, with a worker-killing fault on reconnection fixed.
            settings["broker_transport"] = REDIS_TRANSPORT
            if url.startswith("rediss://") and "ssl_cert_reqs=" not in url:
                # kombu turns TLS on from the scheme only for a transport named "rediss", so
                # named explicitly it is asked for here; and the server's certificate is
                # verified (kombu's own default for a bare rediss:// verifies nothing). A
                # provider with self-signed certificates says so in the URL
                # (`?ssl_cert_reqs=none`).
                settings["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        # Tasks are short (no long ETA anywhere), so an hour before an unacknowledged task
        # is delivered again (acks_late) is plenty.
        options: dict[str, Any] = {"socket_connect_timeout": 5, "visibility_timeout": 3600}
        if config.get("REDIS_KEY_PREFIX"):
            options["global_keyprefix"] = config["REDIS_KEY_PREFIX"]
        settings["broker_transport_options"] = options
    return settings


def _client(config: Mapping[str, Any]):
    settings = broker_settings(config)
    key = (settings["broker_url"], repr(sorted(settings["broker_transport_options"].items())))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            from celery import Celery

            client = Celery("triage-client", set_as_current=False)
            client.conf.update(settings, broker_connection_timeout=1,
                               broker_connection_retry_on_startup=False,
                               task_ignore_result=True)
            if "socket_connect_timeout" in settings["broker_transport_options"]:
                # On the request path (a webhook): a Redis that hangs costs at most this.
                client.conf.broker_transport_options = {
                    **settings["broker_transport_options"], "socket_connect_timeout": 1,
                    "socket_timeout": 1}
            _clients[key] = client
    return client


def send_task(name: str, *args: Any, config: Mapping[str, Any] | None = None) -> bool:
    """Asks a worker to run task `name` soon; True if the message left.

    Inside a worker (no `config`), the worker's own app sends it; elsewhere a small client for
    the broker of `config`.
    """
    try:
        if config is None:
            from celery import current_app

            current_app.send_task(name, args=args)
        else:
            _client(config).send_task(name, args=args, retry=False)
    except Exception as exc:  # the beat will do it within a minute anyway
        log.warning("could not queue %s now (%s); the beat will pick it up", name,
                    type(exc).__name__)
        return False
    return True
