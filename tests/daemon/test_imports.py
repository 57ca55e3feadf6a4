"""What the whole daemon holds once its senders and HTTP endpoints are set up."""

from __future__ import annotations

import subprocess
import sys


def test_senders_and_http_load_feeds_apprise_and_matrix_when_first_used() -> None:
    # feedgen and lxml (~4 MiB), Apprise (~2 MiB) and the Matrix client (~1 MiB) are
    # imported by the first feed, the first push send and a configured Matrix bot;
    # a daemon whose users use none of them never holds them.
    probe = (
        "import sys\n"
        "import fmn_daemon.cli, fmn_daemon.service, fmn_daemon.delivery, fmn_daemon.http\n"
        "from fmn_core.config import Config, MatrixConfig\n"
        "from fmn_daemon.transports import build_transports\n"
        "from fmn_daemon.transports.live import LiveHub\n"
        "idle = ('feedgen', 'lxml', 'apprise', 'fmn_daemon.transports._apprise',\n"
        "        'fmn_daemon.transports.matrix')\n"
        "config = Config()\n"
        "transports = build_transports(config, LiveHub())\n"
        "print(sorted(m for m in idle if m in sys.modules))\n"
        "from fmn_daemon.transports.feed import build_feed\n"
        "feed = build_feed('alice', [], feed_url='https://fmn.example.org/feeds/t.atom',\n"
        "                  kind='atom')\n"
        "print(b'<feed' in feed, sorted(m for m in ('feedgen', 'lxml') if m in sys.modules))\n"
        "from fmn_daemon.transports.push import plugin_for\n"
        "plugin = plugin_for('ntfys://ntfy.example.org/topic')\n"
        "print(plugin is not None, 'apprise' in sys.modules)\n"
        "bot = config.replace(matrix=MatrixConfig(homeserver_url='https://matrix.example.org',\n"
        "                                         user_id='@fmn:example.org', access_token='t'))\n"
        "print(type(build_transports(bot)['matrix']).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[]",
        "True ['feedgen', 'lxml']",
        "True True",
        "MatrixTransport",
    ]
