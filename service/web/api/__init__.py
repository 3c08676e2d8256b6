"""The clinic JSON API under /api/v1 (bearer tokens per clinic; OpenAPI at openapi.json)."""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException

from service.web.api.errors import json_http_errors
from service.web.api.views import PREFIX, bp


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    # Routing errors (unknown path, wrong method) happen before the blueprint is known.
    app.register_error_handler(HTTPException, json_http_errors(PREFIX + "/"))


__all__ = ["bp", "init_app"]
