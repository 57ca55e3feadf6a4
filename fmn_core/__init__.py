"""fmn's core: the model, the rule catalog, the matcher and the preference service.

The front ends (``fmn_daemon``, ``fmn_bot``, ``fmn_tui``) use the names re-exported
here and the public modules listed in ``__all__``; see ``docs/core-api.md``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from types import ModuleType

from .access import Actor
from .config import CONTEXTS, Config, load_config
from .db import Database, catalog_of, config_of
from .errors import (
    AccountDirectoryUnavailable,
    AlreadyExists,
    AmbiguousChatAccount,
    ConfigError,
    ConfirmationFailed,
    FmnError,
    ImportRejected,
    InvalidArgument,
    InvalidDestination,
    MalformedMessage,
    NotFound,
    PermissionDenied,
    RateLimited,
    TooManyCodes,
    UnknownAccount,
    UnknownContext,
    UnknownRule,
    UnmappedChatAccount,
    UserError,
)
from .matcher import Matcher, Recipient
from .messages import MessageFacts, facts_of, load_message, parse_line
from .rules import Catalog, RuleContext, RuleSpec, default_catalog

# The public modules load when first used (``fmn_core.gateway``, ``from fmn_core
# import gateway``), not with the package: a consumer never needs the gateway, the
# preferences editor or the account directories, and every process would otherwise
# hold them all (~0.1 s and several MiB at each start).
_MODULES = frozenset(
    {
        "accounts",
        "bounds",
        "catalog",
        "chat",
        "code_limits",
        "config",
        "db",
        "delivery_policy",
        "destinations",
        "display",
        "errors",
        "fasjson",
        "feeds",
        "filters",
        "gateway",
        "gateway_serving",
        "masking",
        "matcher",
        "messages",
        "models",
        "outbox",
        "ownership",
        "portability",
        "preferences",
        "push_urls",
        "rendering",
        "rules",
        "schema",
        "templates",
        "text",
        "wording",
    }
)


def __getattr__(name: str) -> ModuleType:
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: fmn's version: the one in pyproject.toml, from the installed distribution's
#: metadata (fmn_daemon, fmn_bot and fmn_tui re-export it).
__version__ = _version("fmn")

__all__ = [
    "CONTEXTS",
    "AccountDirectoryUnavailable",
    "Actor",
    "AlreadyExists",
    "AmbiguousChatAccount",
    "Catalog",
    "Config",
    "ConfigError",
    "ConfirmationFailed",
    "Database",
    "FmnError",
    "ImportRejected",
    "InvalidArgument",
    "InvalidDestination",
    "MalformedMessage",
    "Matcher",
    "MessageFacts",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "Recipient",
    "RuleContext",
    "RuleSpec",
    "TooManyCodes",
    "UnknownAccount",
    "UnknownContext",
    "UnknownRule",
    "UnmappedChatAccount",
    "UserError",
    "__version__",
    "catalog_of",
    "config_of",
    "default_catalog",
    "facts_of",
    "load_config",
    "load_message",
    "parse_line",
    *sorted(_MODULES),
]
