"""Phone numbers: parse what people type into E.164, and guess a number's timezone."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from phonenumbers import timezone as phone_timezone


@lru_cache(maxsize=16384)  # pure, and every webhook normalizes the same numbers again
def normalize_phone(text: str, region: str = "US") -> str:
    """'(617) 555-0100' -> '+16175550100'; raises ValueError saying what is wrong.

    Numbers without a country code are read in `region`. Numbers that cannot exist (like the
    fictional +1 555 area code) are refused: use e.g. +1 617 555 01xx in examples and tests.
    """
    raw = (text or "").strip()
    if not raw:
        raise ValueError("phone number is empty")
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{raw!r} is not a phone number") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError(f"{raw!r} is not a phone number: wrong number of digits")
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(
            f"{raw!r} is not a valid phone number (no such area or range); "
            "include the country code, e.g. +1 617 555 0100"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=16384)
def timezone_for_phone(e164: str) -> str | None:
    """The IANA timezone of a number's area, when the numbering plan gives one."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    zones = [zone for zone in phone_timezone.time_zones_for_number(parsed) if zone != "Etc/Unknown"]
    return zones[0] if zones else None
