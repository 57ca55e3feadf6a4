"""fmn's configuration: one TOML file loaded into one frozen, validated object.

Every setting has a default that works on a laptop (SQLite in the user's state
directory, SMTP on localhost). A bad or unknown key raises ``ConfigError`` naming
the key, the value and what was expected, before anything connects: the types,
and also what only makes sense together (the database's dialect and driver, the
shape of ``bot.account_format``, ``fcm.project`` with ``fcm.keyfile``). Secrets
(passwords, keys) are left out of ``repr()``, so a logged configuration shows none.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import string
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import platformdirs
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError

__all__ = [
    "CONTEXTS",
    "DATABASE_DRIVERS",
    "MAX_RETENTION_DAYS",
    "AccountsConfig",
    "BotConfig",
    "Config",
    "ConfirmationConfig",
    "DefaultsConfig",
    "DeliveryConfig",
    "FcmConfig",
    "GatewayConfig",
    "HttpConfig",
    "IngestConfig",
    "MatrixConfig",
    "OwnershipConfig",
    "PushConfig",
    "RetentionConfig",
    "SmtpConfig",
    "default_database_url",
    "load_config",
]

#: Every delivery context fmn knows; the operator chooses which are offered.
CONTEXTS: tuple[str, ...] = (
    "email",
    "irc",
    "matrix",
    "push",
    "android",
    "desktop",
    "live",
    "rss",
)

CONFIG_ENV = "FMN_CONFIG"

#: The databases fmn stores its data in: SQLAlchemy backend -> the driver it uses.
DATABASE_DRIVERS: dict[str, str] = {"sqlite": "pysqlite", "postgresql": "psycopg"}


def default_database_url() -> str:
    """The embedded default: a SQLite file in the user's state directory."""
    state = Path(platformdirs.user_state_dir("fmn"))
    return f"sqlite:///{state / 'fmn.sqlite'}"


def _check_range(
    key: str, value: float, low: float, high: float, *, above: bool = False, hint: str = ""
) -> None:
    """Raise ``ConfigError`` for ``key`` unless ``low <= value <= high`` (``low < value``
    with ``above``); NaN and infinities are never in range."""
    inside = (low < value if above else low <= value) and value <= high
    if not inside:
        bounds = f"more than {low} and at most {high}" if above else f"from {low} to {high}"
        raise ConfigError(key, f"must be {bounds}{hint}, got {value!r}")


@dataclass(frozen=True)
class SmtpConfig:
    """The operator's outgoing mail server; users only ever supply an address."""

    host: str = "localhost"
    port: int = 25
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str = ""
    password: str = field(default="", repr=False)
    from_address: str = "notifications@fedoraproject.org"
    from_name: str = "Fedora Notifications"
    timeout_seconds: float = 15.0

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ConfigError("smtp.host", "is empty; give the mail server's host name")
        # These go into every mail's header and SMTP commands: a line break in
        # from_name would add a header (a Bcc) to every notification sent.
        for key in ("host", "username", "from_address", "from_name"):
            if any(ord(c) < 32 or ord(c) == 127 for c in getattr(self, key)):
                raise ConfigError(
                    f"smtp.{key}", "contains control characters (a line break?); remove them"
                )
        local, at, domain = self.from_address.rpartition("@")
        if not at or not local or not domain or any(c.isspace() for c in self.from_address):
            raise ConfigError(
                "smtp.from_address",
                f"{self.from_address!r} is not an e-mail address; give one such as "
                "notifications@example.org",
            )
        _check_range("smtp.port", self.port, 1, 65535)
        _check_range("smtp.timeout_seconds", self.timeout_seconds, 0, 300, above=True)


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
    #: For connecting and for each read; a whole send (a plugin may make several
    #: requests) ends after three times this, however the server drips its answer.
    timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        _check_range("push.timeout_seconds", self.timeout_seconds, 0, 300, above=True)


