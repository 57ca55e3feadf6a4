"""the start-up's two whole-table reads come in order from an index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 09:20:00.000000

The consumer's start reads every rule in filter and position order (grouped into
rule lists on PostgreSQL) and every package owner by namespace and owner, while it
compiles what it has read. Both were sorted by the database first: the owners'
sort kept the start waiting before its first row, and both sorts took CPU that the
start's own work needed on the same two cores.

- ``ix_rules_filter_order`` (``filter_id``, ``position``, ``id``) replaces
  ``ix_rules_filter_id`` (``filter_id``): the rules' order with no sort, and the
  same look-ups by filter as before (its first column).
- ``ix_package_owners_namespace_owner`` (``namespace``, ``owner``) replaces
  ``ix_package_owners_owner`` (``owner``): the owners' order with no sort, and an
  owner's packages in a namespace (``OwnershipQueries``) found by both columns.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_rules_filter_order", "rules", ["filter_id", "position", "id"])
    op.drop_index("ix_rules_filter_id", table_name="rules")
    op.create_index("ix_package_owners_namespace_owner", "package_owners", ["namespace", "owner"])
    op.drop_index("ix_package_owners_owner", table_name="package_owners")


def downgrade() -> None:
    op.create_index("ix_package_owners_owner", "package_owners", ["owner"])
    op.drop_index("ix_package_owners_namespace_owner", table_name="package_owners")
    op.create_index("ix_rules_filter_id", "rules", ["filter_id"])
    op.drop_index("ix_rules_filter_order", table_name="rules")
