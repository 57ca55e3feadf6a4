"""The one place fmn calls Apprise: a single service, one notification, a reason on failure."""

from __future__ import annotations

import logging
import re
from typing import Any

import apprise

from fmn_core.library_http import bounded_requests
from fmn_core.masking import scrub_error

__all__ = ["MAX_REPLY_BYTES", "asset", "notify_once", "plugin_for"]

#: The most of a push server's reply fmn reads: plugins only look for an error in it.
MAX_REPLY_BYTES = 256 * 1024

_PATH_RE = re.compile(r"\b(url|path): ?/\S*", re.IGNORECASE)
_URL_RE = re.compile(
    r"\b([a-z][a-z0-9+.-]*)://([^/\s'\"?@]*@)?([^/\s'\"?]*)[^\s'\"]*", re.IGNORECASE
)


class _MaskAddresses(logging.Filter):
    """Apprise logs the addresses and URLs it sends to; fmn's logs must not show them."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = _URL_RE.sub(lambda m: f"{m.group(1)}://{m.group(3)}/***", record.getMessage())
        text = _PATH_RE.sub(lambda m: f"{m.group(1)}: /***", text)
        record.msg = scrub_error(text)
        record.args = ()
        return True


_MASK = _MaskAddresses()


def _mask_apprise_logs() -> None:
    apprise_logger = logging.getLogger("apprise")
    if _MASK not in apprise_logger.filters:
        apprise_logger.addFilter(_MASK)


#: Apprise's own logging of why a send failed (captured into the result).
_CAPTURE_LEVEL = logging.DEBUG
_USEFUL_LEVELS = ("WARNING", "ERROR", "CRITICAL")


def asset() -> apprise.AppriseAsset:
    """fmn's Apprise asset: no redirects by default, no persistent storage."""
    _mask_apprise_logs()
    return apprise.AppriseAsset(
        app_id="fmn",
        app_desc="Fedora Notifications",
        http_redirects=False,
        storage_mode="memory",
    )


#: Plugin arguments that shape the request itself rather than say where it goes:
#: the HTTP method, and (through each plugin's ``template_kwargs``) the ``+header``,
#: ``-param`` and ``:payload`` options of the json, xml and form plugins.
_REQUEST_SHAPING = ("method",)


def plugin_for(url: str, *, plain: bool = False) -> Any:
    """The Apprise plugin for ``url``, or None when Apprise cannot use it.

    ``plain`` drops every option of the URL that shapes the request (method,
    headers, query parameters, payload fields), for sends to an address whose owner
    has not proved it yet: a confirmation code must not carry a stranger's choice of
    method and headers to somebody else's server.
    """
    if not plain:
        return apprise.Apprise.instantiate(url, asset=asset(), suppress_exceptions=True)
    from apprise.manager_plugins import NotificationManager

    results = apprise.plugins.url_to_dict(url)  # type: ignore[no-untyped-call]
    # A shared singleton, the one Apprise.instantiate uses.
    manager = NotificationManager()  # type: ignore[no-untyped-call]
    if not results or results.get("schema") not in manager:
        return None
    plugin_class = manager[results["schema"]]
    shaping = (*_REQUEST_SHAPING, *getattr(plugin_class, "template_kwargs", {}))
    for name in shaping:
        results.pop(name, None)
    for raw in ("qsd+", "qsd-", "qsd:"):
        results[raw] = {}
    return apprise.Apprise.instantiate(results, asset=asset(), suppress_exceptions=True)


def _reason(result: Any) -> str:
    warnings: list[str] = []
    details: list[str] = []
    for entry in result.logs():
        message = " ".join(str(entry.message).split())
        if not message:
            continue
        if entry.level in _USEFUL_LEVELS:
            warnings.append(message)
        elif "exception" in message.lower() or "error" in message.lower():
            details.append(message)
    parts = list(dict.fromkeys(warnings[:3] + details[:2]))
    return "; ".join(parts) if parts else f"Apprise reported {result.status.name}"


def notify_once(target: str | Any, *, title: str, body: str, deadline_seconds: float) -> str | None:
    """Send through one Apprise service (a URL or a prepared plugin); None on
    success, otherwise Apprise's own account of what went wrong.

    The send's HTTP requests end within ``deadline_seconds`` whatever the server
    does, follow no redirect, and read at most ``MAX_REPLY_BYTES`` of each reply
    (``fmn_core.library_http``).
    """
    plugin = plugin_for(target) if isinstance(target, str) else target
    if plugin is None:
        return "Apprise cannot use this URL"
    notifier = apprise.Apprise(asset=plugin.asset)
    notifier.add(plugin)
    with (
        bounded_requests(
            deadline_seconds, max_bytes=MAX_REPLY_BYTES, server="the push server"
        ) as limits,
        notifier.notify(
            body=body, title=title, body_format="text", log_level=_CAPTURE_LEVEL
        ) as result,
    ):
        if result:
            return None
        # What the bounds cut short says more than the plugin's "connection error".
        if limits.problem is not None:
            return limits.problem
        return _reason(result)
