"""The optional parts of an install (pip extras) and how a missing one is reported.

``pip install fmn`` is the daemon and the core. The front ends and providers
are extras (pyproject.toml): ``tui`` (Textual), ``bot`` (Limnoria), ``fas``
(python-fedora), ``demo`` (aiosmtpd). Each entry point that needs one calls
``require`` before importing it, so a lean install answers with the command
to run instead of a traceback.
"""

from __future__ import annotations

import importlib

from .errors import MissingExtra

__all__ = ["MODULES", "require"]

#: Each extra and the modules that show it is installed (the ones fmn imports).
MODULES: dict[str, tuple[str, ...]] = {
    "tui": ("textual", "rich"),
    "bot": ("supybot",),
    "fas": ("fedora.client",),
    "demo": ("aiosmtpd",),
}


def require(extra: str, *, program: str) -> None:
    """Import ``extra``'s modules; if one is absent, ``MissingExtra`` names ``program``, ``extra``.

    Only a module that is *absent* counts (``ModuleNotFoundError`` for it or a
    parent package); any other import failure is a real error and propagates.
    """
    for module in MODULES[extra]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if module == missing or module.startswith(missing + "."):
                raise MissingExtra(program, extra) from exc
            raise
