"""Quiet hours when a text is sent, not only when it is queued: a scheduled text queued at
20:59 that waits behind a backlog, a retry or a stopped worker must not go out at 23:00
(CLINICAL.md §7). Each outbox row says whose quiet hours it keeps.

Texts still pending at the upgrade were queued under the old rule, which did not record it:
the scheduled kinds (check-in questions and the consent request) to a patient keep the
patient's time zone, else the clinic's, as the code would have given them. The safest
reading: a pending text is held for the morning rather than sent at night.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 18:55:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("quiet_tz", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE outbox SET quiet_tz = (SELECT COALESCE(patients.timezone, clinics.timezone)"
        " FROM patients JOIN clinics ON clinics.id = patients.clinic_id"
        " WHERE patients.id = outbox.patient_id)"
        " WHERE status IN ('pending', 'sending', 'unknown') AND patient_id IS NOT NULL"
        " AND kind IN ('checkin', 'consent')")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("quiet_tz")
