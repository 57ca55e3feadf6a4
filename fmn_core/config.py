"""fmn's configuration: one TOML file loaded into one frozen, validated object.

Every setting has a default that works on a laptop (SQLite in the user's state
directory, SMTP on localhost). A bad or unknown key raises ``ConfigError`` naming
the key, the value and what was expected, before anything connects.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import platformdirs

from .errors import ConfigError

__all__ = [
    "CONTEXTS",
    "AccountsConfig",
    "BotConfig",
    "Config",
    "ConfirmationConfig",
    "DeliveryConfig",
    "FcmConfig",
    "HttpConfig",
    "OwnershipConfig",
    "PushConfig",
    "SmtpConfig",
    "default_database_url",
    "load_config",
]

#: Every delivery context fmn knows; the operator chooses which are offered.
CONTEXTS: tuple[str, ...] = ("email", "irc", "push", "android", "desktop", "live", "rss")

CONFIG_ENV = "FMN_CONFIG"


def default_database_url() -> str:
    """The embedded default: a SQLite file in the user's state directory."""
    state = Path(platformdirs.user_state_dir("fmn"))
    return f"sqlite:///{state / 'fmn.sqlite'}"


@dataclass(frozen=True)
class SmtpConfig:
    """The operator's outgoing mail server; users only ever supply an address."""

    host: str = "localhost"
    port: int = 25
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str = ""
    password: str = ""
    from_address: str = "notifications@fedoraproject.org"
    from_name: str = "Fedora Notifications"
    timeout_seconds: float = 15.0


@dataclass(frozen=True)
class PushConfig:
    """Which Apprise URL schemes users may register for push, desktop and Android."""

    allowed_schemes: tuple[str, ...] = (
        "ntfy",
        "ntfys",
        "gotify",
        "gotifys",
        "pover",
        "matrix",
        "matrixs",
        "pbul",
        "tgram",
        "discord",
        "slack",
        "mmost",
        "mmosts",
        "rocket",
        "rockets",
    )
    # json/jsons (and xml, form) are left out on purpose: their URLs choose the HTTP
    # method, headers and query sent to any host, which turns fmn into a request
    # relay for whoever registers one. Operators may add them to this list.
    #: Only for tests and closed networks: lets push URLs point at loopback/private hosts.
    allow_private_hosts: bool = False
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class FcmConfig:
    """Firebase Cloud Messaging, for Android apps with their own Firebase project."""

    project: str = ""
    keyfile: str = ""


@dataclass(frozen=True)
class OwnershipConfig:
    """Where package ownership comes from (dist-git's bulk owner-alias JSON)."""

    #: A URL or a file path; empty disables ownership rules' data (they match nothing).
    source: str = ""
    refresh_minutes: int = 60


@dataclass(frozen=True)
class AccountsConfig:
    """The account directory: who exists, and their groups."""

    provider: Literal["local", "fas2"] = "local"
    fas_url: str = "https://admin.fedoraproject.org/accounts/"
    fas_username: str = ""
    fas_password: str = ""


@dataclass(frozen=True)
class DeliveryConfig:
    """How the daemon sends and retries."""

    max_attempts: int = 8
    backoff_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0
    batch_size: int = 200
    senders: int = 4
    claim_lease_seconds: float = 300.0
    #: Above this many notifications per user and context per hour, collapse into a digest.
    rate_limit_per_hour: int = 120
    shutdown_grace_seconds: float = 20.0
    idle_poll_seconds: float = 0.5


@dataclass(frozen=True)
class HttpConfig:
    """The daemon's HTTP endpoints: feeds, the live feed, health, one-click unsubscribe."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    #: The public base URL used in links (feeds, unsubscribe).
    public_url: str = "http://localhost:8080"
    #: Signs one-click unsubscribe links; empty means a key generated once and kept in
    #: the state directory (set it when more than one machine serves these links).
    secret_key: str = ""


@dataclass(frozen=True)
class ConfirmationConfig:
    """Proving ownership of a destination."""

    ttl_minutes: int = 24 * 60
    max_failures: int = 5
    lockout_minutes: int = 15
    #: Least time between two codes to the same address (whoever asks, however often
    #: the address was removed and added again).
    resend_interval_seconds: int = 60
    #: Codes one address may receive per ``code_window_hours``, from all users together.
    codes_per_address: int = 5
    #: Codes one user may have made per ``code_window_hours``, to all addresses together.
    codes_per_user: int = 10
    code_window_hours: int = 24


@dataclass(frozen=True)
class BotConfig:
    """The IRC side: delivery pacing and how IRC accounts map to Fedora accounts."""

    lines_per_second: float = 1.0
    burst: int = 5
    offline_hold_minutes: int = 24 * 60
    #: "{account}" is the IRC services account; the result is the Fedora account name.
    account_format: str = "{account}"


@dataclass(frozen=True)
class Config:
    """The whole of fmn's configuration."""

    database_url: str = field(default_factory=default_database_url)
    contexts: tuple[str, ...] = CONTEXTS
    admins: tuple[str, ...] = ()
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    push: PushConfig = field(default_factory=PushConfig)
    fcm: FcmConfig = field(default_factory=FcmConfig)
    ownership: OwnershipConfig = field(default_factory=OwnershipConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    confirmation: ConfirmationConfig = field(default_factory=ConfirmationConfig)
    bot: BotConfig = field(default_factory=BotConfig)

    def __post_init__(self) -> None:
        unknown = [c for c in self.contexts if c not in CONTEXTS]
        if unknown:
            raise ConfigError(
                "contexts", f"{unknown[0]!r} is not a context; expected some of {list(CONTEXTS)}"
            )
        if self.delivery.max_attempts < 1:
            raise ConfigError("delivery.max_attempts", "must be at least 1")
        if self.delivery.senders < 1:
            raise ConfigError("delivery.senders", "must be at least 1")
        _check_confirmation(self.confirmation)

    def replace(self, **changes: Any) -> Config:
        """A copy with some top-level values changed (for tests and the CLI)."""
        return dataclasses.replace(self, **changes)


def _check_confirmation(confirmation: ConfirmationConfig) -> None:
    at_least = {
        "ttl_minutes": 1,
        "max_failures": 1,
        "lockout_minutes": 0,
        "resend_interval_seconds": 0,
        "codes_per_address": 1,
        "codes_per_user": 1,
        "code_window_hours": 1,
    }
    for name, low in at_least.items():
        value = getattr(confirmation, name)
        if value < low:
            raise ConfigError(f"confirmation.{name}", f"must be at least {low}, got {value!r}")


T = TypeVar("T")


def _cast(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table, got {value!r}")
        return _build(annotation, value, key)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"{value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return tuple(_cast(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _cast(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(key, f"{value!r} does not fit {annotation}")
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected a whole number, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(key, f"cannot read a value of type {annotation}")  # pragma: no cover


def _build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(dotted, f"unknown key; valid keys here are {sorted(names)}")
        values[key] = _cast(dotted, value, hints[key])
    return cls(**values)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the configuration.

    ``path`` wins; then the ``FMN_CONFIG`` environment variable; with neither, the
    defaults. A named file that does not exist is an error, not a silent default.
    """
    chosen = path if path is not None else os.environ.get(CONFIG_ENV)
    if not chosen:
        return Config()
    file = Path(chosen)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError("(file)", f"cannot read {file}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("(file)", f"{file} is not valid TOML: {exc}") from exc
    return _build(Config, data)
