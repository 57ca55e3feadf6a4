"""fmn's database model (SQLAlchemy 2.x typed ORM).

Only Alembic changes the schema (``alembic/``); a test checks that the models and
the migrations agree. No ``__repr__`` here shows an address or a secret.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "ChangeEvent",
    "CodeSend",
    "Confirmation",
    "DeadMessage",
    "Destination",
    "Filter",
    "Notification",
    "NotificationState",
    "PackageOwner",
    "Preference",
    "Rule",
    "StoredMessage",
    "Template",
    "User",
    "utc_param",
    "utc_read",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite has no timezone type; without this, values would come back naive there
    and aware on PostgreSQL, and comparisons would break on one of them.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        return utc_param(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        return utc_read(value)


def utc_param(value: dt.datetime | None) -> dt.datetime | None:
    """A timestamp as a ``UTCDateTime`` column stores it (also for driver SQL)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(dt.UTC)


def utc_read(value: Any) -> dt.datetime | None:
    """A stored timestamp as a ``UTCDateTime`` column reads it back (also for driver SQL)."""
    if value is None:
        return None
    assert isinstance(value, dt.datetime)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


intpk = Annotated[int, mapped_column(primary_key=True)]
bigpk = Annotated[
    int, mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
]
timestamp = Annotated[dt.datetime, mapped_column(UTCDateTime)]
created = Annotated[dt.datetime, mapped_column(UTCDateTime, default=utcnow)]
name64 = Annotated[str, mapped_column(String(64))]
name255 = Annotated[str, mapped_column(String(255))]
jsondict = Annotated[dict[str, Any], mapped_column(JSON)]


class Base(DeclarativeBase):
    """The declarative base; its naming convention gives Alembic stable names."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {dt.datetime: UTCDateTime}


class User(Base):
    """A Fedora account, created the first time it is seen."""

    __tablename__ = "users"

    id: Mapped[intpk]
    name: Mapped[name64] = mapped_column(unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[created]
    #: Confirmation-code guessing: failures in the current window, and the lockout end.
    confirm_failures: Mapped[int] = mapped_column(default=0)
    confirm_locked_until: Mapped[dt.datetime | None]
    #: Everything is held back (but kept) until this time; IRC ``fmn mute``.
    muted_until: Mapped[dt.datetime | None]
    #: Signed action links carry this; bumping it refuses every link already sent.
    link_nonce: Mapped[int] = mapped_column(default=0, server_default="0")
    #: Sentences fmn has to tell the user once (expired rules it removed), oldest first.
    notices: Mapped[list[str] | None] = mapped_column(JSON)
    #: Whether the operator's default templates were given (new users get them once).
    defaults_applied: Mapped[bool] = mapped_column(default=False, server_default=true())

    preferences: Mapped[list[Preference]] = relationship(
        back_populates="user", cascade="all, delete-orphan", order_by="Preference.context"
    )

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, name={self.name!r})"


class Preference(Base):
    """One user's settings for one delivery context."""

    __tablename__ = "preferences"
    __table_args__ = (UniqueConstraint("user_id", "context"),)

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    context: Mapped[name64]
    enabled: Mapped[bool] = mapped_column(default=True)
    #: Digest policy: send at most every N minutes and/or after K notifications; 0 = off.
    digest_minutes: Mapped[int] = mapped_column(default=0)
    digest_count: Mapped[int] = mapped_column(default=0)
    #: A daily digest at this local time ("HH:MM"), in ``digest_timezone`` (IANA).
    digest_at: Mapped[str | None] = mapped_column(String(5))
    digest_timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    #: Quiet hours ("HH:MM" to "HH:MM" local, in ``quiet_timezone``); NULL = none.
    #: Instant notifications that are not urgent wait for the end of the window.
    quiet_from: Mapped[str | None] = mapped_column(String(5))
    quiet_to: Mapped[str | None] = mapped_column(String(5))
    quiet_timezone: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship(back_populates="preferences")
    filters: Mapped[list[Filter]] = relationship(
        back_populates="preference", cascade="all, delete-orphan", order_by="Filter.position"
    )
    destinations: Mapped[list[Destination]] = relationship(
        back_populates="preference", cascade="all, delete-orphan", order_by="Destination.id"
    )

    def __repr__(self) -> str:
        return f"Preference(id={self.id!r}, user_id={self.user_id!r}, context={self.context!r})"


