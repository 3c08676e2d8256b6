"""Reading what staff typed into the dashboard's forms: values, or messages saying what is wrong."""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

from service import clock
from service.phones import normalize_phone
from service.store.models import MAX_ID

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
    name = " ".join((form.get("name") or "").replace("\x00", "").split()) or None
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
        start = clock.parse_day((args.get("start") or "").strip())
        end = clock.parse_day((args.get("end") or "").strip())
    except ValueError:
        return None, None, "give a start and an end date as YYYY-MM-DD"
    if end < start:
        return None, None, "the end date is before the start date"
    return start, end, None


HISTORY_LEVELS = ("emergency", "urgent", "soon", "info")


@dataclass(frozen=True)
class HistoryFilter:
    level: str | None = None
    start: date | None = None  # clinic-local dates, inclusive
    end: date | None = None
    q: str = ""
    patient_id: int | None = None
    before: tuple[datetime, int] | None = None

    def args(self) -> dict[str, str]:
        """The filter as query arguments (for the next page's link)."""
        values = {"level": self.level or "", "start": self.start.isoformat() if self.start
                  else "", "end": self.end.isoformat() if self.end else "", "q": self.q,
                  "patient": str(self.patient_id) if self.patient_id else ""}
        return {key: value for key, value in values.items() if value}


def parse_history(args: Mapping[str, str]) -> tuple[HistoryFilter, list[str]]:
    """The alert history's filters; each bad one is dropped with a message saying why."""
    errors: list[str] = []
    level = (args.get("level") or "").strip() or None
    if level is not None and level not in HISTORY_LEVELS:
        errors.append("choose a level from the list")
        level = None
    dates: dict[str, date | None] = {}
    for key, words in (("start", "From"), ("end", "To")):
        text = (args.get(key) or "").strip()
        dates[key] = None
        if text:
            try:
                dates[key] = clock.parse_day(text)
            except ValueError:
                errors.append(f"{words}: use the form YYYY-MM-DD")
    if dates["start"] and dates["end"] and dates["end"] < dates["start"]:
        errors.append("the To date is before the From date")
        dates["end"] = None
    patient_id = None
    if (args.get("patient") or "").strip():
        try:
            patient_id = int(args["patient"])
            if not 0 < patient_id <= MAX_ID:
                raise ValueError("no such id")
        except ValueError:
            patient_id = None
            errors.append("the patient id is not a number")
    before = None
    if args.get("before_at") and args.get("before_id"):
        try:
            before = (clock.parse_instant(args["before_at"]), int(args["before_id"]))
            if not 0 < before[1] <= MAX_ID:
                raise ValueError("no such id")
        except ValueError:
            before = None
            errors.append("that page link is not one this dashboard made")
    return HistoryFilter(level=level, start=dates["start"], end=dates["end"],
                         q=" ".join((args.get("q") or "").replace("\x00", "").split())[:100],
                         patient_id=patient_id, before=before), errors
