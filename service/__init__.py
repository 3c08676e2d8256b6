"""The Flask web service: create_app builds one app per process (no global app)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

# Every route: a larger body is refused with 413 before it is read.
MAX_REQUEST_BYTES = 256 * 1024


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Configuration from the environment, then `test_config` on top; nothing connects yet."""
    from service import store
    from service.config import load_config
    from service.logs import configure_logging
    from service.web import api, dashboard, headers, health, operations, simulator, twilio

    config = load_config(test_config)
    configure_logging(config["LOG_LEVEL"])

    app = Flask(__name__)
    app.config.from_mapping(config)
    if config["TRUSTED_PROXIES"]:
        # Behind N proxies the client's address is the Nth X-Forwarded-For entry from the
        # right (what the per-address sign-in limit counts); never trusted without them.
        n = config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    if app.config.get("MAX_CONTENT_LENGTH") is None:  # Flask's default: no limit
        # A Twilio webhook is a few kilobytes and nothing here takes uploads.
        app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES

    store.init_app(app)
    headers.init_app(app)
    health.init_app(app)
    operations.init_app(app)
    twilio.init_app(app)
    simulator.init_app(app)
    api.init_app(app)
    dashboard.init_app(app)
    return app
