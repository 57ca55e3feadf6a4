"""fmn's daemon: consumes the bus, writes the outbox, sends notifications, serves HTTP.

- ``Consumer`` (``consumer.py``): batched AMQP consumer; store, match, commit, then ack.
- ``ingest_batch`` (``ingest.py``): the pipeline one batch goes through.
- ``Delivery`` (``delivery.py``): the senders that drain the outbox.
- ``Service`` (``service.py``): start-up, main loop, clean stop; systemd notifications.
- ``Metrics`` (``metrics.py``): counters and health shared by all of them.
- ``main`` (``cli.py``): the ``fmn-daemon`` command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fmn_core import __version__ as __version__

if TYPE_CHECKING:
    from .cli import main
    from .consumer import BrokerSettings, BrokerUnavailable, Consumer, load_broker_settings
    from .delivery import Delivery
    from .http import start_http
    from .ingest import IngestResult, decode_delivery, ingest_batch
    from .metrics import Metrics
    from .replay import replay
    from .service import Service, StartupError, in_thread
    from .systemd import Notifier
    from .transports.live import LiveHub

#: Public name -> the module defining it. Loaded on first use, so that
#: ``fmn-daemon --help`` doesn't import aiohttp, Apprise and pika.
_EXPORTS = {
    "BrokerSettings": ".consumer",
    "BrokerUnavailable": ".consumer",
    "Consumer": ".consumer",
    "Delivery": ".delivery",
    "IngestResult": ".ingest",
    "LiveHub": ".transports.live",
    "Metrics": ".metrics",
    "Notifier": ".systemd",
    "Service": ".service",
    "StartupError": ".service",
    "decode_delivery": ".ingest",
    "in_thread": ".service",
    "ingest_batch": ".ingest",
    "load_broker_settings": ".consumer",
    "main": ".cli",
    "replay": ".replay",
    "start_http": ".http",
}

__all__ = [
    "BrokerSettings",
    "BrokerUnavailable",
    "Consumer",
    "Delivery",
    "IngestResult",
    "LiveHub",
    "Metrics",
    "Notifier",
    "Service",
    "StartupError",
    "decode_delivery",
    "in_thread",
    "ingest_batch",
    "load_broker_settings",
    "main",
    "replay",
    "start_http",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
