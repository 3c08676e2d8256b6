"""FHIR output checked by an independent validator: the `fhir.resources` R4B models (pydantic,
generated from HL7's StructureDefinitions), plus FHIR's JSON rule that no array, object or
string is ever empty (http://hl7.org/fhir/R4/json.html), which those models let through."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class


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


def validate_fhir(resource: dict[str, Any]) -> None:
    """Raises (pydantic.ValidationError or AssertionError) unless `resource` is valid FHIR."""
    assert empty_values(resource) == [], f"FHIR forbids empty values: {empty_values(resource)}"
    model = get_fhir_model_class(resource["resourceType"])
    model.model_validate(resource)
