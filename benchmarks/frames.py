"""Reading a consumer's inbound AMQP frames: pika's own path against ``fmn_daemon.frames``.

    python benchmarks/frames.py [--rounds 7] [--messages 5000]

Every corpus delivery is written as the broker sends it (Basic.Deliver, content
header, body: three frames on channel 1) into one byte stream, cut in pika's
4,096-byte reads. The stream is fed to a pika connection object (no socket)
whose pika channel assembles each delivery and hands it to a consumer's
callback, twice: through pika's own ``_on_data_available`` with pika's table
decoder, and through ``read_frames_lean`` with fmn's table decoder. Both read
with the header depth guard installed, as the consumer does. Each side's
deliveries are checked to be the same. Times are this thread's CPU time per
delivery, best of the rounds, the two sides interleaved. Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import pika.channel
import pika.connection
import pika.data
import pika.frame
import pika.spec
from common import corpus_templates, draw

import fmn_daemon.frames as frames

READ_SIZE = 4096


class _Consumer:
    """The consumer's callback on a pika channel: it keeps what it is handed."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[Any, Any, bytes]] = []

    def __call__(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.deliveries.append((method, properties, body))


class _Connection(pika.connection.Connection):  # type: ignore[misc]
    """pika's frame reading and dispatch, on an object with no socket behind it."""

    def __init__(self) -> None:  # pika's would open a connection
        self._frame_buffer = b""
        self.bytes_received = 0
        self.frames_received = 0
        self._heartbeat_checker = None
        self.callbacks = pika.callback.CallbackManager()
        # pika's own channel: its assembler builds each delivery and hands it
        # to the consumer's callback, as in the consumer.
        channel = pika.channel.Channel(self, 1, None)
        self.consumer = _Consumer()
        channel._consumers["ctag"] = self.consumer
        self._channels = {1: channel}


# pika's I/O hooks: never called, since nothing here is sent or scheduled.
_Connection.__abstractmethods__ = frozenset()


def _stream(messages: int) -> list[bytes]:
    templates, _ = corpus_templates()
    out: list[bytes] = []
    for tag, (index, message_id) in enumerate(draw(templates, messages), start=1):
        template = templates[index]
        properties = template.properties(message_id)
        deliver = pika.spec.Basic.Deliver("ctag", tag, False, "ex", template.topic)
        out.append(pika.frame.Method(1, deliver).marshal())
        out.append(pika.frame.Header(1, len(template.body), properties).marshal())
        out.append(pika.frame.Body(1, template.body).marshal())
    data = b"".join(out)
    return [data[i : i + READ_SIZE] for i in range(0, len(data), READ_SIZE)]


def _run(chunks: list[bytes], *, lean: bool) -> tuple[float, _Connection]:
    connection = _Connection()
    pika.data.decode_table = fmn_table if lean else pika_table
    if lean:
        frames.read_frames_lean(connection)
    read = connection._on_data_available
    start = time.thread_time()
    for chunk in chunks:
        read(chunk)
    return time.thread_time() - start, connection


def _summary(connection: _Connection) -> list[tuple[Any, ...]]:
    return [
        (m.delivery_tag, m.routing_key, p.message_id, p.headers, p.content_encoding, body)
        for m, p, body in connection.consumer.deliveries
    ]


pika_table = pika.data.decode_table
frames.bound_header_depth(16)
fmn_table = pika.data.decode_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    chunks = _stream(args.messages)
    size = sum(map(len, chunks))
    print(f"{args.messages} deliveries, {size:,} bytes in {len(chunks)} reads of {READ_SIZE}")
    best = {False: float("inf"), True: float("inf")}
    answers: dict[bool, list[tuple[Any, ...]]] = {}
    for _ in range(args.rounds):
        for lean in (False, True):
            seconds, connection = _run(chunks, lean=lean)
            best[lean] = min(best[lean], seconds)
            answers[lean] = _summary(connection)
            assert connection.bytes_received == size and not connection._frame_buffer
            assert connection.frames_received == 3 * args.messages
    pika.data.decode_table = fmn_table
    same = answers[False] == answers[True] and len(answers[True]) == args.messages
    for lean, label in ((False, "pika's frame reading"), (True, "read_frames_lean")):
        print(f"  {label:22}: {best[lean] / args.messages * 1e6:6.2f} us of CPU per delivery")
    print(f"  same deliveries, same order: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
