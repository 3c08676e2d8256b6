"""Quiet hours (CLINICAL.md §7) as pure date arithmetic: scheduled messages and calls go out only
between 08:00 and 21:00 in the patient's local time."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

OPEN, CLOSE = time(8, 0), time(21, 0)


def next_allowed(now: datetime, tz: str) -> datetime:
    """`now` if it falls within 08:00-21:00 local time in `tz`, else the next 08:00 local."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    if OPEN <= local.time() < CLOSE:
        return now
    day = local.date() if local.time() < OPEN else local.date() + timedelta(days=1)
    return datetime.combine(day, OPEN, tzinfo=zone).astimezone(now.tzinfo)


def is_allowed(now: datetime, tz: str) -> bool:
    return next_allowed(now, tz) == now


def days_later(now: datetime, days: int, tz: str) -> datetime:
    """The same local time of day `days` calendar days later in `tz` (so a day-28 check keeps
    its hour across a change of daylight-saving time), as an instant in `now`'s timezone."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone).replace(tzinfo=None) + timedelta(days=days)
    return local.replace(tzinfo=zone).astimezone(now.tzinfo)
