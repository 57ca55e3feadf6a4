"""Errors raised by fmn's core and rendered by its front ends.

The hierarchy::

    FmnError
    ├── UserError               something the user can fix; the message says how
    │   ├── InvalidArgument     a value is malformed or out of range
    │   │   ├── UnknownRule     no rule by that name in the catalog
    │   │   ├── UnknownContext  not a delivery context this deployment offers
    │   │   └── InvalidDestination  an address or push URL fmn refuses
    │   ├── NotFound            no such filter, rule, template or destination
    │   │   └── UnknownAccount  the account directory knows no such Fedora account
    │   ├── AlreadyExists       a name is already taken
    │   ├── ConfirmationFailed  the code is wrong, used or expired
    │   ├── RateLimited         too many attempts; wait and try again
    │   │   └── TooManyCodes    a confirmation-code limit; ``until`` says when it ends
    │   ├── DatabaseBusy        another change held the database too long; nothing was saved
    │   ├── PermissionDenied    acting on somebody else's data
    │   │   ├── UnmappedChatAccount   no Fedora profile lists this IRC account
    │   │   └── AmbiguousChatAccount  several Fedora profiles list it
    │   ├── ImportRejected      a preferences file with invalid entries
    │   │   └── UnsupportedFormatVersion  a preferences file from a newer fmn
    │   └── MalformedRequest    a preference-gateway request fmn cannot read
    ├── ConfigError             a bad setting; start-up stops and names the key
    │   └── OwnershipSourceError  ownership.source can't be read or isn't owner-alias JSON
    ├── AccountDirectoryUnavailable  the account directory did not answer
    ├── GatewayUnavailable      the preference gateway can't be reached or failed
    │   └── GatewayInternalError  a bug in the gateway; ``reference`` finds it in its log
    ├── MissingExtra            a front end whose pip extra is not installed (also an ImportError)
    ├── InputTooLarge       outside JSON over a size or nesting bound (fmn_core.bounds)
    └── MalformedMessage        a bus message fmn cannot read

Front ends catch ``UserError`` and show ``str(error)`` as it is: the sentence is
written once, here or where the error is raised, so every front end says the same.
Any other exception is a bug: every edge (the daemon's CLI and senders, the bot,
the TUI) hands it to :func:`report_internal_error`, which logs the traceback under
a fresh reference and gives back the one sentence people see.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AccountDirectoryUnavailable",
    "ActionLinkRefused",
    "AlreadyExists",
    "AmbiguousChatAccount",
    "ConfigError",
    "ConfirmationFailed",
    "DatabaseBusy",
    "FmnError",
    "GatewayInternalError",
    "GatewayUnavailable",
    "ImportRejected",
    "InputTooLarge",
    "InternalErrorNotice",
    "InvalidArgument",
    "InvalidDestination",
    "MalformedMessage",
    "MalformedRequest",
    "MissingExtra",
    "NotFound",
    "OwnershipSourceError",
    "PermissionDenied",
    "RateLimited",
    "TooManyCodes",
    "UnknownAccount",
    "UnknownContext",
    "UnknownRule",
    "UnmappedChatAccount",
    "UnsupportedFormatVersion",
    "UserError",
    "report_internal_error",
]

#: Where Fedora users edit their profile (emails, chat nicknames).
PROFILE_URL = "https://accounts.fedoraproject.org/"


class FmnError(Exception):
    """Base class of every error fmn raises on purpose."""


class UserError(FmnError):
    """An error the user caused and can fix; ``str()`` says what to do."""


class InvalidArgument(UserError):
    """A value is malformed or out of range."""

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class UnknownRule(InvalidArgument):
    """No rule by that name is registered."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"There is no rule called {name!r}; list the available rules to pick one.",
            argument="rule",
        )
        self.name = name


class UnknownContext(InvalidArgument):
    """The context is not one this deployment offers."""

    def __init__(self, name: str, offered: Sequence[str]) -> None:
        super().__init__(
            f"{name!r} is not a delivery context here; choose one of: {', '.join(offered)}.",
            argument="context",
        )
        self.name = name


class InvalidDestination(InvalidArgument):
    """An address or push URL that fmn refuses to deliver to."""

    def __init__(self, message: str) -> None:
        super().__init__(message, argument="address")


class NotFound(UserError):
    """The object named does not exist (or is not the actor's)."""


class UnknownAccount(NotFound):
    """The account directory has no Fedora account by this name."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"There is no Fedora account named {name[:40]!r}; check the name (Fedora "
            f"accounts are lowercase) or create the account at {PROFILE_URL}."
        )
        self.name = name


class AlreadyExists(UserError):
    """The name is taken."""


class ConfirmationFailed(UserError):
    """The confirmation code is wrong, already used or expired."""


class RateLimited(UserError):
    """Too many attempts in a short time."""


class DatabaseBusy(UserError):
    """The database stayed locked by another change longer than a person should wait
    (``gateway.busy_timeout_seconds``); the unit of work was rolled back whole."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "The preferences database is busy (another change is being written); "
            "nothing was saved — try again in a moment."
        )


class TooManyCodes(RateLimited):
    """No new confirmation code for now: a per-address or per-user limit was reached."""

    def __init__(self, message: str, *, until: dt.datetime) -> None:
        super().__init__(message)
        self.until = until


