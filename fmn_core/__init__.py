"""fmn's core: the model, the rule catalog, the matcher and the preference service.

The front ends (``fmn_daemon``, ``fmn_bot``, ``fmn_tui``) use the names re-exported
here and the public modules listed in ``__all__``; see ``docs/core-api.md``.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from . import (
    accounts,
    bounds,
    catalog,
    code_limits,
    config,
    db,
    destinations,
    display,
    errors,
    fasjson,
    filters,
    gateway,
    gateway_serving,
    matcher,
    messages,
    models,
    outbox,
    ownership,
    portability,
    preferences,
    rendering,
    rules,
    schema,
    templates,
    text,
    wording,
)
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
    "accounts",
    "bounds",
    "catalog",
    "catalog_of",
    "code_limits",
    "config",
    "config_of",
    "db",
    "default_catalog",
    "destinations",
    "display",
    "errors",
    "facts_of",
    "fasjson",
    "filters",
    "gateway",
    "gateway_serving",
    "load_config",
    "load_message",
    "matcher",
    "messages",
    "models",
    "outbox",
    "ownership",
    "parse_line",
    "portability",
    "preferences",
    "rendering",
    "rules",
    "schema",
    "templates",
    "text",
    "wording",
]