@dataclass(frozen=True)
class FcmConfig:
    """Firebase Cloud Messaging, for Android apps with their own Firebase project."""

    project: str = ""
    keyfile: str = ""

    def __post_init__(self) -> None:
        # One without the other would accept devices' tokens and never deliver to them.
        if bool(self.project) != bool(self.keyfile):
            missing = "fcm.keyfile" if self.project else "fcm.project"
            raise ConfigError(
                missing, "fcm.project and fcm.keyfile go together: set both, or neither"
            )


@dataclass(frozen=True)
class OwnershipConfig:
    """Where package ownership comes from (dist-git's bulk owner-alias JSON)."""

    #: A URL or a file path; empty disables ownership rules' data (they match nothing).
    source: str = ""
    refresh_minutes: int = 60

    def __post_init__(self) -> None:
        _check_range("ownership.refresh_minutes", self.refresh_minutes, 1, 10_080, hint=" (a week)")


@dataclass(frozen=True)
class AccountsConfig:
    """The account directory: who exists, their groups and profiles (see fmn_core.accounts)."""

    #: "local" (the laptop default), "fasjson" (Fedora's) or "fas2" (python-fedora).
    provider: Literal["local", "fasjson", "fas2"] = "local"
    fasjson_url: str = "https://fasjson.fedoraproject.org/"
    #: "gssapi": Kerberos (Fedora's FASJSON requires it; needs fmn[fasjson]);
    #: "none": plain HTTP(S), for a FASJSON-compatible service behind other access control.
    fasjson_auth: Literal["gssapi", "none"] = "gssapi"
    fas_url: str = "https://admin.fedoraproject.org/accounts/"
    fas_username: str = ""
    fas_password: str = field(default="", repr=False)
    timeout_seconds: float = 10.0
    #: How long an answer is reused; the bus's account and group messages drop it sooner.
    cache_seconds: float = 900.0

    def __post_init__(self) -> None:
        if not self.fasjson_url.lower().startswith(("http://", "https://")):
            raise ConfigError("accounts.fasjson_url", f"{self.fasjson_url!r} is not an http(s) URL")
        if not 0 < self.timeout_seconds <= 300:
            raise ConfigError("accounts.timeout_seconds", "must be more than 0 and at most 300")
        if not 0 <= self.cache_seconds <= 7 * 24 * 3600:
            raise ConfigError("accounts.cache_seconds", "must be from 0 to 604800 (a week)")


@dataclass(frozen=True)
class DeliveryConfig:
    """How the daemon sends and retries."""

    max_attempts: int = 8
    backoff_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0
    batch_size: int = 200
    #: Sends in flight at once. A send holds no database connection, only (for
    #: e-mail) one of the SMTP sessions kept open, so a slot mostly waits on the
    #: mail server's replies: with 4, a loaded host fell behind at 500 mails/s.
    senders: int = 16
    claim_lease_seconds: float = 300.0
    #: Above this many notifications per user and context per hour, collapse into a digest.
    rate_limit_per_hour: int = 120
    shutdown_grace_seconds: float = 20.0
    idle_poll_seconds: float = 0.5

    def __post_init__(self) -> None:
        # Lower bounds of max_attempts and senders: Config.__post_init__.
        for key, high in (("max_attempts", 1000), ("senders", 1000)):
            value = getattr(self, key)
            if value > high:
                raise ConfigError(f"delivery.{key}", f"must be at most {high}, got {value!r}")
        # 0 would claim nothing and spin; a poll of 0 would spin too.
        _check_range("delivery.batch_size", self.batch_size, 1, 10_000)
        _check_range("delivery.idle_poll_seconds", self.idle_poll_seconds, 0.01, 60)
        _check_range("delivery.backoff_seconds", self.backoff_seconds, 0, 86_400)
        _check_range("delivery.backoff_max_seconds", self.backoff_max_seconds, 0, 7 * 86_400)
        # A lease shorter than a send would hand a row being sent to another sender.
        _check_range("delivery.claim_lease_seconds", self.claim_lease_seconds, 1, 86_400)
        if self.rate_limit_per_hour < 1:
            raise ConfigError(
                "delivery.rate_limit_per_hour",
                f"must be at least 1, got {self.rate_limit_per_hour!r}",
            )
        _check_range("delivery.shutdown_grace_seconds", self.shutdown_grace_seconds, 0, 3600)


