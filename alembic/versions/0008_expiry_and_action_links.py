"""time-bound rules and pauses; action-link revocation; defaults applied

Revision ID: 0008
Revises: 0007
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
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch copy: on SQLite a batch recreates ``users``, and
    # dropping the old table would cascade into every user's preferences.
    op.add_column("rules", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("filters", sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "users", sa.Column("link_nonce", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("users", sa.Column("notices", sa.JSON(), nullable=True))
    # Existing accounts are past their first contact: they never get defaults.
    op.add_column(
        "users",
        sa.Column("defaults_applied", sa.Boolean(), nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    for table, column in (
        ("users", "defaults_applied"),
        ("users", "notices"),
        ("users", "link_nonce"),
        ("filters", "paused_until"),
        ("rules", "expires_at"),
    ):
        op.drop_column(table, column)
