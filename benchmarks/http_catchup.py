"""Memory of concurrent live catch-ups and feed requests after large messages.

    python benchmarks/http_catchup.py [--messages 6] [--megabytes 8] [--clients 5]

Stores ``--messages`` bus messages of ``--megabytes`` MiB each through the real
ingest path (``ingest_batch``), each delivered to one user's ``live`` and ``rss``
destinations, then starts the daemon's HTTP endpoints in a subprocess of their
own and measures that process's resident memory while ``--clients`` WebSocket
clients ask ``?since=0`` at once (each replays every message) and as many feed
readers fetch the Atom feed. Printed: the server's RSS before, its peak
(``VmHWM``) and the growth, and how long the catch-ups took.

Run it from a checkout to measure that checkout (the "before" figure in
docs/reliability.md came from the commit before issue 10's HTTP work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = r"""
import asyncio, json, sys
from fmn_core.config import Config, HttpConfig
from fmn_core.db import Database
from fmn_daemon.http import start_http
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports.live import LiveHub

url, port = sys.argv[1], int(sys.argv[2])
config = Config(database_url=url, http=HttpConfig(port=port, secret_key="bench",
                public_url=f"http://127.0.0.1:{port}"))

async def main():
    server = await start_http(config, Database(config), Metrics(), LiveHub())
    print("serving", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _seed(url: str, messages: int, megabytes: int) -> tuple[str, str]:
    from sqlalchemy import update

    from fmn_core import preferences
    from fmn_core.config import Config
    from fmn_core.db import Database, make_engine
    from fmn_core.matcher import Matcher
    from fmn_core.messages import load_message
    from fmn_core.models import Base, Destination, Notification, utcnow
    from fmn_daemon.ingest import ingest_batch

    engine = make_engine(url)
    Base.metadata.create_all(engine)
    db = Database(Config(database_url=url), engine)
    actor = preferences.Actor("jo")
    with db.begin() as session:
        for context in ("live", "rss"):
            preferences.add_filter(session, actor, context, "everything")
            preferences.add_rule(
                session, actor, context, "everything", "topic_matches", {"pattern": "*"}
            )
            preferences.set_destination(session, actor, context, None)
    payload = "x" * (megabytes * 1024 * 1024)
    for n in range(messages):
        message = load_message(
            {
                "id": f"big-{n}",
                "topic": "org.fedoraproject.prod.bodhi.buildroot_override.tag",
                "headers": {},
                "body": {
                    "override": {
                        "nvr": f"libxcrypt-4.4.4-{n}.fc28",
                        "submitter": {"name": "lmacken"},
                    },
                    "payload": payload,
                },
            }
        )
        with db.begin() as session:
            ingest_batch(session, Matcher.load(session), [message])
    with db.begin() as session:
        session.execute(update(Notification).values(state="sent", sent_at=utcnow()))
        tokens = {d.preference.context: d.address for d in session.query(Destination)}
    engine.dispose()
    return tokens["live"], tokens["rss"]


async def _catch_up(base: str, live: str, feed: str, clients: int, messages: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as client:

        async def one_live() -> None:
            async with client.ws_connect(f"{base}/live/ws/{live}?since=0") as socket:
                for _ in range(messages):
                    await socket.receive_json(timeout=120)

        async def one_feed() -> None:
            async with client.get(f"{base}/feeds/{feed}.atom") as response:
                assert response.status == 200, response.status
                await response.read()

        await asyncio.gather(
            *(one_live() for _ in range(clients)), *(one_feed() for _ in range(clients))
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6)
    parser.add_argument("--megabytes", type=int, default=8)
    parser.add_argument("--clients", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'fmn.sqlite'}"
        os.environ["XDG_STATE_HOME"] = tmp
        live, feed = _seed(url, args.messages, args.megabytes)
        import socket as socket_module

        with socket_module.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, url, str(port)],
            stdout=subprocess.PIPE,
            env=dict(os.environ, XDG_STATE_HOME=tmp),
        )
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == b"serving"
            before = _kib(server.pid, "VmRSS")
            started = time.monotonic()
            asyncio.run(
                _catch_up(f"http://127.0.0.1:{port}", live, feed, args.clients, args.messages)
            )
            seconds = time.monotonic() - started
            peak = _kib(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait(30)
    print(
        json.dumps(
            {
                "messages": args.messages,
                "message_mib": args.megabytes,
                "live_clients_since_0": args.clients,
                "feed_clients": args.clients,
                "server_rss_before_mib": round(before / 1024, 1),
                "server_rss_peak_mib": round(peak / 1024, 1),
                "growth_mib": round((peak - before) / 1024, 1),
                "seconds": round(seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
