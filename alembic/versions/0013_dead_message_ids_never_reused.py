"""dead message ids are never reused

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 10:00:00.000000

``fmn-daemon messages requeue ID`` takes the id an earlier listing showed. On
SQLite, without ``AUTOINCREMENT``, requeuing the newest dead message freed its id
for the next one, so repeating the command ran a different message through ingest.
The table is rebuilt with ``AUTOINCREMENT`` (SQLite cannot add it in place), its
rows copied with their ids; from then on an id is never handed out twice. An id
freed before this upgrade is not known any more and may still be given once.
PostgreSQL's sequence never gave an id twice: nothing changes there.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(*, autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # recreate="always": the only change is a table option, which batch mode would
    # otherwise do as no ALTER at all. The copy keeps every row and its id.
    with op.batch_alter_table(
        "dead_messages",
        recreate="always",
        table_kwargs={"sqlite_autoincrement": autoincrement},
    ):
        pass


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
