"""an index on rules.filter_id; message bodies compressed with lz4

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 03:00:00.000000

``ix_rules_filter_id``: reloading a few users' rules (a Fedora Accounts message
in an ingest batch, a preference change) joined ``rules`` to their filters by a
scan of every rule; with the index it reads only theirs. Deleting a filter
(its rules cascade) no longer scans ``rules`` either.

``messages.body`` (PostgreSQL 14 and later, when the server has lz4): bodies
too large to stay inline are compressed with lz4 rather than pglz, which cost
the database more CPU than anything else it does per ingested message. Only
new values are affected; the bodies already stored stay readable as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _has_lz4() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    # Absent before PostgreSQL 14; ``lz4`` is listed only when the server was built with it.
    values = bind.exec_driver_sql(
        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
    ).scalar()
    return bool(values) and "lz4" in values


def upgrade() -> None:
    op.create_index("ix_rules_filter_id", "rules", ["filter_id"], unique=False)
    if _has_lz4():
        op.execute("ALTER TABLE messages ALTER COLUMN body SET COMPRESSION lz4")


def downgrade() -> None:
    if _has_lz4():
        op.execute("ALTER TABLE messages ALTER COLUMN body SET COMPRESSION default")
    op.drop_index("ix_rules_filter_id", table_name="rules")
