"""The entry points' clock: real UTC time, which a developer may move to see a follow-up.

Use cases never read a clock (they take `now`); entry points (webhooks, tasks) call `now()`.
Outside production two environment variables move it, read on every call:

- `TRIAGE_FAKE_NOW=2026-04-01T12:00:00+00:00` freezes the clock at that instant;
- `TRIAGE_CLOCK_OFFSET_DAYS=29` runs it that many days (a decimal number) ahead.

With ENV=production both are ignored: a production clock cannot be moved by the environment.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime, timedelta

log = logging.getLogger(__name__)

FAKE_NOW = "TRIAGE_FAKE_NOW"
OFFSET_DAYS = "TRIAGE_CLOCK_OFFSET_DAYS"


def now() -> datetime:
    """The current time (timezone-aware UTC), as moved by the environment outside production."""
    real = datetime.now(UTC)
    if os.environ.get("ENV", "").strip() == "production":
        return real
    fake = os.environ.get(FAKE_NOW, "").strip()
    if fake:
        when = datetime.fromisoformat(fake)
        if when.tzinfo is None:
            raise ValueError(f"{FAKE_NOW} must carry a UTC offset, e.g. {real.isoformat()}")
        return when.astimezone(UTC)
    offset = os.environ.get(OFFSET_DAYS, "").strip()
    if offset:
        return real + timedelta(days=float(offset))
    return real


# What a person may ask for (a report's dates, a page's cursor): beyond these a day's bounds in
# some time zone, or its instant in UTC, fall outside what Python's datetime can hold.
EARLIEST_DAY, LATEST_DAY = date(1900, 1, 1), date(9998, 12, 31)


def parse_day(text: str) -> date:
    """A YYYY-MM-DD date from outside (a query, a form); ValueError if it is none or beyond
    EARLIEST_DAY..LATEST_DAY."""
    day = date.fromisoformat(text)
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        raise ValueError(f"dates from {EARLIEST_DAY} to {LATEST_DAY}")
    return day


def parse_instant(text: str) -> datetime:
    """An ISO time with its UTC offset from outside (a cursor); ValueError if it has no offset
    or lies beyond EARLIEST_DAY..LATEST_DAY."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("a time needs its UTC offset")
    try:
        day = when.astimezone(UTC).date()
    except OverflowError:
        raise ValueError(f"times from {EARLIEST_DAY} to {LATEST_DAY}") from None
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        raise ValueError(f"times from {EARLIEST_DAY} to {LATEST_DAY}")
    return when


def is_moved() -> bool:
    """True when the environment moves the clock (shown in logs at start-up)."""
    return os.environ.get("ENV", "").strip() != "production" and bool(
        os.environ.get(FAKE_NOW, "").strip() or os.environ.get(OFFSET_DAYS, "").strip())
