"""How often confirmation codes may be made: per address and per user, persisted.

A confirmation code goes to an address nobody has proved yet, so each one is a
message fmn sends to a stranger on somebody's say-so. Three limits bound that,
counted in the database (``code_sends``) so that removing and re-adding an
address, restarting, or running several daemons buys nothing:

- ``confirmation.resend_interval_seconds`` between two codes to one address;
- ``confirmation.codes_per_address`` codes to one address per
  ``confirmation.code_window_hours``, whoever asks (what bounds the mail a
  stranger's inbox gets);
- of those, ``confirmation.codes_per_address_per_user`` (its
  :attr:`~fmn_core.config.ConfirmationConfig.address_share`, fewer) asked for by
  one user: somebody adding another person's address again and again uses up
  their own share, not the address's, and the owner still gets a code that day;
- ``confirmation.codes_per_user`` codes made by one user in that window.

Several accounts together can still use up an address's codes (it takes
``codes_per_address / address_share`` of them, each a real Fedora account): the
inbox's bound comes first.

Addresses are counted under :func:`fmn_core.destinations.address_key` (a hash of
their canonical form), never stored here in clear. The preference service calls
:func:`check_code_limits` before it writes anything and :func:`record_code` when
it makes the code, in the same unit of work.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from .config import ConfirmationConfig
from .db import is_postgres, lock_for_transaction
from .destinations import address_key, mask_address
from .errors import TooManyCodes
from .models import CodeSend, User, utcnow

__all__ = ["check_code_limits", "record_code"]


def _lock(session: Session, *names: str) -> None:
    """Serialize code making per address and per user across processes (PostgreSQL).

    Without it, two requests arriving together would both count the same rows and
    both pass. SQLite has one writer at a time anyway.
    """
    if not is_postgres(session):
        return
    for name in sorted(names):  # one order everywhere: no deadlock between two callers
        lock_for_transaction(session, f"fmn-code-lock\0{name}")


def _when(moment: dt.datetime, now: dt.datetime) -> str:
    shown = moment.astimezone(dt.UTC)
    if shown.date() == now.astimezone(dt.UTC).date():
        return f"{shown:%H:%M:%S} UTC"
    return f"{shown:%Y-%m-%d %H:%M} UTC"


def _nth_newest(session: Session, where: object, n: int) -> dt.datetime | None:
    return session.scalars(
        select(CodeSend.created_at)
        .where(where)  # type: ignore[arg-type]
        .order_by(CodeSend.created_at.desc())
        .offset(n - 1)
        .limit(1)
    ).first()


def check_code_limits(
    session: Session,
    config: ConfirmationConfig,
    name: str,
    user: User | None,
    context: str,
    address: str,
    now: dt.datetime,
) -> str:
    """Raise ``TooManyCodes`` if a new code for ``address``, asked for by the account
    ``name`` (whose row is ``user``, None before its first write), would break a
    limit; otherwise return the address's key for :func:`record_code`. Writes nothing.
    """
    key = address_key(context, address)
    _lock(session, f"address:{key}", f"user:{name}")
    # The clock is read again once the lock is held: a request that waited for it
    # must not find the code the holder just recorded "in its future" and be refused.
    now = max(now, utcnow())
    window = dt.timedelta(hours=config.code_window_hours)
    since = now - window
    masked = mask_address(context, address)

    latest = session.scalar(
        select(func.max(CodeSend.created_at)).where(CodeSend.address_key == key)
    )
    interval = dt.timedelta(seconds=config.resend_interval_seconds)
    if latest is not None and now < latest + interval:
        ready = latest + interval
        wait = max(1, int((ready - now).total_seconds() + 0.999))
        raise TooManyCodes(
            f"A code was sent to {masked} moments ago; wait {wait} seconds (until "
            f"{_when(ready, now)}) before asking for another, or enter the code you got.",
            until=ready,
        )

    by_address = CodeSend.address_key == key
    share = config.address_share
    if user is not None:
        # Before the address's count: a requester past their own share is told so,
        # and their codes never make up more than a share of the address's.
        mine = _nth_newest(session, and_(by_address, CodeSend.user_id == user.id), share)
        if mine is not None and mine > since:
            until = mine + window
            raise TooManyCodes(
                f"You have asked for {share} confirmation {'code' if share == 1 else 'codes'} "
                f"to {masked} in {config.code_window_hours} hours, the most one account may; "
                f"enter a code it got, or ask again after {_when(until, now)}.",
                until=until,
            )

    oldest = _nth_newest(session, by_address, config.codes_per_address)
    if oldest is not None and oldest > since:
        until = oldest + window
        raise TooManyCodes(
            f"{masked} has been sent the most confirmation codes fmn sends to one address "
            f"in {config.code_window_hours} hours; enter a code it got, or ask again after "
            f"{_when(until, now)}.",
            until=until,
        )

    if user is not None:
        oldest = _nth_newest(session, CodeSend.user_id == user.id, config.codes_per_user)
        if oldest is not None and oldest > since:
            until = oldest + window
            raise TooManyCodes(
                f"You have asked for {config.codes_per_user} confirmation codes in "
                f"{config.code_window_hours} hours, the most allowed; enter a code you got, "
                f"or ask again after {_when(until, now)}.",
                until=until,
            )
    return key


def record_code(
    session: Session,
    config: ConfirmationConfig,
    user: User,
    key: str,
    now: dt.datetime,
) -> None:
    """Count a code just made for the address ``key`` (from :func:`check_code_limits`)."""
    # Rows older than every limit count for nothing; drop this address's and user's
    # (retention prunes everybody's, ``fmn_core.retention``).
    session.execute(
        delete(CodeSend)
        .where(
            or_(CodeSend.address_key == key, CodeSend.user_id == user.id),
            CodeSend.created_at < now - config.counted_for,
        )
        .execution_options(synchronize_session=False)
    )
    session.add(CodeSend(user_id=user.id, address_key=key, created_at=now))
    session.flush()
