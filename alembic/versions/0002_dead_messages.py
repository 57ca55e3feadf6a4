"""dead messages: bus messages put aside after failing again and again

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 18:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dead_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("topic", sa.String(length=512), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_messages")),
    )
    with op.batch_alter_table("dead_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dead_messages_message_id"), ["message_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("dead_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_messages_message_id"))
    op.drop_table("dead_messages")
