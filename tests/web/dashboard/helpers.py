"""Test helpers for the staff dashboard: staff accounts and a signed-in browser-like client
that carries the CSRF token as the pages do."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from service.accounts.staff import create_staff
from service.store import Database

PASSWORD = "correct-horse-battery"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_staff(db: Database, clinic_id: int, email: str, *, role: str = "clinician",
               password: str = PASSWORD) -> int:
    with db.transaction() as session:
        return create_staff(session, clinic_id=clinic_id, email=email, password=password,
                            role=role, now=datetime.now(UTC)).id


def csrf_token(html: str) -> str:
    match = _TOKEN.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


class StaffClient:
    """A Flask test client used as staff do: sign in, then post forms with their token."""

    def __init__(self, client) -> None:
        self.client = client
        self.token: str | None = None

    def login(self, email: str, password: str = PASSWORD, *, next_: str | None = None,
              environ_base: dict | None = None):
        page = self.client.get("/dashboard/login")
        path = "/dashboard/login" + (f"?next={next_}" if next_ else "")
        response = self.client.post(path, data={
            "csrf_token": csrf_token(page.get_data(as_text=True)), "email": email,
            "password": password}, environ_base=environ_base or {})
        if response.status_code == 302:
            self.token = csrf_token(self.client.get("/dashboard/exports").get_data(as_text=True))
        return response

    def get(self, path: str, **kw):
        return self.client.get(path, **kw)

    def post(self, path: str, data: dict | None = None, *, with_token: bool = True, **kw):
        form = dict(data or {})
        if with_token:
            form["csrf_token"] = self.token
        return self.client.post(path, data=form, **kw)