#: A hundred years: beyond it, ``retention.days`` would mean "for ever" anyway.
MAX_RETENTION_DAYS = 36_500


@dataclass(frozen=True)
class RetentionConfig:
    """How long stored bus messages and finished notifications are kept (``fmn_core.retention``)."""

    #: Sent and given-up notifications, bus messages no waiting notification needs, and
    #: dead messages are deleted this many days after their time; 0 keeps them for ever.
    #: Feeds, ``explain`` and filter previews reach back this far.
    days: int = 30
    #: Rows deleted per transaction: a first pass over a large backlog holds no lock long.
    batch_rows: int = 5000
    #: Minutes between the daemon's passes (the first runs once it has started).
    interval_minutes: int = 60

    def __post_init__(self) -> None:
        if not 0 <= self.days <= MAX_RETENTION_DAYS:
            raise ConfigError(
                "retention.days", f"must be from 0 (keep for ever) to {MAX_RETENTION_DAYS}"
            )
        if not 1 <= self.batch_rows <= 100_000:
            raise ConfigError("retention.batch_rows", "must be from 1 to 100000")
        if not 1 <= self.interval_minutes <= 10_080:
            raise ConfigError("retention.interval_minutes", "must be from 1 to 10080 (a week)")


@dataclass(frozen=True)
class GatewayConfig:
    """The preference gateway (the TUI's way to the database)."""

    #: How long one request waits for a database another change has locked before the
    #: person is told it is busy (SQLite's busy timeout, PostgreSQL's lock_timeout). A
    #: person at the keyboard should not wait the daemons' 30 seconds.
    busy_timeout_seconds: float = 3.0

    def __post_init__(self) -> None:
        if not 0 < self.busy_timeout_seconds <= 60:
            raise ConfigError("gateway.busy_timeout_seconds", "must be more than 0 and at most 60")


