"""GET /healthz: is each dependency reachable? 200 when all critical checks pass, else 503.

With DRY_RUN=1 nothing is sent, which must never pass for healthy: the status says
"degraded: dry-run" (and "sender": "dry-run"), still with 200, because the process itself
works (webhooks are answered and recorded) and a 503 would take every web process out of the
load balancer at once. Monitoring alerts on the status text, not only on the code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Flask, current_app, jsonify

from service.store import get_db

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

Check = Callable[[], object]


@dataclass(frozen=True)
class _Registered:
    check: Check
    critical: bool


def add_check(app: Flask, name: str, check: Check, *, critical: bool = True) -> None:
    """Report `name` in /healthz: "ok" if `check()` returns None, what it returns otherwise
    (a number such as an age in seconds), "error" if it raises.

    A failing critical check makes the answer 503 (take this web process out of rotation);
    a non-critical one is only reported.
    """
    app.extensions.setdefault("health_checks", {})[name] = _Registered(check, critical)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    add_check(app, "database", lambda: get_db(app).ping())


@bp.get("/healthz")
def healthz():
    checks: dict[str, _Registered] = current_app.extensions.get("health_checks", {})
    body: dict[str, object] = {}
    healthy = True
    for name, registered in checks.items():
        try:
            value = registered.check()
        except Exception as exc:
            log.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc)
            body[name] = "error"
            healthy = healthy and not registered.critical
        else:
            body[name] = "ok" if value is None else value
    if not healthy:
        body["status"] = "error"
    elif current_app.config.get("DRY_RUN"):
        body["sender"], body["status"] = "dry-run", "degraded: dry-run"
    else:
        body["status"] = "ok"
    return jsonify(body), 200 if healthy else 503
