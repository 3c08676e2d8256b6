"""FHIR output checked by independent validators: HL7's own FHIR R4 JSON schema
(fhir.schema.json, http://hl7.org/fhir/R4/json.html#schema; from npm, see
tests/e2e/package.json), which checks codes such as a status; the `fhir.resources` R4B models
(pydantic, generated from HL7's StructureDefinitions), which check types and unknown fields;
and FHIR's JSON rule that no array, object or string is ever empty, which both let through;
and the Bundle invariants neither checks (bdl-1: `total` only on searchset and history
bundles; bdl-7: a fullUrl once per bundle)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from jsonschema import Draft6Validator
from jsonschema.exceptions import best_match

from tests.e2e.npm_tools import FHIR_R4_SCHEMA, npm_tool


def empty_values(value: Any, where: str = "") -> list[str]:
    """The paths of every empty array, object or string inside `value`."""
    if isinstance(value, dict):
        found = [where or "/"] if not value else []
        for key, item in value.items():
            found += empty_values(item, f"{where}/{key}")
        return found
    if isinstance(value, list):
        found = [where] if not value else []
        for index, item in enumerate(value):
            found += empty_values(item, f"{where}/{index}")
        return found
    if isinstance(value, str) and not value.strip():
        return [where]
    return []


@cache
def _hl7_schema(resource_type: str) -> Draft6Validator:
    """HL7's schema aimed at one resource type (the whole schema's oneOf only says "not valid
    under any of the given schemas")."""
    schema = json.loads(npm_tool(FHIR_R4_SCHEMA).read_text("utf-8"))
    return Draft6Validator({**schema, "oneOf": [{"$ref": f"#/definitions/{resource_type}"}]})


def validate_fhir(resource: dict[str, Any]) -> None:
    """Raises (AssertionError, pydantic.ValidationError) unless `resource` is valid FHIR."""
    assert empty_values(resource) == [], f"FHIR forbids empty values: {empty_values(resource)}"
    error = best_match(_hl7_schema(resource["resourceType"]).iter_errors(resource))
    assert error is None, f"HL7 FHIR R4 schema: {error.message[:300]} at {list(error.path)}"
    model = get_fhir_model_class(resource["resourceType"])
    model.model_validate(resource)
    if resource["resourceType"] == "Bundle":
        assert "total" not in resource or resource.get("type") in ("searchset", "history"), \
            "bdl-1: total only when a search or history"
        urls = [entry["fullUrl"] for entry in resource.get("entry", []) if "fullUrl" in entry]
        assert len(urls) == len(set(urls)), "bdl-7: a fullUrl appears once per bundle"
