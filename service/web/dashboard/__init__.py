"""The staff dashboard under /dashboard: alert queue, patients, enrollment, exports, audit.

Staff sign in (argon2 password hashes, flask-login sessions); every query is scoped to their
clinic. Every form carries a CSRF token (flask-wtf), checked for the dashboard's own views
only so that Twilio webhooks and the bearer-token API are not asked for one.
"""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFProtect
from werkzeug.routing import IntegerConverter

from service.store.models import MAX_ID


class _IdConverter(IntegerConverter):
    """A row id: a positive integer that fits the ids' 32 bits."""

    def __init__(self, url_map, *args, **kwargs) -> None:
        super().__init__(url_map, min=1, max=MAX_ID)


def init_app(app: Flask) -> None:
    from service.web.dashboard.auth import init_login
    from service.web.dashboard.views import bp

    # The dashboard checks tokens itself (views.py, before_request): other blueprints that
    # want CSRF call app.extensions["csrf"].protect() the same way.
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    # A queue page stays open all day; its token lives as long as the sign-in session.
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("DASHBOARD_POLL_SECONDS", 5)
    # <id:...> in the dashboard's routes: an id no row can have (beyond 32 bits) is a 404,
    # not a database error.
    app.url_map.converters["id"] = _IdConverter
    if "csrf" not in app.extensions:
        CSRFProtect(app)
    init_login(app)
    app.register_blueprint(bp)
