"""Staff accounts of the dashboard: argon2 password hashes, roles, login throttling, and the
server-side sign-in sessions (staff_sessions) that logout and password changes end.

Two limits slow down password guessing: an account is locked for a while after a run of
failed logins (`staff.failed_logins`, `staff.locked_until`), and an address that keeps failing
is refused for a while whatever account it tries (`login_attempts`). Both live in the database
so that every web process agrees.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.orm import Session

from service.records import audit
from service.store.models import STAFF_ROLES, Clinic, LoginAttempt, Staff, StaffSession

log = logging.getLogger(__name__)

MAX_FAILED_LOGINS = 5  # in a row, for one account
LOCKOUT = timedelta(minutes=15)
ADDRESS_WINDOW = timedelta(minutes=15)
ADDRESS_MAX_FAILURES = 20  # failed logins from one address within ADDRESS_WINDOW
ATTEMPTS_KEPT = timedelta(days=1)
MIN_PASSWORD_LENGTH = 10
# Sign-in sessions: also over after this long however busy (a shift), and last_seen_at is
# written at most this often (not on every request).
SESSION_MAX_AGE = timedelta(hours=12)
SESSION_TOUCH_EVERY = timedelta(seconds=30)
SESSIONS_KEPT = timedelta(days=7)

_hasher = PasswordHasher()
# Verified against when the email is unknown, so that both cases take the same time.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class StaffError(ValueError):
    """Staff details we cannot accept (the message says why)."""


@dataclass(frozen=True)
class LoginResult:
    """`staff` is set only when `outcome` is "ok"."""

    outcome: str  # ok | bad_credentials | locked | address_limited
    staff: Staff | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def normalize_email(email: str) -> str:
    return (email or "").strip().lower()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password_rules(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise StaffError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")


def create_staff(session: Session, *, clinic_id: int, email: str, password: str, role: str,
                 now: datetime, actor_id: str | None = None) -> Staff:
    """Adds a staff account (flushed); raises StaffError on bad input or a taken email."""
    email = normalize_email(email)
    if "@" not in email or len(email) > 255 or " " in email:
        raise StaffError(f"{email!r} is not an email address")
    if role not in STAFF_ROLES:
        raise StaffError(f"role must be one of {', '.join(STAFF_ROLES)}")
    check_password_rules(password)
    if session.get(Clinic, clinic_id) is None:
        raise StaffError(f"no clinic with id {clinic_id}")
    if staff_by_email(session, email) is not None:
        raise StaffError(f"{email} already has an account")
    staff = Staff(clinic_id=clinic_id, email=email, password_hash=hash_password(password),
                  role=role, failed_logins=0, created_at=now)
    session.add(staff)
    session.flush()
    audit.record(session, clinic_id=clinic_id, action="staff_created", actor_type="system",
                 actor_id=actor_id, detail={"staff_id": staff.id, "role": role}, now=now)
    return staff


def set_password(session: Session, staff: Staff, password: str, now: datetime) -> None:
    """A new password; also lifts a lock and ends every session of the account."""
    check_password_rules(password)
    staff.password_hash = hash_password(password)
    staff.failed_logins, staff.locked_until = 0, None
    end_all_sessions(session, staff.id, now)
    audit.record(session, clinic_id=staff.clinic_id, action="staff_password_set",
                 actor_type="system", detail={"staff_id": staff.id}, now=now)


def password_matches(staff: Staff, password: str) -> bool:
    return _verify(staff.password_hash, password)


def staff_by_email(session: Session, email: str) -> Staff | None:
    return session.execute(
        sa.select(Staff).where(Staff.email == normalize_email(email))
    ).scalar_one_or_none()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def open_session(session: Session, staff: Staff, now: datetime) -> str:
    """A new sign-in session; returns its token (only its hash is stored), which the
    browser's session cookie carries. Old ended or expired sessions of the account go."""
    session.execute(sa.delete(StaffSession).where(
        StaffSession.staff_id == staff.id, sa.or_(
            StaffSession.ended_at < now - SESSIONS_KEPT,
            StaffSession.last_seen_at < now - SESSIONS_KEPT)))
    token = secrets.token_urlsafe(32)
    session.add(StaffSession(staff_id=staff.id, token_hash=_token_hash(token), created_at=now,
                             last_seen_at=now))
    return token


