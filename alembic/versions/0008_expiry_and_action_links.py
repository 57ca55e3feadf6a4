"""time-bound rules and pauses; action-link revocation; defaults applied

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-05 19:00:00.000000

``rules.expires_at``: an exclusion added for a while (the matcher drops the rule
from that time on; housekeeping deletes it). ``filters.paused_until``: a filter
the matcher skips until then. ``users.link_nonce``: signed action links carry it,
and bumping it refuses every link already sent. ``users.notices``: what fmn has to
tell the user once (expired rules removed), shown by the bot and the TUI.
``users.defaults_applied``: new users get the operator's default templates once;
existing users count as done (they never get them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rules") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("filters") as batch:
        batch.add_column(sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("link_nonce", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("notices", sa.JSON(), nullable=True))
        # Existing accounts are past their first contact: they never get defaults.
        batch.add_column(
            sa.Column("defaults_applied", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("defaults_applied")
        batch.drop_column("notices")
        batch.drop_column("link_nonce")
    with op.batch_alter_table("filters") as batch:
        batch.drop_column("paused_until")
    with op.batch_alter_table("rules") as batch:
        batch.drop_column("expires_at")
