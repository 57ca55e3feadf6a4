"""fmn's daemon: consumes the bus, writes the outbox, sends notifications, serves HTTP.

- ``Consumer`` (``consumer.py``): batched AMQP consumer; store, match, commit, then ack.
- ``ingest_batch`` (``ingest.py``): the pipeline one batch goes through.
- ``BrokerSettings`` (``broker.py``): the parts of fedora-messaging's configuration it uses.
- ``is_transient`` (``failures.py``): an outage (retry) or the item's own failure (isolate).
- ``list_dead_messages`` (``dead_messages.py``): messages put aside after failing again and again.
- ``Senders`` (``delivery.py``): the senders that drain the outbox.
- ``Service`` (``service.py``): start-up, main loop, clean stop; systemd notifications.
- ``in_thread``, ``in_unit_of_work`` (``concurrency.py``): how async code calls
  blocking code.
- ``Metrics`` (``metrics.py``): counters and health shared by all of them.
- ``main`` (``cli.py``): the ``fmn-daemon`` command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fmn_core import __version__ as __version__

if TYPE_CHECKING:
    from .broker import BrokerSettings, BrokerUnavailable, load_broker_settings
    from .cli import main
    from .concurrency import in_thread, in_unit_of_work
    from .consumer import Consumer
    from .dead_messages import list_dead_messages, requeue_dead_message
    from .delivery import Senders
    from .failures import is_transient
    from .http import start_http
    from .ingest import IngestResult, decode_delivery, ingest_batch
    from .metrics import Metrics
    from .replay import replay
    from .service import Service, StartupError
    from .systemd import Notifier
    from .transports.live import LiveHub

#: Public name -> the module defining it. Loaded on first use, so that
#: ``fmn-daemon --help`` doesn't import aiohttp, Apprise and pika.
_EXPORTS = {
    "BrokerSettings": ".broker",
    "BrokerUnavailable": ".broker",
    "Consumer": ".consumer",
    "Senders": ".delivery",
    "IngestResult": ".ingest",
    "LiveHub": ".transports.live",
    "Metrics": ".metrics",
    "Notifier": ".systemd",
    "Service": ".service",
    "StartupError": ".service",
    "decode_delivery": ".ingest",
    "in_thread": ".concurrency",
    "in_unit_of_work": ".concurrency",
    "ingest_batch": ".ingest",
    "is_transient": ".failures",
    "list_dead_messages": ".dead_messages",
    "load_broker_settings": ".broker",
    "requeue_dead_message": ".dead_messages",
    "main": ".cli",
    "replay": ".replay",
    "start_http": ".http",
}

__all__ = [
    "BrokerSettings",
    "BrokerUnavailable",
    "Consumer",
    "IngestResult",
    "LiveHub",
    "Metrics",
    "Notifier",
    "Senders",
    "Service",
    "StartupError",
    "decode_delivery",
    "in_thread",
    "in_unit_of_work",
    "ingest_batch",
    "is_transient",
    "list_dead_messages",
    "load_broker_settings",
    "main",
    "replay",
    "requeue_dead_message",
    "start_http",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
