"""The broker side of fedora-messaging's configuration, as the consumer uses it.

``load_broker_settings`` reads fedora-messaging's own file (``amqp_url``, ``tls``,
``queues``, ``exchanges``, ``bindings``, ``qos``, ``client_properties``) into
``BrokerSettings``, which builds pika's connection parameters the way
fedora-messaging's clients do. Queue ``arguments`` pass through unchanged, so an
operator's quorum queue (``x-queue-type``, ``x-delivery-limit``,
``x-dead-letter-exchange``) is declared as configured.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pika

from fmn_core.errors import ConfigError, FmnError

__all__ = ["BrokerSettings", "BrokerUnavailable", "load_broker_settings"]


class BrokerUnavailable(FmnError):
    """The broker did not answer, or refused the declarations."""


@dataclass(frozen=True)
class BrokerSettings:
    """The parts of fedora-messaging's configuration a consumer needs."""

    amqp_url: str
    exchanges: Mapping[str, Mapping[str, Any]]
    queues: Mapping[str, Mapping[str, Any]]
    bindings: tuple[Mapping[str, Any], ...]
    prefetch_count: int = 1000
    passive_declares: bool = False
    client_properties: Mapping[str, str] = field(default_factory=dict)
    tls: Mapping[str, Any] = field(default_factory=dict)

    def parameters(
        self, *, attempts: int | None = None, timeout: float | None = None
    ) -> pika.URLParameters:
        """Connection parameters: the URL's, plus client properties and TLS."""
        parameters = pika.URLParameters(self.amqp_url)
        parameters.client_properties = dict(self.client_properties)
        if attempts is not None:
            parameters.connection_attempts = attempts
            parameters.retry_delay = 1
        if timeout is not None:
            parameters.socket_timeout = timeout
            parameters.blocked_connection_timeout = max(timeout, 30.0)
        if self.amqp_url.startswith("amqps"):
            parameters.ssl_options = self._ssl_options(parameters.host)
        return parameters

    def _ssl_options(self, host: str) -> pika.SSLOptions:
        # The same TLS set-up as fedora-messaging's own clients.
        cert = self.tls.get("certfile")
        key = self.tls.get("keyfile")
        context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.tls.get("ca_cert"):
            context.load_verify_locations(cafile=self.tls["ca_cert"])
        if cert and key:
            context.load_cert_chain(cert, key)
        return pika.SSLOptions(context, server_hostname=host)

    def masked_url(self) -> str:
        """The broker URL without its password, for logs."""
        parameters = pika.URLParameters(self.amqp_url)
        scheme = "amqps" if self.amqp_url.startswith("amqps") else "amqp"
        return f"{scheme}://{parameters.host}:{parameters.port}/{parameters.virtual_host}"


def load_broker_settings(
    path: str | os.PathLike[str] | None = None, *, prefetch: int | None = None
) -> BrokerSettings:
    """Read fedora-messaging's configuration (``path``, else ``FEDORA_MESSAGING_CONF``).

    A bad file raises ``ConfigError`` naming fedora-messaging's complaint.
    """
    from fedora_messaging import config as fm_config
    from fedora_messaging import exceptions as fm_exceptions

    # fedora-messaging runs on its defaults (a broker on localhost, a throwaway
    # queue) when its file is missing: right for no file named, wrong for a typo.
    named = path if path is not None else os.environ.get("FEDORA_MESSAGING_CONF")
    if named:
        _check_readable(str(named))
    try:
        if path is not None:
            # A fresh LazyConfig: loading into the global one merges with what it held.
            conf: Mapping[str, Any] = fm_config.LazyConfig().load_config(str(path))
        else:
            conf = fm_config.conf if fm_config.conf.loaded else fm_config.conf.load_config()
    except fm_exceptions.ConfigurationException as exc:
        raise ConfigError("fedora-messaging", exc.message) from exc
    scheme = str(conf["amqp_url"]).partition("://")[0].lower()
    if scheme not in ("amqp", "amqps"):
        raise ConfigError(
            "fedora-messaging",
            f"amqp_url must be an amqp:// or amqps:// URL, not {scheme or 'no scheme'}://",
        )
    bindings = conf["bindings"]
    if isinstance(bindings, Mapping):
        bindings = [bindings]
    qos = conf.get("qos") or {}
    count = prefetch if prefetch is not None else int(qos.get("prefetch_count") or 0)
    return BrokerSettings(
        amqp_url=conf["amqp_url"],
        exchanges=dict(conf.get("exchanges") or {}),
        queues=dict(conf.get("queues") or {}),
        bindings=tuple(bindings),
        # fedora-messaging's default of 10 is meant for one-at-a-time callbacks.
        prefetch_count=max(count, 1000) if prefetch is None else count,
        passive_declares=bool(conf.get("passive_declares")),
        client_properties=dict(conf.get("client_properties") or {}),
        tls=dict(conf.get("tls") or {}),
    )


def _check_readable(path: str) -> None:
    """Raise ``ConfigError`` unless ``path`` is a file this process can read."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(
            "fedora-messaging",
            f"cannot read {path}: {exc.strerror}; give fedora-messaging's TOML file "
            "(--fedora-messaging-config or FEDORA_MESSAGING_CONF)",
        ) from None
