"""the outbox keeps when a row's wait for an offline IRC nick began

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 22:00:00.000000

``notifications.offline_since``: when the IRC bot first found the row's nick
offline in its current wait. ``bot.offline_hold_minutes`` counted from the row's
``created_at``, so a row held for a digest, quiet hours or a mute longer than that
went ``dead`` at its first offline look-up; the allowance now counts from here.
Rows already waiting for an offline nick have none: their allowance starts at
their next look-up.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch copy: nullable with no default, it is a change
    # of the catalogue only on PostgreSQL, however large the outbox is.
    op.add_column(
        "notifications", sa.Column("offline_since", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("notifications", "offline_since")
