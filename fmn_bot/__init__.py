"""Fmn: manage your Fedora notifications from IRC, and receive them here.

Type ``fmn help`` to the bot. Every command works on the Fedora account that
your IRC services account maps to; changes go through fmn's preference service,
exactly as the terminal UI's do. The bot also delivers the ``irc`` context:
private messages to your confirmed nick, paced, held while you are away.

Installed through the ``limnoria.plugins`` entry point (``Fmn = "fmn_bot"``), so
``load Fmn`` finds it without a plugin directory. See ``fmn_bot/README.md``.
"""

from __future__ import annotations

from importlib import reload

from fmn_core import __version__, extras

# Limnoria is the 'bot' extra; without it this import fails with an ImportError
# that names the extra (fmn_core.errors.MissingExtra) rather than "no module supybot".
extras.require("bot", program="the Fmn plugin (fmn_bot)")

import supybot  # noqa: E402

from . import config, plugin  # noqa: E402

# Limnoria's "reload Fmn" re-imports the package; reload the command module too.
reload(plugin)

__author__ = supybot.Author(name="fmn contributors")
__maintainer__ = __author__
__contributors__: dict[object, list[str]] = {}
__url__ = "https://github.com/fedora-infra/fmn"

Class = plugin.Class
configure = config.configure

__all__ = ["Class", "__version__", "config", "configure", "plugin"]