@dataclass(frozen=True)
class IngestConfig:
    """Bounds on bus messages, checked before they are parsed, and when one is given up.

    The defaults are far above any real Fedora message (the corpus's largest body is
    76 kB, its deepest is nested 7 levels, its largest headers are 1.6 kB and flat),
    and far below what hurts the daemon.
    """

    #: A body longer than this (bytes, as it arrives) is refused unread.
    max_body_bytes: int = 4 * 1024 * 1024
    #: JSON nested deeper than this (objects and arrays) is refused before decoding.
    max_depth: int = 64
    #: AMQP headers (as JSON) longer than this are refused.
    max_header_bytes: int = 64 * 1024
    #: AMQP header tables nested deeper than this are refused (pika's decoder stops there).
    max_header_depth: int = 16
    #: A message the database keeps refusing goes to the dead messages after this many tries.
    max_attempts: int = 3
    #: The dead-message table keeps at most this much of each delivery (bytes).
    dead_copy_bytes: int = 4 * 1024 * 1024 + 64 * 1024
    #: The consumer stores at most this many messages per transaction (fewer when
    #: fewer are waiting). Each batch costs a few fixed statements (messages, outbox,
    #: filter states, the users a Fedora Accounts message names), so larger batches
    #: cost less CPU per message. The consumer asks the broker for a prefetch of at
    #: least two batches per writer, so that the next batch arrives while one is written.
    batch_size: int = 500
    #: Bodies received and not yet acked, in bytes, at most (about): past it the
    #: consumer stops taking deliveries until its writers have committed half of
    #: them. The prefetch bounds their number, this their size: 2,000 bodies just
    #: under ``max_body_bytes`` would otherwise be 8 GiB in the process at once.
    max_inflight_bytes: int = 256 * 1024 * 1024
    #: Threads that store batches side by side (PostgreSQL; SQLite takes one). While
    #: one waits for the database, another matches and sends its own batch; each
    #: has a connection of its own, and the consumer asks the broker for a prefetch
    #: of at least ``2 * batch_size * writers``.
    writers: int = 2


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
    secret_key: str = field(default="", repr=False)
    #: Open connections the server holds at once; more are closed as they arrive. Keep it
    #: well below the unit's ``LimitNOFILE`` (8192 in fmn-daemon.service): the broker,
    #: database and SMTP connections need descriptors too.
    max_connections: int = 1024
    #: Open connections from one client address; 0 turns the check off (behind a reverse
    #: proxy every connection comes from the proxy: let the proxy limit per client).
    max_connections_per_ip: int = 64
    #: A request's head (request line and headers) must arrive within this long of the
    #: connection opening, or the connection is closed (slowloris).
    header_timeout_seconds: float = 10.0
    #: An idle kept-alive connection is closed after this long; the next request's head
    #: must also be complete by then.
    keepalive_timeout_seconds: float = 15.0
    #: A request body (the one-click unsubscribe POST) must arrive within this long.
    body_timeout_seconds: float = 10.0
    #: A response write (a live event, a heartbeat) that cannot be sent within this long
    #: closes the connection: a client that stopped reading holds nothing for long.
    send_timeout_seconds: float = 30.0
    #: Live-feed clients (WebSocket and SSE together) at once, in all, and per token.
    max_live_clients: int = 512
    max_live_clients_per_token: int = 8
    #: Largest request body accepted, in bytes.
    max_body_bytes: int = 16 * 1024
    #: Accept errors (out of descriptors) are logged at most once per this many seconds,
    #: with a count of those not logged.
    accept_error_log_seconds: float = 60.0
    #: Signed action links in notifications ("mute this package") work this many days.
    action_link_days: int = 30

    def __post_init__(self) -> None:
        if not 1 <= self.action_link_days <= 365:
            raise ConfigError(
                "http.action_link_days", f"must be from 1 to 365, got {self.action_link_days}"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError("http.port", f"{self.port} is not a TCP port (0-65535)")
        for key in ("max_connections", "max_live_clients", "max_live_clients_per_token"):
            if getattr(self, key) < 1:
                raise ConfigError(f"http.{key}", f"must be at least 1, got {getattr(self, key)}")
        if self.max_connections_per_ip < 0:
            raise ConfigError(
                "http.max_connections_per_ip",
                f"must be 0 (no limit) or more, got {self.max_connections_per_ip}",
            )
        if self.max_body_bytes < 1024:
            raise ConfigError(
                "http.max_body_bytes", f"must be at least 1024, got {self.max_body_bytes}"
            )
        for key in (
            "header_timeout_seconds",
            "keepalive_timeout_seconds",
            "body_timeout_seconds",
            "send_timeout_seconds",
            "accept_error_log_seconds",
        ):
            value = getattr(self, key)
            if not 0 < value <= 3600:
                raise ConfigError(
                    f"http.{key}", f"must be more than 0 and at most 3600, got {value}"
                )


@dataclass(frozen=True)
class ConfirmationConfig:
    """Proving ownership of a destination."""

    ttl_minutes: int = 24 * 60
    max_failures: int = 5
    lockout_minutes: int = 15
    #: Least time between two codes to the same address (whoever asks, however often
    #: the address was removed and added again).
    resend_interval_seconds: int = 60
    #: Codes one address may receive per ``code_window_hours``, from all users together:
    #: the bound on what fmn mails a stranger's inbox on others' say-so.
    codes_per_address: int = 10
    #: Of those, the codes one user may ask for to one address per window. Less than
    #: ``codes_per_address``, so nobody can use up an address's codes and keep its
    #: owner from confirming it; unset, :attr:`address_share` is 3, or less to stay
    #: below a lower ``codes_per_address``.
    codes_per_address_per_user: int | None = None
    #: Codes one user may have made per ``code_window_hours``, to all addresses together.
    codes_per_user: int = 10
    code_window_hours: int = 24

    @property
    def address_share(self) -> int:
        """The codes one user may ask for to one address per window."""
        if self.codes_per_address_per_user is not None:
            return self.codes_per_address_per_user
        return max(1, min(3, self.codes_per_address - 1))

    @property
    def counted_for(self) -> dt.timedelta:
        """How long a code made counts for a limit (older records count for nothing)."""
        return max(
            dt.timedelta(hours=self.code_window_hours),
            dt.timedelta(seconds=self.resend_interval_seconds),
        )


@dataclass(frozen=True)
class BotConfig:
    """The IRC side: delivery pacing and how IRC accounts map to Fedora accounts."""

    lines_per_second: float = 1.0
    burst: int = 5
    offline_hold_minutes: int = 24 * 60
    #: Who an IRC user is. "directory" (the default): the Fedora account whose profile
    #: lists the sender's services account. "services-account": the services account
    #: IS the Fedora account (through ``account_format``); only for networks whose
    #: services accounts are Fedora's. That mode never grants admin rights.
    identity: Literal["directory", "services-account"] = "directory"
    #: IRC server names that mean this bot's network in a profile (``irc://server/nick``);
    #: ``irc:/nick`` (no server) always does.
    irc_servers: tuple[str, ...] = ("irc.libera.chat", "libera.chat")
    #: With ``identity = "services-account"``: "{account}" is the IRC services account;
    #: the result is the Fedora account name.
    account_format: str = "{account}"

    def __post_init__(self) -> None:
        _check_range("bot.lines_per_second", self.lines_per_second, 0, 1000, above=True)
        _check_range("bot.burst", self.burst, 1, 1000)
        _check_range(
            "bot.offline_hold_minutes", self.offline_hold_minutes, 0, 525_600, hint=" (a year)"
        )
        problem = _account_format_problem(self.account_format)
        if problem:
            raise ConfigError("bot.account_format", f"{self.account_format!r} {problem}")


#: A lowercase Matrix server name (a DNS name, with an optional port).
_MATRIX_SERVER_RE = re.compile(r"^[a-z0-9.-]{1,253}(:[0-9]{1,5})?$")


@dataclass(frozen=True)
class MatrixConfig:
    """The ``matrix`` context: ONE bot account of the operator sends users direct messages.

    Empty ``user_id`` (the default) means no Matrix bot: the context refuses Matrix
    IDs with a message saying so. The bot logs in once (with ``access_token``, or
    with ``password`` when no token is given) and keeps that login; it only ever
    talks to ``homeserver_url`` (no ``.well-known`` discovery). Messages are paced
    like the IRC bot's: ``lines_per_second`` across all users, ``burst`` at once,
    and a user's lines above ``burst`` in one round collapse into one line.
    """

    #: The client-server API of the bot's homeserver, e.g. "https://matrix.example.org".
    homeserver_url: str = ""
    #: The bot's Matrix ID, e.g. "@fmn:fedora.im".
    user_id: str = ""
    access_token: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    lines_per_second: float = 1.0
    burst: int = 5
    timeout_seconds: float = 15.0
    #: The homeserver whose users ARE the directory's accounts (Fedora's fedora.im
    #: logs people in with their Fedora account): ``@<account>:<this>`` is the
    #: account's own, so it needs no confirmation code. "" trusts no server.
    accounts_server: str = "fedora.im"

    @property
    def configured(self) -> bool:
        """Whether the operator set up a Matrix bot (the context can deliver)."""
        return bool(self.user_id)

    def __post_init__(self) -> None:
        if not 0 < self.lines_per_second <= 100:
            raise ConfigError(
                "matrix.lines_per_second",
                f"must be more than 0 and at most 100, got {self.lines_per_second}",
            )
        if not 1 <= self.burst <= 1000:
            raise ConfigError("matrix.burst", f"must be from 1 to 1000, got {self.burst}")
        if not 0 < self.timeout_seconds <= 300:
            raise ConfigError("matrix.timeout_seconds", "must be more than 0 and at most 300")
        if self.accounts_server and not _MATRIX_SERVER_RE.match(self.accounts_server):
            raise ConfigError(
                "matrix.accounts_server",
                f"{self.accounts_server!r} is not a lowercase server name like fedora.im "
                '(or "" to trust none)',
            )
        if not (self.user_id or self.homeserver_url or self.access_token or self.password):
            return
        if not self.user_id:
            raise ConfigError(
                "matrix.user_id", "the Matrix bot needs its Matrix ID (@fmn:example.org)"
            )
        # Imported here: destinations imports this module.
        from .destinations import check_matrix_id
        from .errors import InvalidDestination

        try:
            check_matrix_id(self.user_id)
        except InvalidDestination as exc:
            raise ConfigError("matrix.user_id", f"{self.user_id!r}: {exc}") from None
        if not self.homeserver_url.lower().startswith(("http://", "https://")):
            raise ConfigError(
                "matrix.homeserver_url",
                f"{self.homeserver_url!r} is not an http(s) URL; give the bot's homeserver's "
                "client API, e.g. https://matrix.example.org",
            )
        if any(c in self.homeserver_url for c in "?#@ ") or len(self.homeserver_url) > 300:
            raise ConfigError(
                "matrix.homeserver_url",
                "give only scheme, host, port and path (no user info, query or fragment)",
            )
        if not (self.access_token or self.password):
            raise ConfigError(
                "matrix.access_token",
                "the Matrix bot needs matrix.access_token or matrix.password to log in",
            )


def _account_format_problem(pattern: str) -> str | None:
    """Why ``pattern`` can't map an IRC account to a Fedora account, or ``None``."""
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(pattern)
            if name is not None
        ]
    except ValueError as exc:
        return f"is not a format string ({exc}); write {{account}} where the IRC account goes"
    if not fields:
        return "must contain {account}, where the IRC account goes"
    if any(field != ("account", "", None) for field in fields):
        return "may use only a plain {account}; write {{ and }} for literal braces"
    return None


