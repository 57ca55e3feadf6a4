"""The preference gateway's serving side: preference calls run for one principal.

:class:`PreferenceGateway` answers the requests of :mod:`fmn_core.gateway`'s
protocol against the database, for a :class:`Principal` its caller established:
``fmn_daemon.gateway`` learns it from the kernel (``SO_PEERCRED``) for each socket
connection; ``fmn-tui`` without a gateway, or an administrator's session run as
fmn's service account, gives it directly and talks over a socketpair
(:func:`serve_in_process`). One code path either way.

Each request is one unit of work: its calls run in one transaction, committed, or
rolled back for a ``trial``. The actor is never part of a request, and ``user=``
is refused: over the socket nobody is an administrator. A wrong confirmation code
is an outcome of ``confirm``, not an error, so its count commits with the unit;
``confirm`` is refused in a trial, so guessing is never free.

A person is waiting on the other end, so a request waits for a database that
another change holds locked at most ``gateway.busy_timeout_seconds`` (SQLite's
busy timeout for this transaction, PostgreSQL's ``lock_timeout``), not the
daemons' 30 seconds; then the whole unit is rolled back and the reply is
:class:`~fmn_core.errors.DatabaseBusy`, which says to try again.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import logging
import socket
import threading
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.orm import Session

from . import preferences
from .db import Database
from .errors import (
    DatabaseBusy,
    MalformedRequest,
    PermissionDenied,
    UserError,
    report_internal_error,
)
from .gateway import (
    MAX_CALLS,
    MAX_REQUEST,
    OPERATIONS,
    READ_OPERATIONS,
    TRIAL_FORBIDDEN,
    PreferenceCall,
    SessionInfo,
    decode,
    encode,
    error_to_wire,
    read_frame,
    write_frame,
)
from .preferences import Actor

__all__ = ["PreferenceGateway", "Principal", "reply_refusal", "serve_in_process"]

log = logging.getLogger(__name__)

#: Calls that take no actor (the same for everyone).
_NO_ACTOR = frozenset({"list_templates"})
#: The kinds of value a preference call's arguments are annotated with, as a refusal
#: names them. ``True`` is an ``int`` to Python, not to a user (``_is_one_of``).
_KINDS: Final[Mapping[type, str]] = {
    str: "text",
    bool: "true or false",
    int: "a whole number",
    dt.datetime: "a date and time",
    dt.timedelta: "a duration",
    Mapping: "a map",
    type(None): "nothing",
}


@dataclass(frozen=True)
class Principal:
    """Who a connection acts as: the actor, and for an administrator the account edited."""

    actor: Actor
    #: Set only in-process, when an administrator edits somebody else (never over the socket).
    user: str | None = None

    @property
    def account(self) -> str:
        """The account whose preferences are read and changed."""
        return self.user or self.actor.name


class PreferenceGateway:
    """Answers protocol requests for one principal at a time, against one database."""

    def __init__(self, database: Database, *, busy_timeout: float | None = None) -> None:
        self.database = database
        #: Seconds a request waits for a locked database before ``DatabaseBusy``.
        self.busy_timeout = (
            database.config.gateway.busy_timeout_seconds if busy_timeout is None else busy_timeout
        )

    def session_info(self, principal: Principal) -> SessionInfo:
        """The hello reply: who is served, and what they may choose from."""
        config = self.database.config
        return SessionInfo(principal.account, principal.actor.name, config.contexts, config.push)

    # --- one request ------------------------------------------------------------------

    def handle(self, request: Any, principal: Principal) -> dict[str, Any]:
        """The reply to one decoded request frame."""
        try:
            if isinstance(request, dict) and request.get("hello") is True:
                return {"ok": True, "session": self.session_info(principal).to_wire()}
            trial, calls = self._parse(request, principal)
            results = self._run(calls, principal, trial=trial)
            return {"ok": True, "results": encode(results)}
        except UserError as error:
            return {"ok": False, "error": error_to_wire(error)}
        except Exception:
            notice = report_internal_error(log, f"serving {principal.account}")
            return {"ok": False, "internal": notice.reference}

    def _parse(self, request: Any, principal: Principal) -> tuple[bool, list[PreferenceCall]]:
        if not isinstance(request, dict) or request.get("mode") not in ("unit", "trial"):
            raise MalformedRequest("not a hello and no mode (unit or trial)")
        trial = request["mode"] == "trial"
        raw = request.get("calls")
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CALLS:
            raise MalformedRequest(f"calls must be a list of 1 to {MAX_CALLS} calls")
        calls = []
        for item in raw:
            if not isinstance(item, dict) or set(item) != {"op", "args", "kwargs"}:
                raise MalformedRequest("a call must have op, args and kwargs")
            op = item["op"]
            if not isinstance(op, str) or op not in OPERATIONS:
                raise MalformedRequest(f"{str(op)[:40]!r} is not a preference call")
            if trial and op in TRIAL_FORBIDDEN:
                raise MalformedRequest(f"{op} cannot be tried, only done")
            args, kwargs = decode(item["args"]), decode(item["kwargs"])
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise MalformedRequest("args must be a list and kwargs a map")
            if "user" in kwargs:
                # The account comes from who is calling, never from the request.
                raise PermissionDenied(
                    "You can only see and change your own preferences; ask an fmn "
                    "administrator to act on another account."
                )
            if op == "confirm" and principal.user is not None:
                raise PermissionDenied("Only the account's owner can enter its confirmation codes.")
            calls.append(PreferenceCall(op, tuple(args), kwargs))
        return trial, calls

    def _run(self, calls: list[PreferenceCall], principal: Principal, *, trial: bool) -> list[Any]:
        # Reads alone take no write lock (SQLite): a screen shows while others write.
        read_only = trial and all(call.op in READ_OPERATIONS for call in calls)
        try:
            with self.database.person_waiting(
                read_only=read_only, commit=not trial, busy_timeout=self.busy_timeout
            ) as session:
                return [self._invoke(session, principal, call) for call in calls]
        except DatabaseBusy:
            log.info(
                "%s's request waited %.1f s for a locked database; refused as busy",
                principal.account,
                self.busy_timeout,
            )
            raise

    @staticmethod
    def _invoke(session: Session, principal: Principal, call: PreferenceCall) -> Any:
        function = getattr(preferences, call.op)
        kwargs = dict(call.kwargs)
        signature = inspect.signature(function)
        if principal.user is not None and "user" in signature.parameters:
            kwargs["user"] = principal.user
        head: tuple[Any, ...] = (session,) if call.op in _NO_ACTOR else (session, principal.actor)
        try:
            bound = signature.bind(*head, *call.args, **kwargs)
        except TypeError as error:
            raise MalformedRequest(f"wrong arguments for {call.op}") from error
        expected = argument_kinds(call.op)
        for name, value in bound.arguments.items():
            kinds = expected.get(name)
            if kinds is not None and not _is_one_of(value, kinds):
                wanted = " or ".join(_KINDS[kind] for kind in kinds)
                raise MalformedRequest(
                    f"{call.op}'s {name} must be {wanted}, not {type(value).__name__}"
                )
        return function(*head, *call.args, **kwargs)

    # --- one connection ---------------------------------------------------------------

    def serve_connection(self, sock: socket.socket, principal: Principal) -> None:
        """Answer requests on ``sock`` until the other end closes it."""
        with sock:
            while True:
                try:
                    request = read_frame(sock, MAX_REQUEST)
                except MalformedRequest as error:
                    # The stream has lost its framing: say why once, then hang up.
                    log.warning("closing %s's connection: %s", principal.account, error)
                    self._reply(sock, {"ok": False, "error": error_to_wire(error)}, principal)
                    return
                except OSError:
                    return
                if request is None:
                    return
                if not self._reply(sock, self.handle(request, principal), principal):
                    return

    @staticmethod
    def _reply(
        sock: socket.socket, reply: dict[str, Any], principal: Principal | None = None
    ) -> bool:
        """Send ``reply``; False once the connection is gone.

        A reply JSON or UTF-8 cannot carry (a lone surrogate) is a bug that costs only
        that reply: ``write_frame`` fails before sending a byte, so the client gets the
        internal-error reply instead and the connection serves its next request.
        """
        try:
            write_frame(sock, reply)
        except OSError:
            return False
        except (ValueError, TypeError, RecursionError):
            # UnicodeEncodeError is a ValueError; the stream is still in step.
            account = principal.account if principal is not None else "a refused client"
            notice = report_internal_error(log, f"encoding the reply to {account}")
            return PreferenceGateway._reply(sock, {"ok": False, "internal": notice.reference})
        return True


@functools.cache
def argument_kinds(op: str) -> Mapping[str, tuple[type, ...]]:
    """The kinds of value each argument of a preference call may be, from its annotations.

    A request carries JSON, so a list can arrive where the service expects a name;
    checked here, it is refused as malformed instead of failing inside the service
    as a bug. Session, actor and ``user`` never come from a request.
    """
    hints = typing.get_type_hints(getattr(preferences, op))
    return {
        name: _kinds_of(hint)
        for name, hint in hints.items()
        if name not in ("session", "actor", "user", "return")
    }


def _kinds_of(hint: Any) -> tuple[type, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(kind for member in typing.get_args(hint) for kind in _kinds_of(member))
    kind = typing.get_origin(hint) or hint
    if kind not in _KINDS:
        raise TypeError(f"the gateway has no check for arguments annotated {hint!r}")
    return (kind,)


def _is_one_of(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def reply_refusal(sock: socket.socket, error: UserError) -> None:
    """Tell a client why its connection is refused (best effort), before closing it."""
    PreferenceGateway._reply(sock, {"ok": False, "error": error_to_wire(error)})


def serve_in_process(
    gateway: PreferenceGateway, principal: Principal
) -> tuple[socket.socket, threading.Thread]:
    """The gateway for one principal on a socketpair: the client's end, and the server thread.

    The laptop default and the administrators' path use this: the process already
    holds the database, so the principal is given rather than learnt from the kernel.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    thread = threading.Thread(
        target=gateway.serve_connection, args=(ours, principal), name="fmn-gateway", daemon=True
    )
    thread.start()
    return theirs, thread
