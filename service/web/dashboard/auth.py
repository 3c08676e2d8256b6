"""Who is signed in: flask-login wiring, the signed-in staff member, and role checks."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, jsonify, redirect, request, url_for
from flask_login import LoginManager, current_user

from service import clock
from service.accounts import staff as staff_accounts
from service.store import get_db
from service.store.models import Clinic, Staff


@dataclass(frozen=True)
class StaffUser:
    """The signed-in staff member, detached from any database session."""

    key: str  # the token of its server-side session (staff.open_session)
    id: int
    email: str
    role: str
    clinic_id: int
    clinic_name: str
    clinic_timezone: str

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return self.key

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor_id(self) -> str:
        return str(self.id)

    @classmethod
    def of(cls, staff: Staff, clinic: Clinic, key: str) -> StaffUser:
        return cls(key=key, id=staff.id, email=staff.email,
                   role=staff.role, clinic_id=clinic.id, clinic_name=clinic.name,
                   clinic_timezone=clinic.timezone)


# Requests the page makes by itself (the queue's poll): they do not keep a session alive, so a
# queue left open on an unattended screen still signs out after STAFF_IDLE_MINUTES.
BACKGROUND_ENDPOINTS = frozenset({"dashboard.queue_json"})


def init_login(app: Flask) -> LoginManager:
    manager = LoginManager()
    manager.login_view = "dashboard.login"
    manager.login_message = "Please sign in."
    manager.init_app(app)

    @manager.user_loader
    def load_user(key: str) -> StaffUser | None:
        # Every request asks the server: a copied cookie of an ended session opens nothing.
        idle = timedelta(minutes=current_app.config.get("STAFF_IDLE_MINUTES") or 30)
        with get_db().transaction() as session:
            staff = staff_accounts.staff_for_session(
                session, key, clock.now(), idle=idle,
                active=request.endpoint not in BACKGROUND_ENDPOINTS)
            if staff is None:
                return None
            return StaffUser.of(staff, session.get(Clinic, staff.clinic_id), key)

    @manager.unauthorized_handler
    def unauthorized():
        if request.path.endswith(".json"):
            return jsonify({"error": "sign in first"}), 401
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))

    return manager


def admin_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_authenticated:
            abort(401)
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def safe_next(target: str | None) -> str:
    """Only a path inside the dashboard: never another site (open redirect), and nothing a
    Location header cannot carry (a newline in it was a 500)."""
    if target and target.isprintable() and target.isascii() and " " not in target \
            and "\\" not in target and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and (
                parts.path == "/dashboard" or parts.path.startswith("/dashboard/")) \
                and "//" not in parts.path:
            return target
    return url_for("dashboard.queue")
