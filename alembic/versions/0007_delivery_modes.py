"""delivery modes: per-filter instant/digest and urgent, daily digests, quiet hours

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-05 19:00:00.000000

``filters.delivery`` (``instant`` or ``digest``) and ``filters.urgent`` say how a
filter's matches travel; ``preferences`` gains a daily digest time and time zone
and quiet hours; ``notifications.hold_reason`` says why a waiting row waits; ``confirmations.origin``
says which front end set the address (its code's message says how to enter it).

Today's behaviour is kept: a context that collected everything into a digest
(``digest_minutes`` or ``digest_count`` set) has every existing filter marked
``digest``; every other filter is ``instant``; nobody has quiet hours.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("filters") as batch:
        batch.add_column(
            sa.Column("delivery", sa.String(16), nullable=False, server_default="instant")
        )
        batch.add_column(
            sa.Column("urgent", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("preferences") as batch:
        batch.add_column(sa.Column("digest_at", sa.String(5), nullable=True))
        batch.add_column(
            sa.Column("digest_timezone", sa.String(64), nullable=False, server_default="UTC")
        )
        batch.add_column(sa.Column("quiet_from", sa.String(5), nullable=True))
        batch.add_column(sa.Column("quiet_to", sa.String(5), nullable=True))
        batch.add_column(sa.Column("quiet_timezone", sa.String(64), nullable=True))
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("hold_reason", sa.String(32), nullable=True))
    with op.batch_alter_table("confirmations") as batch:
        batch.add_column(sa.Column("origin", sa.String(8), nullable=True))
    filters = sa.table(
        "filters", sa.column("preference_id", sa.Integer()), sa.column("delivery", sa.String())
    )
    preferences = sa.table(
        "preferences",
        sa.column("id", sa.Integer()),
        sa.column("digest_minutes", sa.Integer()),
        sa.column("digest_count", sa.Integer()),
    )
    collecting = sa.select(preferences.c.id).where(
        sa.or_(preferences.c.digest_minutes > 0, preferences.c.digest_count > 0)
    )
    op.get_bind().execute(
        sa.update(filters).where(filters.c.preference_id.in_(collecting)).values(delivery="digest")
    )


def downgrade() -> None:
    with op.batch_alter_table("confirmations") as batch:
        batch.drop_column("origin")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("hold_reason")
    with op.batch_alter_table("preferences") as batch:
        for column in ("quiet_timezone", "quiet_to", "quiet_from", "digest_timezone", "digest_at"):
            batch.drop_column(column)
    with op.batch_alter_table("filters") as batch:
        batch.drop_column("urgent")
        batch.drop_column("delivery")
