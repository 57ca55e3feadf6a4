"""fmn's core: the model, the rule catalog, the matcher and the preference service.

The front ends (``fmn_daemon``, ``fmn_bot``, ``fmn_tui``) use the names re-exported
here and the public modules listed in ``__all__``; see ``docs/core-api.md``.
"""

from __future__ import annotations

from . import (
    accounts,
    catalog,
    config,
    db,
    destinations,
    errors,
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
)
from .config import CONTEXTS, Config, load_config
from .db import Database, config_of
from .errors import (
    AlreadyExists,
    ConfigError,
    ConfirmationFailed,
    FmnError,
    ImportRejected,
    InvalidArgument,
    InvalidDestination,
    MalformedMessage,
    NotConfirmed,
    NotFound,
    PermissionDenied,
    RateLimited,
    UnknownContext,
    UnknownRule,
    UserError,
)
from .matcher import Matcher, Recipient
from .messages import MessageFacts, facts_of, load_message, parse_line
from .preferences import Actor
from .rules import Catalog, RuleContext, RuleSpec, default_catalog

__all__ = [
    "CONTEXTS",
    "Actor",
    "AlreadyExists",
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
    "NotConfirmed",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "Recipient",
    "RuleContext",
    "RuleSpec",
    "UnknownContext",
    "UnknownRule",
    "UserError",
    "accounts",
    "catalog",
    "config",
    "config_of",
    "db",
    "default_catalog",
    "destinations",
    "errors",
    "facts_of",
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
]