def staff_for_session(session: Session, token: str, now: datetime, *, idle: timedelta,
                      active: bool = True) -> Staff | None:
    """The staff member of a live session, or None: unknown token, ended (logout, password
    change, sign out everywhere), idle longer than `idle`, or older than SESSION_MAX_AGE (an
    expired one is ended here). `active` False (a background poll) does not count as use."""
    if not token:
        return None
    row = session.execute(sa.select(StaffSession).where(
        StaffSession.token_hash == _token_hash(token), StaffSession.ended_at.is_(None))
    ).scalar_one_or_none()
    if row is None:
        return None
    if row.last_seen_at <= now - idle or row.created_at <= now - SESSION_MAX_AGE:
        row.ended_at = now
        return None
    if active and now - row.last_seen_at >= SESSION_TOUCH_EVERY:
        row.last_seen_at = now
    return session.get(Staff, row.staff_id)


def end_session(session: Session, token: str, now: datetime) -> None:
    """Logout: this session is over, on every copy of its cookie."""
    session.execute(sa.update(StaffSession).where(
        StaffSession.token_hash == _token_hash(token or ""), StaffSession.ended_at.is_(None)
    ).values(ended_at=now))


def end_all_sessions(session: Session, staff_id: int, now: datetime, *,
                     actor_id: str | None = None) -> int:
    """Every open session of the account ends ("sign out everywhere"); how many were open."""
    ended = session.execute(sa.update(StaffSession).where(
        StaffSession.staff_id == staff_id, StaffSession.ended_at.is_(None)
    ).values(ended_at=now)).rowcount
    staff = session.get(Staff, staff_id)
    if staff is not None and actor_id is not None:
        audit.record(session, clinic_id=staff.clinic_id, action="staff_signed_out_everywhere",
                     actor_type="staff" if actor_id.isdigit() else "system", actor_id=actor_id,
                     detail={"staff_id": staff_id, "sessions": ended}, now=now)
    return ended


def authenticate(session: Session, *, email: str, password: str, address: str,
                 now: datetime) -> LoginResult:
    """Checks a login and updates the counters, in the caller's transaction."""
    # No account has an email with a NUL or over 255 characters (and PostgreSQL cannot even
    # compare one): such an email is an unknown one, not an error.
    email = normalize_email(email).replace("\x00", "\ufffd")
    address = (address or "unknown").replace("\x00", "")[:64]
    session.execute(sa.delete(LoginAttempt).where(LoginAttempt.at < now - ATTEMPTS_KEPT))
    if _address_failures(session, address, now) >= ADDRESS_MAX_FAILURES:
        _attempt(session, address, email, now, succeeded=False)
        log.warning("login refused: too many failures from one address")
        return LoginResult("address_limited")
    staff = None if len(email) > 255 or "\ufffd" in email else session.execute(
        sa.select(Staff).where(Staff.email == email).with_for_update()
    ).scalar_one_or_none()
    if staff is None:
        _verify(_DUMMY_HASH, password)
        _attempt(session, address, email, now, succeeded=False)
        return LoginResult("bad_credentials")
    if staff.locked_until is not None and staff.locked_until > now:
        _verify(_DUMMY_HASH, password)  # as long as for an unknown email
        _attempt(session, address, email, now, succeeded=False)
        return LoginResult("locked")
    if not _verify(staff.password_hash, password):
        staff.failed_logins += 1
        _attempt(session, address, email, now, succeeded=False)
        if staff.failed_logins >= MAX_FAILED_LOGINS:
            staff.failed_logins, staff.locked_until = 0, now + LOCKOUT
            audit.record(session, clinic_id=staff.clinic_id, action="staff_locked",
                         actor_type="system", detail={"staff_id": staff.id}, now=now)
            log.warning("staff %s locked after %d failed logins", staff.id, MAX_FAILED_LOGINS)
            return LoginResult("locked")
        return LoginResult("bad_credentials")
    staff.failed_logins, staff.locked_until = 0, None
    if _hasher.check_needs_rehash(staff.password_hash):
        staff.password_hash = hash_password(password)
    _attempt(session, address, email, now, succeeded=True)
    audit.record(session, clinic_id=staff.clinic_id, action="staff_login", actor_type="staff",
                 actor_id=staff.id, now=now)
    return LoginResult("ok", staff)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _address_failures(session: Session, address: str, now: datetime) -> int:
    return session.execute(
        sa.select(sa.func.count()).select_from(LoginAttempt).where(
            LoginAttempt.ip == address, LoginAttempt.succeeded.is_(False),
            LoginAttempt.at > now - ADDRESS_WINDOW)
    ).scalar_one()


def _attempt(session: Session, address: str, email: str, now: datetime, *,
             succeeded: bool) -> None:
    session.add(LoginAttempt(at=now, ip=address, email=email[:255] or None, succeeded=succeeded))
