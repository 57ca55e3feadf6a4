"""confirmation-code sending log; feed tokens unique across users

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 18:10:00.000000

``code_sends`` records every confirmation code made (user, hashed address, time),
so the sending limits survive removing and re-adding an address, restarts, and
several daemons. ``destinations.feed_token`` holds the secret token of ``rss`` and
``live`` destinations under a unique constraint. Existing feed destinations are
backfilled; where two of them share a token (an older import could do that), the
oldest keeps it and the others get a new one: a shared token let one user read
another's feed, so those users have to fetch their new feed address.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FEED_CONTEXTS = ("rss", "live")


def _backfill_feed_tokens() -> None:
    connection = op.get_bind()
    destinations = sa.table(
        "destinations",
        sa.column("id", sa.Integer()),
        sa.column("preference_id", sa.Integer()),
        sa.column("address", sa.String()),
        sa.column("feed_token", sa.String()),
    )
    preferences = sa.table(
        "preferences", sa.column("id", sa.Integer()), sa.column("context", sa.String())
    )
    rows = connection.execute(
        sa.select(destinations.c.id, destinations.c.address)
        .join(preferences, preferences.c.id == destinations.c.preference_id)
        .where(preferences.c.context.in_(_FEED_CONTEXTS))
        .order_by(destinations.c.id)
    ).all()
    taken: set[str] = set()
    for row_id, address in rows:
        token = address
        if token in taken or len(token) > 128:
            token = secrets.token_urlsafe(24)
        taken.add(token)
        connection.execute(
            sa.update(destinations)
            .where(destinations.c.id == row_id)
            .values(address=token, feed_token=token)
        )


def upgrade() -> None:
    op.create_table(
        "code_sends",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("address_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_code_sends_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_code_sends")),
    )
    with op.batch_alter_table("code_sends", schema=None) as batch_op:
        batch_op.create_index("ix_code_sends_address_key", ["address_key", "created_at"])
        batch_op.create_index("ix_code_sends_user", ["user_id", "created_at"])

    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feed_token", sa.String(length=128), nullable=True))
    _backfill_feed_tokens()
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.create_unique_constraint(op.f("uq_destinations_feed_token"), ["feed_token"])


def downgrade() -> None:
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("uq_destinations_feed_token"), type_="unique")
        batch_op.drop_column("feed_token")
    with op.batch_alter_table("code_sends", schema=None) as batch_op:
        batch_op.drop_index("ix_code_sends_user")
        batch_op.drop_index("ix_code_sends_address_key")
    op.drop_table("code_sends")
