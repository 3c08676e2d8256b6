"""Requests checked against the OpenAPI document: query and path parameters, JSON bodies."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from flask import Request
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from service.web.api import openapi
from service.web.api.errors import ApiError

DOCUMENT_URI = "urn:triage:openapi"
_CONVERTER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(openapi.raw(), default_specification=DRAFT202012)
    return Registry().with_resource(DOCUMENT_URI, resource)


@cache
def _validator(pointer: str) -> Draft202012Validator:
    """A validator for a schema inside the document (a JSON pointer), refs resolved."""
    return Draft202012Validator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=_registry(),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def openapi_path(rule: str, prefix: str) -> str:
    """'/api/v1/patients/<int:patient_id>' -> '/patients/{patient_id}'."""
    return _CONVERTER.sub(r"{\1}", rule[len(prefix):] if rule.startswith(prefix) else rule)


def operation_for(rule: str, method: str, prefix: str) -> tuple[str, dict[str, Any]] | None:
    path = openapi_path(rule, prefix)
    method = "get" if method.upper() == "HEAD" else method.lower()  # HEAD runs the GET view
    operation = openapi.raw()["paths"].get(path, {}).get(method)
    if operation is None:
        return None
    return f"/paths/{_escape(path)}/{method}", operation


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def validate_request(request: Request, prefix: str) -> tuple[dict[str, Any], Any]:
    """(query parameters with defaults applied, the JSON body or None); raises ApiError."""
    found = operation_for(request.url_rule.rule, request.method, prefix)
    if found is None:
        return {}, None
    pointer, operation = found
    for index, param in enumerate(operation.get("parameters", [])):
        if param["in"] == "path":
            value = (request.view_args or {}).get(param["name"])
            if not _validator(f"{pointer}/parameters/{index}/schema").is_valid(value):
                raise ApiError(404, "not_found", f"no such {param['name'].removesuffix('_id')}")
    query = _query(request, pointer, operation)
    body = _body(request, pointer, operation)
    return query, body


def _query(request: Request, pointer: str, operation: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for index, param in enumerate(operation.get("parameters", [])):
        if param["in"] != "query":
            continue
        name, schema = param["name"], param["schema"]
        raw = request.args.getlist(name)
        if not raw:
            if param.get("required"):
                raise ApiError(400, "bad_request", f"query parameter {name!r} is required")
            if "default" in schema:
                values[name] = schema["default"]
            continue
        if len(raw) > 1:
            raise ApiError(400, "bad_request", f"query parameter {name!r} is given twice")
        value: Any = raw[0]
        if schema.get("type") == "integer":
            try:
                value = int(value)
            except ValueError:
                raise ApiError(400, "bad_request",
                               f"query parameter {name!r} must be an integer") from None
        error = best_match(_validator(f"{pointer}/parameters/{index}/schema").iter_errors(value))
        if error is not None:
            raise ApiError(400, "bad_request", f"query parameter {name!r}: {error.message}")
        if isinstance(value, str) and "\x00" in value:
            raise ApiError(400, "bad_request", f"query parameter {name!r} has a NUL character")
        values[name] = value
    return values


def _body(request: Request, pointer: str, operation: dict[str, Any]) -> Any:
    spec = operation.get("requestBody")
    if spec is None:
        return None
    data = request.get_data(cache=True)
    if not data.strip():
        if spec.get("required"):
            raise ApiError(400, "bad_request", "a JSON body is required")
        return None
    if request.mimetype != "application/json":
        raise ApiError(400, "bad_request", "send the body as JSON (Content-Type: "
                                           "application/json)")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "bad_request", f"the body nests deeper than {MAX_DEPTH} "
                                           "levels") from None
    _check_shape(body)
    schema_pointer = f"{pointer}/requestBody/content/application~1json/schema"
    error = best_match(_validator(schema_pointer).iter_errors(body))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)
        raise ApiError(422, "validation_error",
                       f"{where}: {error.message}" if where else error.message)
    if _has_nul(body):
        raise ApiError(422, "validation_error", "text must not contain NUL characters")
    return body


MAX_DEPTH = 32  # no request of the API nests more than a few levels


def _check_shape(body: Any) -> None:
    """400 for what JSON allows but nothing downstream can hold: nesting deeper than
    MAX_DEPTH (every later walk of it would recurse) and lone surrogates ("\\ud800"), which no
    UTF-8 database column can store. Walked without recursion."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, "bad_request", f"the body nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "bad_request", "the body holds text that is not valid Unicode "
                                           "(a lone surrogate such as \\ud800)") from None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False
