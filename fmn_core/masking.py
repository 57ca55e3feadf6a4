"""Error texts fit for the outbox and logs: addresses masked, credentials hidden, length capped.

Every sender records why a send failed in ``last_error``, and logs it; the text
comes from transports and third-party libraries, which quote addresses and URLs
freely. :func:`scrub_error` is the one place that text is made safe to keep.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .destinations import mask_address

__all__ = ["ERROR_MAX_CHARS", "scrub_error"]

#: ``last_error`` is cut to this many characters.
ERROR_MAX_CHARS = 1000

_EMAIL_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_URL_CREDENTIALS_RE = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^\s/@]+@", re.IGNORECASE)


def scrub_error(text: str, addresses: Iterable[str] = (), *, context: str = "") -> str:
    """An error text fit for ``last_error`` and logs: addresses masked, length capped.

    ``addresses`` (of ``context``) are replaced by their masked form wherever they
    appear; any other e-mail address and any credentials in a URL are masked too.
    """
    scrubbed = text
    for address in sorted({a for a in addresses if a}, key=len, reverse=True):
        scrubbed = scrubbed.replace(address, mask_address(context, address))
    scrubbed = _EMAIL_RE.sub(lambda m: mask_address("email", m.group(0)), scrubbed)
    scrubbed = _URL_CREDENTIALS_RE.sub(lambda m: f"{m.group('scheme')}***@", scrubbed)
    if len(scrubbed) > ERROR_MAX_CHARS:
        scrubbed = scrubbed[: ERROR_MAX_CHARS - 1] + "…"
    return scrubbed
