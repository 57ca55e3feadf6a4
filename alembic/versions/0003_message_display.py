"""message display fields for feeds and the live feed

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 18:00:00.000000

Feeds and live catch-ups used to re-parse each listed message's body on every
request. Ingest now stores what they show (``fmn_core.display``); older rows keep
NULL there and show their topic.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("summary", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("url", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("app", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("app")
        batch_op.drop_column("url")
        batch_op.drop_column("summary")
