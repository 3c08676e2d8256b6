"""Security headers on every response (the dashboard adds its Content-Security-Policy and
no-store on top): no MIME sniffing, no framing, no referrer to other sites, and in production
HSTS, so that a browser that once reached the service never talks to it over plain http."""

from __future__ import annotations

from flask import Flask, Response

HSTS = "max-age=31536000; includeSubDomains"  # one year
ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def init_app(app: Flask) -> None:
    production = app.config.get("ENV") == "production"

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in ALWAYS.items():
            response.headers.setdefault(name, value)
        if production:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response
