"""Push, desktop and Android notifications through users' Apprise URLs, and FCM.

A user's push URL was checked when it was saved; it is checked again here at
send time (``fmn_core.push_urls.check_push_url``), because the operator's
allowed schemes may have changed since, and the host it names is resolved again
and every address it resolves to must be public (``is_public_address``) unless
``push.allow_private_hosts`` is set. HTTP redirects are never followed: the
plugin's ``redirects`` switch (which every HTTP plugin fmn allows passes to
``requests`` as ``allow_redirects``) is forced off, whatever the URL says.

Matrix homeserver discovery is forced off too (Apprise's ``discovery`` switch,
``?discovery=no``): with it, a ``matrixs://`` plugin fetches the host's
``.well-known/matrix/client`` and then logs in, with the user's password, at
whatever host that answer names (loopback included), which no check here saw.
With it off, the plugin only ever talks to the host in the URL, which is checked.

A confirmation code (``Rendered.confirmation``) goes to a URL nobody has proved
yet, so it is sent plainly: the URL's request options (the json/xml/form
plugins' ``method``, ``+header``, ``-param`` and ``:payload``) are dropped, and a
stranger's choice of method and headers never reaches anybody's server.

Known limit: Apprise's plugins resolve the host again when they connect, so a
name whose DNS answer changes within the second between the check and the
connection (DNS rebinding) can still reach a private address. Closing that
window needs an egress firewall or proxy for the daemon, which operators of
exposed deployments should have anyway.

Android: an Apprise URL (ntfy/UnifiedPush...) goes the same way as push. A bare
Firebase device token (``fcm:TOKEN``) is sent through Apprise's ``fcm://``
plugin with the operator's Firebase project and service-account key, and only
when ``[fcm] project`` is set.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

from fmn_core.config import FcmConfig, PushConfig
from fmn_core.destinations import FCM_PREFIX, check_fcm_token, mask_address
from fmn_core.errors import InvalidDestination
from fmn_core.masking import scrub_error
from fmn_core.push_urls import (
    FIXED_ENDPOINT_SCHEMES,
    Resolver,
    address_problem,
    check_push_url,
)
from fmn_core.rendering import Rendered

from . import TransportError, TransportRefused

__all__ = ["FCM_PREFIX", "AndroidTransport", "FcmTransport", "PushTransport", "SendThreads"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Send threads of a transport built without ``delivery.senders`` (tests, tools).
DEFAULT_SEND_THREADS = 16


# Apprise is imported by the first push send, not when the senders start: ~2 MiB of
# the daemon's memory that a deployment without push users never needs.


def plugin_for(url: str, *, plain: bool = False) -> Any:
    """Apprise's plugin for ``url`` (see ``_apprise.plugin_for``)."""
    from ._apprise import plugin_for as apprise_plugin

    return apprise_plugin(url, plain=plain)


#: A whole send's deadline, in ``push.timeout_seconds`` (each connect and read has one).
SEND_DEADLINE_TIMEOUTS = 3


def notify_once(target: str | Any, *, title: str, body: str, push: PushConfig) -> str | None:
    """One Apprise send (see ``_apprise.notify_once``), over by its deadline."""
    from ._apprise import notify_once as apprise_notify

    return apprise_notify(
        target,
        title=title,
        body=body,
        deadline_seconds=push.timeout_seconds * SEND_DEADLINE_TIMEOUTS,
    )


