"""One recipient's texts by queue order: every send checks that no earlier text to the same
number is still on its way, and a batch of started follow-ups looks up its patients' due
texts; both read the pending rows of the whole table without it (issue 17: 100,000 due).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 06:50:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_outbox_to_number_id", "outbox", ["to_number", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_outbox_to_number_id", table_name="outbox")
