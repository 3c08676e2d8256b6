"""Quiet hours (CLINICAL.md §7): scheduled messages go out between 08:00 and 21:00 local time."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.phones import timezone_for_phone

OPEN, CLOSE = time(8, 0), time(21, 0)
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


def next_allowed(now: datetime, tz: str) -> datetime:
    """`now` if it is within quiet-hours-allowed time in `tz`, else the next 08:00 local."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    if OPEN <= local.time() < CLOSE:
        return now
    day = local.date() if local.time() < OPEN else local.date() + timedelta(days=1)
    return datetime.combine(day, OPEN, tzinfo=zone).astimezone(now.tzinfo)


def is_allowed(now: datetime, tz: str) -> bool:
    return next_allowed(now, tz) == now
