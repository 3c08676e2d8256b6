"""JSON errors of the API: {"error": {"code": ..., "message": ...}} with the right status."""

from __future__ import annotations

from flask import Response, jsonify, request
from werkzeug.exceptions import HTTPException

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "too_large",
         415: "unsupported_media_type", 422: "validation_error", 500: "internal_error"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def handle_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def json_http_errors(prefix: str):
    """An app-wide handler: HTTP errors (unknown route, wrong method, ...) under the API's
    prefix come back as JSON; elsewhere they are left as they are."""

    def handle(exc: HTTPException):
        if not request.path.startswith(prefix):
            return exc
        status = exc.code or 500
        response = error_response(status, CODES.get(status, "error"),
                                  exc.description or exc.name)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    return handle
