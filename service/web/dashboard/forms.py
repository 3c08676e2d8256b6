"""Reading what staff typed into the dashboard's forms: values, or messages saying what is wrong."""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from service.phones import normalize_phone

LANGUAGES = (("en", "English"), ("es", "Spanish"))
MAX_NAME = 100


@lru_cache(maxsize=1)
def timezones() -> list[str]:
    return sorted(zone for zone in zoneinfo.available_timezones()
                  if "/" in zone and not zone.startswith(("Etc/", "SystemV/", "posix/", "right/")))


@dataclass(frozen=True)
class EnrollInput:
    phone: str
    name: str | None
    date_of_birth: date | None
    language: str
    timezone: str | None
    calls_allowed: bool


def parse_enroll(form: Mapping[str, str], *, today: date,
                 region: str = "US") -> tuple[EnrollInput | None, dict[str, str]]:
    errors: dict[str, str] = {}
    phone = ""
    try:
        phone = normalize_phone(form.get("phone", ""), region)
    except ValueError as exc:
        errors["phone"] = str(exc)
    name = " ".join((form.get("name") or "").split()) or None
    if name and len(name) > MAX_NAME:
        errors["name"] = f"at most {MAX_NAME} characters"
    born = None
    if (form.get("date_of_birth") or "").strip():
        try:
            born = date.fromisoformat(form["date_of_birth"].strip())
        except ValueError:
            errors["date_of_birth"] = "use the form YYYY-MM-DD"
        else:
            if born > today or born.year < today.year - 120:
                errors["date_of_birth"] = "not a possible date of birth"
    language = form.get("language") or "en"
    if language not in dict(LANGUAGES):
        errors["language"] = "choose English or Spanish"
    tz = (form.get("timezone") or "").strip() or None
    if tz is not None and tz not in timezones():
        errors["timezone"] = "choose a timezone from the list (or leave it empty)"
    if form.get("consent") != "yes":
        errors["consent"] = "the patient must agree to receive texts before enrolling"
    if errors:
        return None, errors
    return EnrollInput(phone=phone, name=name, date_of_birth=born, language=language,
                       timezone=tz, calls_allowed=form.get("calls_allowed") == "yes"), {}


def parse_date_range(args: Mapping[str, str]) -> tuple[date | None, date | None, str | None]:
    """(start, end, error) from ?start=YYYY-MM-DD&end=YYYY-MM-DD."""
    try:
        start = date.fromisoformat((args.get("start") or "").strip())
        end = date.fromisoformat((args.get("end") or "").strip())
    except ValueError:
        return None, None, "give a start and an end date as YYYY-MM-DD"
    if end < start:
        return None, None, "the end date is before the start date"
    return start, end, None
