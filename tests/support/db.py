"""Reading the database back in tests: rows per table (what "no second effect" is measured
with), detached rows to assert on, and the one row there must be."""

from __future__ import annotations

import sqlalchemy as sa

from service.store import Database
from service.store.models import (
    Alert,
    AuditLog,
    CheckIn,
    Episode,
    FollowUp,
    Message,
    Outbox,
    Patient,
    WebhookReceipt,
)

COUNTED = {
    "patients": Patient, "episodes": Episode, "checkins": CheckIn, "messages": Message,
    "outbox": Outbox, "alerts": Alert, "followups": FollowUp, "receipts": WebhookReceipt,
    "audit": AuditLog,
}


def counts(db: Database) -> dict[str, int]:
    """Rows per table: what "no second effect" is measured with."""
    with db.transaction() as session:
        return {name: session.scalar(sa.select(sa.func.count()).select_from(model))
                for name, model in COUNTED.items()}


def rows(db: Database, model, *where, order_by=None) -> list:
    """Detached rows of `model` matching `where`, in id order."""
    with db.transaction() as session:
        query = sa.select(model).where(*where).order_by(order_by if order_by is not None
                                                        else model.__mapper__.primary_key[0])
        return list(session.scalars(query))


def one(db: Database, model, *where):
    """The one row of `model` matching `where`; fails if there are none or several."""
    found = rows(db, model, *where)
    assert len(found) == 1, found
    return found[0]
