"""The Fmn plugin's registry values: only how this bot is wired to fmn.

Everything about notifications themselves (the database, the contexts on offer,
delivery pacing, the offline hold, how IRC accounts map to Fedora accounts) lives
in fmn's one TOML file (``[bot]`` there), which ``supybot.plugins.Fmn.configFile``
points at. The registry holds nothing that fmn's other processes also need, so
the bot and the daemon can't disagree.
"""

from __future__ import annotations

from typing import Any

import supybot.conf as conf
import supybot.registry as registry

__all__ = ["Fmn", "configure"]


def configure(advanced: bool) -> None:
    """Called by supybot-wizard when the plugin is chosen."""
    from supybot.questions import something

    conf.registerPlugin("Fmn", True)
    path = something(
        "Where is fmn's configuration file (the TOML file the daemon uses)?",
        default="/etc/fmn/fmn.toml",
    )
    Fmn.configFile.setValue(path)


Fmn: Any = conf.registerPlugin("Fmn")

conf.registerGlobalValue(
    Fmn,
    "configFile",
    registry.String(
        "",
        """The path of fmn's TOML configuration file (the one fmn-daemon reads).
        Empty means: the FMN_CONFIG environment variable, or fmn's built-in
        defaults. Reloading the plugin reads it again.""",
    ),
)
conf.registerGlobalValue(
    Fmn,
    "deliver",
    registry.Boolean(
        True,
        """Whether this bot sends IRC notifications and IRC confirmation codes.
        Turn it off on a bot that should only take fmn commands (for example a
        second bot on another network); exactly one bot per deployment and IRC
        network should deliver.""",
    ),
)
conf.registerGlobalValue(
    Fmn,
    "network",
    registry.String(
        "",
        """The name of the network (as in supybot.networks) notifications are
        sent on. Empty means the first network the bot is connected to.""",
    ),
)
conf.registerGlobalValue(
    Fmn,
    "staticAccounts",
    registry.SpaceSeparatedListOfStrings(
        [],
        """INSECURE, for tests and closed networks without services only:
        space-separated nick=account pairs treated as identified when the IRC
        server gives no account information for that nick. Anyone who takes
        one of these nicks acts as that account. Leave empty on any real
        network.""",
    ),
)
