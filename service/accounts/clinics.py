"""Clinic set-up: create a clinic with its Twilio numbers, validating what staff typed."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from service.phones import normalize_phone
from service.store.models import (
    DEFAULT_START_KEYWORDS,
    AuditLog,
    Clinic,
    ClinicNumber,
)

MAX_NAME_LENGTH = 40  # keeps the opening and advice texts within their SMS segments
_KEYWORD = re.compile(r"^\w+$")
_SHORT_NUMBER = re.compile(r"^[0-9]{2,6}$")


def create_clinic(
    session: Session,
    *,
    name: str,
    numbers: Sequence[str],
    timezone: str = "America/New_York",
    emergency_number: str = "911",
    phone: str | None = None,
    oncall_number: str | None = None,
    twilio_optout_handling: bool = False,
    start_keywords: Iterable[str] | None = None,
    followup_first_day: int = 28,
    followup_final_day: int = 42,
    region: str = "US",
    actor_id: str | None = None,
) -> Clinic:
    """Add a clinic to `session` (flushed, so it has an id); raises ValueError on bad input.

    `phone` (the number HELP replies give) defaults to the clinic's first Twilio number.
    """
    name = " ".join((name or "").split())
    if not name:
        raise ValueError("clinic name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"clinic name is {len(name)} characters; at most {MAX_NAME_LENGTH} fit in the texts"
        )
    if not numbers:
        raise ValueError("a clinic needs at least one Twilio number")
    e164_numbers = list(dict.fromkeys(normalize_phone(number, region) for number in numbers))
    taken = session.scalars(
        sa.select(ClinicNumber).where(ClinicNumber.phone_e164.in_(e164_numbers))
    ).all()
    if taken:
        listed = ", ".join(f"{n.phone_e164} (clinic {n.clinic_id})" for n in taken)
        raise ValueError(f"number already belongs to a clinic: {listed}")
    if not 28 <= followup_first_day <= 35:
        raise ValueError("first follow-up day must be between 28 and 35")
    if not 42 <= followup_final_day <= 49:
        raise ValueError("final follow-up day must be between 42 and 49")

    clinic = Clinic(
        name=name,
        timezone=_timezone(timezone),
        emergency_number=_emergency_number(emergency_number, region),
        phone=normalize_phone(phone, region) if phone else e164_numbers[0],
        oncall_number=normalize_phone(oncall_number, region) if oncall_number else None,
        twilio_optout_handling=twilio_optout_handling,
        start_keywords=_keywords(
            DEFAULT_START_KEYWORDS if start_keywords is None else start_keywords
        ),
        followup_first_day=followup_first_day,
        followup_final_day=followup_final_day,
        numbers=[ClinicNumber(phone_e164=number) for number in e164_numbers],
    )
    session.add(clinic)
    session.flush()
    session.add(
        AuditLog(
            actor_type="system",
            actor_id=actor_id,
            clinic_id=clinic.id,
            action="clinic_created",
            detail={"name": name, "numbers": e164_numbers},
        )
    )
    return clinic


def list_clinics(session: Session) -> list[Clinic]:
    return list(
        session.scalars(sa.select(Clinic).options(selectinload(Clinic.numbers)).order_by(Clinic.id))
    )


def parse_keywords(text: str) -> list[str]:
    """'pain, back,DOLOR' -> ['PAIN', 'BACK', 'DOLOR']."""
    return _keywords(part for part in text.split(","))


def _keywords(words: Iterable[str]) -> list[str]:
    keywords = list(dict.fromkeys(word.strip().upper() for word in words if word.strip()))
    if not keywords:
        raise ValueError("at least one start keyword is needed")
    for keyword in keywords:
        if not _KEYWORD.match(keyword):
            raise ValueError(f"start keyword {keyword!r} must be a single word")
    return keywords


def _timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown timezone {name!r}: use an IANA name like America/New_York"
        ) from exc
    return name


def _emergency_number(number: str, region: str) -> str:
    number = (number or "").strip()
    if _SHORT_NUMBER.match(number):
        return number
    return normalize_phone(number, region)
