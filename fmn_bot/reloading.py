"""Keeping the bot's last working fmn configuration across ``reload Fmn``.

Limnoria's ``reload Fmn`` throws the plugin away and builds it again; if the new
one cannot start (a bad value in fmn.toml), the plugin would be gone: every user
would get ``"fmn" is not a valid command`` and IRC delivery would stop until
someone loaded it by hand. Instead the plugin starts with the configuration that
last loaded from the same file, and logs what is wrong with the new one.

This module is not reloaded with the plugin (``fmn_bot/__init__.py`` reloads
``plugin`` only), so what it remembers survives a reload.
"""

from __future__ import annotations

from fmn_core.config import Config, load_config
from fmn_core.errors import ConfigError

__all__ = ["Loaded", "load_keeping_last_good"]

#: The last configuration that loaded, per file path ("" for the default search).
_LAST_GOOD: dict[str, Config] = {}


class Loaded:
    """A configuration, and what was wrong with the file when it is an older one."""

    def __init__(self, config: Config, problem: str | None = None) -> None:
        self.config = config
        #: Why the file did not load (None when ``config`` is the file's own).
        self.problem = problem


def load_keeping_last_good(path: str | None) -> Loaded:
    """Load ``path``; on a ``ConfigError``, the last configuration that loaded from it.

    The first load has nothing to fall back on: its ``ConfigError`` propagates
    (the plugin does not start, and Limnoria says why).
    """
    key = path or ""
    try:
        config = load_config(path)
    except ConfigError as exc:
        kept = _LAST_GOOD.get(key)
        if kept is None:
            raise
        return Loaded(kept, str(exc))
    _LAST_GOOD[key] = config
    return Loaded(config)