class Destination(Base):
    """Where a context delivers for its user: private, usable only once confirmed."""

    __tablename__ = "destinations"
    __table_args__ = (UniqueConstraint("preference_id", "address"),)

    id: Mapped[intpk]
    preference_id: Mapped[int] = mapped_column(ForeignKey("preferences.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(2048))
    #: For feed and live-feed destinations, the secret token (the same as ``address``):
    #: unique across all users, since whoever holds a token reads that user's feed.
    #: NULL for every other kind, so the constraint leaves shared mail addresses alone.
    feed_token: Mapped[str | None] = mapped_column(String(128), unique=True)
    confirmed: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[created]

    preference: Mapped[Preference] = relationship(back_populates="destinations")
    confirmation: Mapped[Confirmation | None] = relationship(
        back_populates="destination", cascade="all, delete-orphan", uselist=False
    )

    def __repr__(self) -> str:
        return f"Destination(id={self.id!r}, confirmed={self.confirmed!r})"


class Confirmation(Base):
    """A pending proof that a user owns a destination; the secret is stored hashed."""

    __tablename__ = "confirmations"

    id: Mapped[intpk]
    destination_id: Mapped[int] = mapped_column(
        ForeignKey("destinations.id", ondelete="CASCADE"), unique=True
    )
    secret_hash: Mapped[str] = mapped_column(String(128), index=True)
    #: The code in clear only until a sender has delivered it, then NULL: the code
    #: has to leave the process that made it (the daemon or the bot sends it).
    outgoing_code: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[timestamp]
    #: The front end that set the address (``tui`` or ``irc``): the code's message
    #: says how to enter it there.
    origin: Mapped[str | None] = mapped_column(String(8))
    sent_count: Mapped[int] = mapped_column(default=0)
    last_sent_at: Mapped[dt.datetime | None]
    created_at: Mapped[created]

    destination: Mapped[Destination] = relationship(back_populates="confirmation")

    def __repr__(self) -> str:
        return f"Confirmation(id={self.id!r}, destination_id={self.destination_id!r})"


class CodeSend(Base):
    """A confirmation code made for an address: what the code-sending limits count.

    Rows outlive the destination and its confirmation, so removing an address and
    adding it again does not buy a fresh code. The address is kept only as a hash
    of its canonical form (``fmn_core.destinations.address_key``), never in clear.
    """

    __tablename__ = "code_sends"
    __table_args__ = (
        Index("ix_code_sends_address_key", "address_key", "created_at"),
        Index("ix_code_sends_user", "user_id", "created_at"),
    )

    id: Mapped[bigpk]
    #: Who asked; NULL once the account is gone (the address's count stays).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    address_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[created]

    def __repr__(self) -> str:
        return f"CodeSend(id={self.id!r}, user_id={self.user_id!r})"


class Filter(Base):
    """A named list of rules, AND'd; a context's filters are OR'd."""

    __tablename__ = "filters"
    __table_args__ = (UniqueConstraint("preference_id", "name"),)

    id: Mapped[intpk]
    preference_id: Mapped[int] = mapped_column(ForeignKey("preferences.id", ondelete="CASCADE"))
    name: Mapped[name255]
    active: Mapped[bool] = mapped_column(default=True)
    oneshot: Mapped[bool] = mapped_column(default=False)
    position: Mapped[int] = mapped_column(default=0)
    #: The matcher skips the filter until then ("pause this filter for 7 days").
    paused_until: Mapped[dt.datetime | None]
    #: How matches travel: ``instant`` (at once) or ``digest`` (the context's next digest).
    delivery: Mapped[str] = mapped_column(String(16), default="instant", server_default="instant")
    #: An urgent filter's matches pass through quiet hours.
    urgent: Mapped[bool] = mapped_column(default=False, server_default=false())

    preference: Mapped[Preference] = relationship(back_populates="filters")
    rules: Mapped[list[Rule]] = relationship(
        back_populates="filter", cascade="all, delete-orphan", order_by="Rule.position"
    )

    def __repr__(self) -> str:
        return f"Filter(id={self.id!r}, name={self.name!r})"


class Rule(Base):
    """One condition of a filter: a catalog rule, its arguments, maybe negated."""

    __tablename__ = "rules"
    #: Reloading a few users' rules joins them to their filters by ``filter_id``; the
    #: start reads every rule in this order (``snapshots._GROUPED_RULES``), unsorted.
    __table_args__ = (Index("ix_rules_filter_order", "filter_id", "position", "id"),)

    id: Mapped[intpk]
    filter_id: Mapped[int] = mapped_column(ForeignKey("filters.id", ondelete="CASCADE"))
    #: The rule's catalog name (``app_is``, or ``module:function`` for third-party rules).
    name: Mapped[name255]
    arguments: Mapped[jsondict] = mapped_column(default=dict)
    negated: Mapped[bool] = mapped_column(default=False)
    position: Mapped[int] = mapped_column(default=0)
    #: A time-bound rule (an exclusion for a while): ignored from then on, then deleted.
    expires_at: Mapped[dt.datetime | None]

    filter: Mapped[Filter] = relationship(back_populates="rules")

    def __repr__(self) -> str:
        return f"Rule(id={self.id!r}, name={self.name!r}, negated={self.negated!r})"


class Template(Base):
    """A named starting profile (a list of filters) a user can clone into a context."""

    __tablename__ = "templates"

    name: Mapped[name64] = mapped_column(primary_key=True)
    title: Mapped[name255]
    description: Mapped[str] = mapped_column(Text, default="")
    #: ``{"filters": [{"name", "active", "oneshot", "rules": [{"rule", "args", "negated"}]}]}``
    definition: Mapped[jsondict]

    def __repr__(self) -> str:
        return f"Template(name={self.name!r})"


class StoredMessage(Base):
    """A bus message, stored once."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    topic: Mapped[str] = mapped_column(String(512))
    body: Mapped[Any] = mapped_column(JSON)
    headers: Mapped[jsondict]
    received_at: Mapped[created] = mapped_column(index=True)
    # What feeds and the live feed show, computed and bounded at ingest
    # (fmn_core.display) so that they never load the body; NULL on rows stored
    # before revision 0003 (those show their topic).
    summary: Mapped[str | None] = mapped_column(String(500))
    url: Mapped[str | None] = mapped_column(String(2048))
    app: Mapped[str | None] = mapped_column(String(64))

    def __repr__(self) -> str:
        return f"StoredMessage(id={self.id!r}, topic={self.topic!r})"


class DeadMessage(Base):
    """A bus message fmn gave up on: it kept failing, and was put aside so the rest move on.

    Only escaped text is kept in ``message_id`` and ``topic`` (they are shown to
    operators); ``raw`` holds the delivery as a message-file line, cut at
    ``ingest.dead_copy_bytes`` (``truncated`` then), for a later requeue.
    """

    __tablename__ = "dead_messages"
    # Operators requeue a dead message by the id a listing showed them; without
    # AUTOINCREMENT SQLite hands the id of a requeued (deleted) newest row to the
    # next dead message, and a repeated requeue would run that one instead.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[bigpk]
    message_id: Mapped[name255] = mapped_column(index=True)
    topic: Mapped[str] = mapped_column(String(512))
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=1)
    received_at: Mapped[created]
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    truncated: Mapped[bool] = mapped_column(default=False)

    def __repr__(self) -> str:
        return f"DeadMessage(id={self.id!r}, message_id={self.message_id!r})"


class NotificationState(enum.StrEnum):
    """Where a notification is in the outbox."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"


class Notification(Base):
    """The outbox: one row per (message, user, context), so redelivery can't duplicate."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("message_id", "user_id", "context"),
        Index("ix_notifications_due", "state", "next_attempt_at"),
        Index("ix_notifications_user_context", "user_id", "context", "state", "sent_at"),
    )

    id: Mapped[bigpk]
    message_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("messages.id", ondelete="CASCADE")
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    context: Mapped[name64]
    filter_id: Mapped[int | None] = mapped_column(ForeignKey("filters.id", ondelete="SET NULL"))
    filter_name: Mapped[name255]
    state: Mapped[str] = mapped_column(String(16), default=NotificationState.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[timestamp] = mapped_column(default=utcnow)
    #: Who holds the row while sending, and until when (a lease, so a crash frees it).
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Why a waiting row waits (``fmn_core.schedule.HOLD_REASONS``); NULL when it doesn't.
    hold_reason: Mapped[str | None] = mapped_column(String(32))
    #: When the IRC bot first found the row's nick offline in the row's current wait
    #: (``hold_reason`` ``offline``): its offline allowance counts from here, not from
    #: ``created_at``, so time held for a digest, quiet hours or a mute doesn't use it
    #: up. Written by ``outbox.postpone_offline`` and read only while ``hold_reason``
    #: is still ``offline``: a value left from a wait that ended means nothing.
    offline_since: Mapped[dt.datetime | None]
    created_at: Mapped[created]
    sent_at: Mapped[dt.datetime | None]

    message: Mapped[StoredMessage] = relationship()
    user: Mapped[User] = relationship()

    def __repr__(self) -> str:
        return (
            f"Notification(id={self.id!r}, message_id={self.message_id!r}, "
            f"context={self.context!r}, state={self.state!r})"
        )


class ChangeEvent(Base):
    """A user's preferences changed; matchers in every process refresh that user."""

    __tablename__ = "change_events"

    id: Mapped[bigpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[name64]
    created_at: Mapped[created]

    def __repr__(self) -> str:
        return f"ChangeEvent(id={self.id!r}, user_id={self.user_id!r}, kind={self.kind!r})"


class PackageOwner(Base):
    """One (package, owner) pair from the package source of truth."""

    __tablename__ = "package_owners"
    __table_args__ = (
        UniqueConstraint("namespace", "package", "owner"),
        #: An owner's packages, and the start's read of the table by owner, unsorted.
        Index("ix_package_owners_namespace_owner", "namespace", "owner"),
    )

    id: Mapped[intpk]
    namespace: Mapped[name64]
    package: Mapped[name255]
    #: A username, or ``@group`` for a group.
    owner: Mapped[name255]

    def __repr__(self) -> str:
        return f"PackageOwner({self.namespace}/{self.package} -> {self.owner})"