@dataclass(frozen=True)
class DefaultsConfig:
    """Filters every new account gets on first contact (first TUI start, first bot
    command, first import); existing accounts never get them. Empty: none."""

    #: ``"template:context"`` pairs, e.g. ``["packager:email"]``: the template's filters
    #: are copied into that context, as ``use_template`` would (visible, editable).
    templates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for index, pair in enumerate(self.templates):
            name, colon, context = pair.partition(":")
            if not colon or not name.strip() or context.strip() not in CONTEXTS:
                raise ConfigError(
                    f"defaults.templates[{index}]",
                    f"expected 'template:context' with a context of {list(CONTEXTS)}, got {pair!r}",
                )


@dataclass(frozen=True)
class Config:
    """The whole of fmn's configuration."""

    database_url: str = field(default_factory=default_database_url)
    contexts: tuple[str, ...] = CONTEXTS
    #: Fedora account names that are fmn administrators (see fmn_core.accounts.is_admin).
    admins: tuple[str, ...] = ()
    #: A Fedora group whose members are fmn administrators ("" for none).
    admin_group: str = ""
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    push: PushConfig = field(default_factory=PushConfig)
    fcm: FcmConfig = field(default_factory=FcmConfig)
    ownership: OwnershipConfig = field(default_factory=OwnershipConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    confirmation: ConfirmationConfig = field(default_factory=ConfirmationConfig)
    bot: BotConfig = field(default_factory=BotConfig)
    matrix: MatrixConfig = field(default_factory=MatrixConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    defaults: DefaultsConfig = field(default_factory=DefaultsConfig)

    def __post_init__(self) -> None:
        problem = _database_problem(self.database_url)
        if problem:
            raise ConfigError("database_url", problem)
        unknown = [c for c in self.contexts if c not in CONTEXTS]
        if unknown:
            raise ConfigError(
                "contexts", f"{unknown[0]!r} is not a context; expected some of {list(CONTEXTS)}"
            )
        if self.delivery.max_attempts < 1:
            raise ConfigError("delivery.max_attempts", "must be at least 1")
        if self.delivery.senders < 1:
            raise ConfigError("delivery.senders", "must be at least 1")
        _check_ingest(self.ingest)
        retention = self.retention.days
        if retention and self.http.action_link_days > retention:
            # The links act on a notification; pruned, it would answer "gone".
            raise ConfigError(
                "http.action_link_days",
                f"{self.http.action_link_days} outlives retention.days ({retention}): links "
                "would point at pruned notifications; lower it or keep notifications longer",
            )
        _check_confirmation(self.confirmation)
        for index, pair in enumerate(self.defaults.templates):
            context = pair.partition(":")[2].strip()
            if context not in self.contexts:
                raise ConfigError(
                    f"defaults.templates[{index}]", f"{context!r} is not offered (contexts)"
                )

    def replace(self, **changes: Any) -> Config:
        """A copy with some top-level values changed (for tests and the CLI)."""
        return dataclasses.replace(self, **changes)


def _database_problem(url: str) -> str | None:
    """Why fmn can't store its data at ``url``, or ``None``; the message never shows a password."""
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        return "contains control characters; write the URL on one line, without them"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "is not a database URL; expected sqlite:///path or postgresql+psycopg://host/db"
    backend = parsed.get_backend_name()
    try:
        driver = parsed.get_driver_name()
    except ArgumentError:  # SQLAlchemy looks the dialect up: an unknown one is no module
        driver = parsed.drivername
    if DATABASE_DRIVERS.get(backend) != driver:
        return (
            f"fmn stores its data in SQLite (sqlite:///path) or PostgreSQL "
            f"(postgresql+psycopg://host/db), not {parsed.drivername}"
        )
    if backend == "sqlite" and (
        parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"
    ):
        # Each connection would get an empty database of its own, gone when it closes.
        return "is an in-memory SQLite database, which keeps nothing; give a file: sqlite:///path"
    return None


def _check_ingest(ingest: IngestConfig) -> None:
    minimums = {
        "max_body_bytes": 1024,
        "max_depth": 2,
        "max_header_bytes": 256,
        "max_header_depth": 1,
        "max_attempts": 1,
        "dead_copy_bytes": 1024,
        "batch_size": 1,
        "writers": 1,
        "max_inflight_bytes": 1024 * 1024,
    }
    for name, minimum in minimums.items():
        value = getattr(ingest, name)
        if value < minimum:
            raise ConfigError(f"ingest.{name}", f"{value!r} is too small; at least {minimum}")
    if ingest.batch_size > 10_000:
        raise ConfigError("ingest.batch_size", f"{ingest.batch_size!r} is too large; at most 10000")
    if ingest.writers > 8:
        raise ConfigError(
            "ingest.writers", f"{ingest.writers!r} is too many; at most 8 (each holds a connection)"
        )
    # Past this, Python's own recursion limit would be reached while decoding.
    for name in ("max_depth", "max_header_depth"):
        value = getattr(ingest, name)
        if value > 500:
            raise ConfigError(f"ingest.{name}", f"{value!r} is too deep; at most 500")


def _check_confirmation(confirmation: ConfirmationConfig) -> None:
    # The upper bounds keep every window a date can hold (and a human would choose).
    bounds = {
        "ttl_minutes": (1, 43_200),
        "max_failures": (1, 1000),
        "lockout_minutes": (0, 43_200),
        "resend_interval_seconds": (0, 86_400),
        "codes_per_address": (1, 10_000),
        "codes_per_user": (1, 10_000),
        "code_window_hours": (1, 8760),
    }
    for name, (low, high) in bounds.items():
        value = getattr(confirmation, name)
        if value < low:
            raise ConfigError(f"confirmation.{name}", f"must be at least {low}, got {value!r}")
        if value > high:
            raise ConfigError(f"confirmation.{name}", f"must be at most {high}, got {value!r}")
    share = confirmation.codes_per_address_per_user
    if share is not None:
        # At the cap, one user's requests could keep the address's owner from a code.
        _check_range(
            "confirmation.codes_per_address_per_user",
            share,
            1,
            max(1, confirmation.codes_per_address - 1),
            hint=" (less than confirmation.codes_per_address, so that one user can't use "
            "up an address's codes)",
        )


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
