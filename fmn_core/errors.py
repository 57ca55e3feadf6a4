"""Errors raised by fmn's core and rendered by its front ends.

The hierarchy::

    FmnError
    ├── UserError               something the user can fix; the message says how
    │   ├── InvalidArgument     a value is malformed or out of range
    │   │   ├── UnknownRule     no rule by that name in the catalog
    │   │   ├── UnknownContext  not a delivery context this deployment offers
    │   │   └── InvalidDestination  an address or push URL fmn refuses
    │   ├── NotFound            no such filter, rule, template or destination
    │   ├── AlreadyExists       a name is already taken
    │   ├── NotConfirmed        the destination has not been confirmed yet
    │   ├── ConfirmationFailed  the code is wrong, used or expired
    │   ├── RateLimited         too many attempts; wait and try again
    │   ├── PermissionDenied    acting on somebody else's data
    │   ├── ImportRejected      a preferences file with invalid entries
    │   └── MalformedRequest    a preference-gateway request fmn cannot read
    ├── ConfigError             a bad setting; start-up stops and names the key
    │   └── OwnershipSourceError  ownership.source can't be read or isn't owner-alias JSON
    ├── AccountDirectoryUnavailable  the account directory did not answer
    ├── GatewayUnavailable      the preference gateway can't be reached or failed
    │   └── GatewayInternalError  a bug in the gateway; ``ref`` finds it in its log
    └── MalformedMessage        a bus message fmn cannot read

Front ends catch ``UserError`` and show ``str(error)`` as it is: the sentence is
written once, here or where the error is raised, so every front end says the same.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AccountDirectoryUnavailable",
    "AlreadyExists",
    "ConfigError",
    "ConfirmationFailed",
    "FmnError",
    "GatewayInternalError",
    "GatewayUnavailable",
    "ImportRejected",
    "InvalidArgument",
    "InvalidDestination",
    "MalformedMessage",
    "MalformedRequest",
    "NotConfirmed",
    "NotFound",
    "OwnershipSourceError",
    "PermissionDenied",
    "RateLimited",
    "UnknownContext",
    "UnknownRule",
    "UserError",
]


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


class AlreadyExists(UserError):
    """The name is taken."""


class NotConfirmed(UserError):
    """The destination has to be confirmed before it is used."""


class ConfirmationFailed(UserError):
    """The confirmation code is wrong, already used or expired."""


class RateLimited(UserError):
    """Too many attempts in a short time."""


class PermissionDenied(UserError):
    """The actor may not act on this data."""


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


class MalformedRequest(UserError):
    """A request to the preference gateway that fmn cannot read; names what was wrong."""

    def __init__(self, what: str) -> None:
        super().__init__(f"fmn's preference service could not read the request: {what}.")


class GatewayUnavailable(FmnError):
    """The preference gateway can't be reached, or failed; the message says which."""


class GatewayInternalError(GatewayUnavailable):
    """A bug in the preference gateway; its traceback is in the gateway's log under ``ref``."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"internal error in fmn's preference service (ref {ref})")
        self.ref = ref
