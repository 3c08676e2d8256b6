"""Quiet hours (CLINICAL.md §7): scheduled messages go out between 08:00 and 21:00 local time."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flows.schedule import CLOSE, OPEN, is_allowed, next_allowed
from service.phones import timezone_for_phone

__all__ = ["CLOSE", "OPEN", "is_allowed", "next_allowed", "patient_timezone"]

FALLBACK_TZ = "America/New_York"


def _valid(tz: str | None) -> str | None:
    if not tz:
        return None
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return tz


def patient_timezone(patient_tz: str | None, clinic_tz: str | None, phone_e164: str) -> str:
    """Enrollment's timezone, else the clinic's, else one guessed from the phone number."""
    return (_valid(patient_tz) or _valid(clinic_tz) or _valid(timezone_for_phone(phone_e164))
            or FALLBACK_TZ)
