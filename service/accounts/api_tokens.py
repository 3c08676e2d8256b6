"""Per-clinic bearer tokens for the JSON API: made once, shown once, stored as a SHA-256 hash.

A token carries 256 random bits, so a plain (unsalted) SHA-256 is enough to make a leaked
table useless, and it lets a request be matched with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.records import audit
from service.store.models import ApiToken, Clinic

PREFIX = "tri_"
MAX_TOKEN_LENGTH = 200


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, *, clinic_id: int, name: str, now: datetime,
                 read_only: bool = False) -> tuple[ApiToken, str]:
    """A new token for the clinic: the row (flushed) and the only copy of the token itself."""
    name = " ".join((name or "").split())
    if not name:
        raise ValueError("a token needs a name (say which system uses it)")
    if len(name) > 100:
        raise ValueError("the token name is longer than 100 characters")
    if session.get(Clinic, clinic_id) is None:
        raise ValueError(f"no clinic {clinic_id}")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(clinic_id=clinic_id, name=name, token_hash=hash_token(token),
                   read_only=read_only, created_at=now)
    session.add(row)
    session.flush()
    audit.record(session, clinic_id=clinic_id, action="api_token_created", actor_type="system",
                 detail={"token_id": row.id, "name": name, "read_only": read_only}, now=now)
    return row, token


def authenticate(session: Session, token: str) -> ApiToken | None:
    """The live token row for a presented token, or None (unknown or revoked)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    row = session.execute(
        sa.select(ApiToken).where(ApiToken.token_hash == hash_token(token))
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return row


def revoke_token(session: Session, token_id: int, now: datetime) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise ValueError(f"no API token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now
        audit.record(session, clinic_id=row.clinic_id, action="api_token_revoked",
                     actor_type="system", detail={"token_id": row.id}, now=now)
    return row


def list_tokens(session: Session, clinic_id: int | None = None) -> list[ApiToken]:
    query = sa.select(ApiToken).order_by(ApiToken.id)
    if clinic_id is not None:
        query = query.where(ApiToken.clinic_id == clinic_id)
    return list(session.execute(query).scalars())