class PermissionDenied(UserError):
    """The actor may not act on this data."""


class ActionLinkRefused(PermissionDenied):
    """A signed action link that no longer holds: expired, withdrawn, or not about the
    user's own notification. ``str()`` says which, and what to do instead."""


class UnmappedChatAccount(PermissionDenied):
    """No Fedora Accounts profile lists the sender's IRC services account."""

    def __init__(self, account: str) -> None:
        shown = account[:40]
        super().__init__(
            f"No Fedora account lists your IRC account {shown!r}: add irc:/{shown} to the "
            f"Chat nicknames of your profile at {PROFILE_URL} (and keep the profile public, "
            "or fmn can't see it), then try again in a few minutes."
        )
        self.account = account


class AmbiguousChatAccount(PermissionDenied):
    """More than one Fedora Accounts profile lists the sender's IRC services account."""

    def __init__(self, account: str, count: int) -> None:
        super().__init__(
            f"{count} Fedora accounts list the IRC account {account[:40]!r} in their profiles, "
            "so fmn can't tell which one is you; remove it from the profiles that are not "
            "yours, or ask the fmn operators."
        )
        self.account = account
        self.count = count


class ImportRejected(UserError):
    """A preferences import had invalid entries; nothing was written."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = "; ".join(f"{path}: {why}" for path, why in self.problems[:20])
        more = len(self.problems) - 20
        suffix = f"; and {more} more" if more > 0 else ""
        super().__init__(
            f"Nothing was imported: {len(self.problems)} invalid entries ({lines}{suffix})."
        )


class UnsupportedFormatVersion(ImportRejected):
    """A preferences file of a format version newer than this fmn reads (written by a
    newer fmn); nothing was imported. ``found`` and ``supported`` are the versions."""

    def __init__(self, found: int, supported: int) -> None:
        shown = str(found) if len(str(found)) <= 12 else f"{str(found)[:12]}…"
        super().__init__(
            [("version", f"is {shown}; this fmn reads format versions 1 to {supported}")]
        )
        self.args = (
            f"Nothing was imported: the file is in preferences format version {shown}, "
            f"written by a newer fmn, and this fmn reads versions up to {supported}; "
            f"upgrade fmn here to the release that wrote the file, then import it again.",
        )
        self.found = found
        self.supported = supported


class ConfigError(FmnError):
    """A configuration value is missing, unknown or invalid."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"configuration key {key!r}: {message}")
        self.key = key


class MalformedMessage(FmnError):
    """A bus message that cannot be decoded or validated."""

    def __init__(self, message: str, *, message_id: str | None = None) -> None:
        super().__init__(message)
        self.message_id = message_id


class OwnershipSourceError(ConfigError):
    """The ownership source (``ownership.source``) can't be read or isn't owner-alias JSON."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__("ownership.source", f"{source}: {problem}")
        self.source = source
        self.problem = problem


class AccountDirectoryUnavailable(FmnError):
    """The account directory could not answer (unreachable, or an answer fmn can't read)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"the account directory at {where} could not answer: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class InternalErrorNotice:
    """What a person is told about a bug: one sentence, and the reference its log entry has."""

    reference: str

    def __str__(self) -> str:
        return f"internal error (reference {self.reference}); the fmn log has the details"


def report_internal_error(
    log: logging.Logger, what: str, error: BaseException | None = None
) -> InternalErrorNotice:
    """Log a bug with its traceback under a new reference; return what to tell people.

    ``what`` says what was being done, for the log only (it may name a message id,
    never private data). ``error`` defaults to the exception being handled.
    """
    reference = secrets.token_hex(4)
    log.error(
        "internal error (reference %s) while %s",
        reference,
        what,
        exc_info=error if error is not None else True,
    )
    return InternalErrorNotice(reference)


class MissingExtra(FmnError, ImportError):
    """A part of fmn needs a pip extra that is not installed.

    Also an ``ImportError``, so that importing a plugin package (``fmn_bot``)
    fails the way its host (Limnoria) expects, with this sentence.
    """

    def __init__(self, program: str, extra: str) -> None:
        super().__init__(f"{program} needs the {extra!r} extra: pip install 'fmn[{extra}]'")
        self.program = program
        self.extra = extra


class InputTooLarge(FmnError):
    """JSON from outside exceeds a bound checked before parsing (``fmn_core.bounds``).

    Not a ``UserError``: whoever takes the input turns it into its own error (a
    malformed bus message, a rejected import) with this text as the reason.
    """

    def __init__(self, bound: str, limit: int, found: int) -> None:
        if bound == "depth":
            text = f"nests arrays and objects {found} levels deep; at most {limit}"
        else:
            text = f"is {found} bytes long; at most {limit}"
        super().__init__(text)
        self.bound = bound
        self.limit = limit
        self.found = found


class MalformedRequest(UserError):
    """A request to the preference gateway that fmn cannot read; names what was wrong."""

    def __init__(self, what: str) -> None:
        super().__init__(f"fmn's preference service could not read the request: {what}.")


class GatewayUnavailable(FmnError):
    """The preference gateway can't be reached, or failed; the message says which."""


class GatewayInternalError(GatewayUnavailable):
    """A bug in the preference gateway; its traceback is in the gateway's log under ``ref``."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"internal error in fmn's preference service (reference {reference})")
        self.reference = reference