class SendThreads:
    """The threads push sends block in: the transport's own, never the event loop's.

    A send to a server that drips its answer blocks its thread until the send's
    deadline. In the loop's shared threads (``asyncio.to_thread``: 6 on two cores)
    six such sends would make every claim, outcome commit and web request of the
    daemon wait behind them, and queue later sends, whose deadline only starts
    once they get a thread. Here there is a thread for every send slot (and for
    the confirmation codes sent beside them), started as needed.
    """

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in one of the threads, in a copy of this context
        (as ``asyncio.to_thread`` does)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.size, thread_name_prefix="fmn-push")
            pool = self._pool
        call = functools.partial(contextvars.copy_context().run, function, *args)
        return await asyncio.get_running_loop().run_in_executor(pool, call)

    def close(self) -> None:
        """Let the threads end once their sends are over; the next send starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


class PushTransport:
    """Sends through a user's Apprise URL, after checking where it leads."""

    def __init__(
        self,
        push: PushConfig,
        *,
        resolver: Resolver | None = None,
        threads: int = DEFAULT_SEND_THREADS,
    ) -> None:
        self.push = push
        self.resolver: Resolver = resolver if resolver is not None else socket.getaddrinfo
        self.threads = SendThreads(threads)

    def close_idle(self) -> int:
        """Nothing to close between sends (``Pooled``): no connection is kept."""
        return 0

    def close(self) -> None:
        """The daemon is stopping, or a drain ended (``Pooled``)."""
        self.threads.close()

    async def send(self, destination: str, rendered: Rendered) -> None:
        """Push ``rendered`` to the URL ``destination``."""
        try:
            url = check_push_url(destination, self.push, resolve=False)
        except InvalidDestination as exc:
            raise TransportRefused(str(exc)) from None
        await self.threads.run(self._send, url, rendered)

    def _plugin(self, url: str, *, plain: bool = False) -> Any:
        plugin = plugin_for(url, plain=plain)
        if plugin is None:
            raise TransportRefused("Apprise cannot use this push URL; set it again.")
        # Whatever ?redirect= the URL carries: a redirect could lead anywhere.
        plugin.redirects = False
        # Whatever ?discovery= says: discovery would send the password to a host
        # named by the server's answer, unchecked (Matrix's .well-known).
        if hasattr(plugin, "discovery"):
            plugin.discovery = False
        plugin.socket_connect_timeout = self.push.timeout_seconds
        plugin.socket_read_timeout = self.push.timeout_seconds
        return plugin

    def _connect_host(self, plugin: Any) -> str | None:
        """The host the plugin will connect to, or None for a fixed public API."""
        schema = str(getattr(plugin, "schema", "")).lower()
        if schema in FIXED_ENDPOINT_SCHEMES:
            return None
        if getattr(plugin, "mode", None) == "cloud":  # ntfy's public ntfy.sh
            return None
        host = getattr(plugin, "host", None)
        return str(host) if host else None

    def check_resolved(self, host: str) -> None:
        """Refuse a host that resolves to any non-public address."""
        if self.push.allow_private_hosts:
            return
        try:
            results = self.resolver(host, None)
        except (OSError, UnicodeError) as exc:
            raise TransportError(
                f"the push server's name {host} does not resolve ({exc})"
            ) from None
        if not results:
            raise TransportError(f"the push server's name {host} does not resolve")
        for result in results:
            address = str(result[-1][0])
            problem = address_problem(address)
            if problem is not None:
                raise TransportRefused(
                    f"the push server {host} resolves to {problem}; fmn only sends to "
                    "public servers. Set a push URL on a public server."
                )

    def _send(self, url: str, rendered: Rendered) -> None:
        plugin = self._plugin(url, plain=rendered.confirmation)
        host = self._connect_host(plugin)
        if host is not None:
            self.check_resolved(host)
        problem = notify_once(plugin, title=rendered.subject, body=rendered.short, push=self.push)
        if problem is not None:
            raise TransportError(
                scrub_error(
                    f"the push service did not take the message ({problem})", [url], context="push"
                )
            )
        log.debug("pushed to %s", mask_address("push", url))


class FcmTransport:
    """Firebase Cloud Messaging with the operator's Firebase project."""

    def __init__(
        self, fcm: FcmConfig, push: PushConfig, threads: SendThreads | None = None
    ) -> None:
        self.fcm = fcm
        self.push = push
        self.threads = threads if threads is not None else SendThreads(DEFAULT_SEND_THREADS)

    def url_for(self, token: str) -> str:
        """Apprise's ``fcm://`` URL for a device token (operator settings only)."""
        return (
            f"fcm://{quote(self.fcm.project, safe='')}/{quote(token, safe='')}"
            f"?mode=oauth2&keyfile={quote(self.fcm.keyfile, safe='')}"
        )

    async def send(self, destination: str, rendered: Rendered) -> None:
        """Send to the device ``destination`` (``fcm:TOKEN`` or a bare token)."""
        if not self.fcm.project or not self.fcm.keyfile:
            raise TransportRefused(
                "This server does not deliver to Firebase (FCM); use an ntfy or UnifiedPush URL."
            )
        address = destination if destination.startswith(FCM_PREFIX) else FCM_PREFIX + destination
        try:
            token = check_fcm_token(address, self.fcm).removeprefix(FCM_PREFIX)
        except InvalidDestination as error:
            raise TransportRefused(str(error)) from error
        await self.threads.run(self._send, self.url_for(token), rendered)

    def _send(self, url: str, rendered: Rendered) -> None:
        plugin = plugin_for(url)
        if plugin is None:
            raise TransportError(
                "the server's Firebase settings are not usable (fcm.project, fcm.keyfile)"
            )
        plugin.redirects = False
        plugin.socket_connect_timeout = self.push.timeout_seconds
        plugin.socket_read_timeout = self.push.timeout_seconds
        problem = notify_once(plugin, title=rendered.subject, body=rendered.short, push=self.push)
        if problem is not None:
            raise TransportError(
                scrub_error(f"Firebase did not take the message ({problem})", [url])
            )


class AndroidTransport:
    """Android: Apprise URLs like push; ``fcm:`` device tokens through FCM."""

    def __init__(self, push: PushTransport, fcm: FcmConfig, push_config: PushConfig) -> None:
        self.push = push
        # The push transport's threads: both kinds of Android send count against them.
        self.fcm = FcmTransport(fcm, push_config, push.threads)

    async def send(self, destination: str, rendered: Rendered) -> None:
        """Send to an Android device."""
        if "://" in destination:
            await self.push.send(destination, rendered)
        else:
            await self.fcm.send(destination, rendered)
