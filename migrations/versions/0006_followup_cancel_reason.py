"""Why a follow-up was cancelled, so that START after an opt-out restores exactly the ones the
opt-out cancelled (CLINICAL.md §7, "Opting back in").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 02:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("followups") as batch:
        batch.add_column(sa.Column("cancelled_reason", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("followups") as batch:
        batch.drop_column("cancelled_reason")
