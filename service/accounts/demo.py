"""A demo clinic and a demo staff login for a first try on a laptop (never in production)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.accounts import staff as staff_accounts
from service.accounts.clinics import create_clinic
from service.store.models import Clinic, ClinicNumber

DEMO_CLINIC_NAME = "Demo Clinic"
DEMO_NUMBER = "+16175550100"
DEMO_TIMEZONE = "America/New_York"
DEMO_EMAIL = "demo@example.org"
# Development only: printed by `triage demo seed`, refused when ENV=production.
DEMO_PASSWORD = "demo-backpain-2026"


@dataclass(frozen=True)
class DemoLogin:
    clinic_id: int
    clinic_created: bool
    staff_created: bool
    email: str
    password: str
    number: str


def seed_demo(session: Session, *, now: datetime, production: bool) -> DemoLogin:
    """Creates the demo clinic and its admin login, or finds them; the password is reset to
    the demo one so that the printed login always works. Safe to run any number of times."""
    if production:
        raise RuntimeError("the demo clinic and login are for development only (ENV=production)")
    clinic = session.execute(
        sa.select(Clinic).join(ClinicNumber).where(ClinicNumber.phone_e164 == DEMO_NUMBER)
    ).scalar_one_or_none()
    clinic_created = clinic is None
    if clinic is None:
        clinic = create_clinic(session, name=DEMO_CLINIC_NAME, numbers=[DEMO_NUMBER],
                               timezone=DEMO_TIMEZONE, actor_id="demo-seed")
    staff = staff_accounts.staff_by_email(session, DEMO_EMAIL)
    staff_created = staff is None
    if staff is None:
        staff_accounts.create_staff(session, clinic_id=clinic.id, email=DEMO_EMAIL,
                                    password=DEMO_PASSWORD, role="admin", now=now,
                                    actor_id="demo-seed")
    elif staff.clinic_id != clinic.id:
        raise RuntimeError(f"{DEMO_EMAIL} belongs to another clinic ({staff.clinic_id})")
    elif not staff_accounts.password_matches(staff, DEMO_PASSWORD):
        staff_accounts.set_password(session, staff, DEMO_PASSWORD, now)
    else:
        staff.failed_logins, staff.locked_until = 0, None
    return DemoLogin(clinic_id=clinic.id, clinic_created=clinic_created,
                     staff_created=staff_created, email=DEMO_EMAIL, password=DEMO_PASSWORD,
                     number=DEMO_NUMBER)
