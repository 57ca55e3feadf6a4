"""Sorting failures: which mean "the database or broker is unreachable", and how to say them.

The consumer, the senders and ``replay`` share these two answers, so that one
hostile message is isolated the same way everywhere (issue 10): only an error
that says the database or the network is away is retried as an outage; any
other error is the item's own, and costs only that item.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

__all__ = ["describe", "is_transient"]


def is_transient(error: BaseException) -> bool:
    """Whether an error means "the database can't be reached" (retry) rather than "this data".

    Transient: a lost or refused connection, an operational failure of the
    database (``OperationalError``: connection refused, disk full, a lock or
    statement timeout, SQLite busy), an interface error, a pool timeout, a
    network error. Everything else — a value the database refuses (NaN, NUL), a
    ``RecursionError`` or ``ValueError`` while encoding, a bug — is about the
    items in hand: the caller isolates them and never retries forever.
    """
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
    return isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError | OSError)


def _text(error: BaseException) -> str:
    # str() of an exception can itself fail: SQLAlchemy's shows the statement's
    # parameters, and a body nested 5,000 levels has no repr.
    try:
        lines = str(error).strip().splitlines()
    except Exception:
        return "(its text cannot be shown)"
    return lines[0] if lines else ""


def describe(error: BaseException) -> str:
    """One line naming what went wrong, for logs; never raises.

    pika nests the real cause deeply, SQLAlchemy wraps the driver's: both are unwrapped.
    """
    for _ in range(6):
        nested = getattr(error, "exceptions", None)  # AMQPConnectionWorkflowFailed
        if isinstance(nested, list | tuple) and nested and isinstance(nested[-1], BaseException):
            error = nested[-1]
            continue
        inner = getattr(error, "exception", None)  # AMQPConnectorSocketConnectError & co
        if isinstance(inner, BaseException):
            error = inner
            continue
        if isinstance(error, sa_exc.StatementError) and isinstance(error.orig, BaseException):
            error = error.orig
            continue
        if error.args and isinstance(error.args[0], BaseException):
            error = error.args[0]
            continue
        break
    first = _text(error)
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
