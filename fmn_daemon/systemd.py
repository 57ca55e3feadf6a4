"""Talking to systemd's service manager (``sd_notify``) without a dependency.

systemd passes ``$NOTIFY_SOCKET``: a datagram unix socket path, or an abstract
socket when it starts with ``@``. The daemon sends ``READY=1`` once the database
and the broker have answered, ``WATCHDOG=1`` from its main loop's tick and
``STOPPING=1`` when it begins to stop. Outside systemd every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval"]

log = logging.getLogger(__name__)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd set for this process, in seconds; None if none.

    ``WATCHDOG_PID``, when present, must name this process (systemd's rule).
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 / 2 if value > 0 else None


class Notifier:
    """Sends state changes to ``$NOTIFY_SOCKET``; a no-op when it is not set."""

    def __init__(self, address: str | None = None) -> None:
        raw = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if raw:
            # "@name" is Linux's abstract namespace: a leading NUL byte.
            self.address = b"\0" + raw[1:].encode() if raw.startswith("@") else raw
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether systemd is listening."""
        return self.address is not None

    def notify(self, *states: str) -> bool:
        """Send ``KEY=value`` lines; returns whether they were sent."""
        if self.address is None:
            return False
        payload = "\n".join(states).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(payload, self.address)
        except OSError as exc:
            log.warning("cannot notify systemd (%s)", exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """``READY=1``: start-up finished."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the main loop is alive."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """A free-form status line for ``systemctl status``."""
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutting down."""
        return self.notify("STOPPING=1")

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
