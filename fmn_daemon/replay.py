"""``fmn-daemon replay``: run a file of bus messages through fmn.

The file holds one serialized fedora-messaging message per line
(``fedora_messaging.message.dumps`` of one message, or the shared corpus's
lines). With ``dry_run`` nothing is written: each message is matched against
the current preferences and its recipients are reported. Without it, the
messages go through the same ingest pipeline as the bus consumer (store, match,
outbox), one transaction per batch.

The ``--json`` output is a public contract: one JSON object per line,
``{"id", "topic", "recipients": [{"user", "context", "filter"}]}`` with the
recipients sorted by user then context, or ``{"line": N, "error": "..."}`` for a
line that is not a valid message (the run goes on).

One line costs only itself (issue 10): each line is bounded before it is parsed
(``ingest.*``), needs a string ``id``, and any exception while reading, matching
or storing it becomes that line's error. A batch the database refuses is stored
again one message at a time, so the good lines of it are kept; only an
unreachable database ends the run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fedora_messaging import message as fm_message

from fmn_core.config import IngestConfig
from fmn_core.db import Database
from fmn_core.errors import MalformedMessage
from fmn_core.matcher import Matcher, Recipient
from fmn_core.messages import facts_of, parse_line
from fmn_core.ownership import OwnershipCache
from fmn_core.text import for_log, one_line

from .failures import describe, is_transient
from .ingest import IngestResult, ingest_batch
from .metrics import Metrics
from .progress import Progress

__all__ = ["ReplayStats", "read_messages", "replay"]


@dataclass
class ReplayStats:
    """What a replay saw and did."""

    lines: int = 0
    messages: int = 0
    errors: int = 0
    matched: int = 0
    recipients: int = 0
    #: Outbox rows written (not on a dry run).
    notifications: int = 0
    #: Messages already stored before (not on a dry run).
    duplicates: int = 0


def read_messages(
    lines: Iterable[str | bytes], limits: IngestConfig | None = None
) -> Iterator[tuple[int, fm_message.Message | MalformedMessage]]:
    """``(line number, message or the reason it isn't one)`` for each non-blank line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, parse_line(line, limits)
        except MalformedMessage as exc:
            yield number, exc
        except Exception as exc:  # whatever a hostile line makes the decoder do
            yield number, MalformedMessage(f"cannot be read: {describe(exc)}")


def _recipients_json(recipients: Iterable[Recipient]) -> list[dict[str, Any]]:
    ordered = sorted(recipients, key=lambda r: (r.user, r.context))
    return [{"user": r.user, "context": r.context, "filter": r.filter_name} for r in ordered]


def _recipients_text(recipients: Iterable[Recipient]) -> str:
    ordered = sorted(recipients, key=lambda r: (r.user, r.context))
    return ", ".join(f"{r.user}/{r.context} ({r.filter_name})" for r in ordered) or "-"


class _Output:
    def __init__(self, out: IO[str], as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        if not as_json:
            out.write(f"{'LINE':>6}  {'MESSAGE':<36}  {'TOPIC':<50}  RECIPIENTS\n")

    def error(self, number: int, error: MalformedMessage) -> None:
        if self.as_json:
            self.out.write(json.dumps({"line": number, "error": str(error)}) + "\n")
        else:
            self.out.write(f"{number:>6}  error: {for_log(str(error), limit=500)}\n")

    def message(
        self,
        number: int,
        msg: fm_message.Message,
        recipients: list[Recipient],
        extra: dict[str, Any] | None = None,
    ) -> None:
        if self.as_json:
            record: dict[str, Any] = {
                "id": msg.id,
                "topic": msg.topic,
                "recipients": _recipients_json(recipients),
            }
            record.update(extra or {})
            self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            note = " (already stored)" if extra and extra.get("duplicate") else ""
            self.out.write(
                f"{number:>6}  {one_line(msg.id)[:36]:<36}  {one_line(msg.topic)[:50]:<50}  "
                f"{_recipients_text(recipients)}{note}\n"
            )


def _well_formed(
    items: Iterable[tuple[int, fm_message.Message | MalformedMessage]],
    stats: ReplayStats,
    output: _Output,
) -> Iterator[tuple[int, fm_message.Message]]:
    """The messages among ``items``; each malformed line is counted and reported."""
    for number, item in items:
        stats.lines = number
        if isinstance(item, MalformedMessage):
            stats.errors += 1
            output.error(number, item)
            continue
        yield number, item


def replay(
    db: Database,
    path: str | os.PathLike[str],
    out: IO[str],
    *,
    dry_run: bool,
    as_json: bool,
    progress: bool | None = None,
    batch_size: int | None = None,
    metrics: Metrics | None = None,
    err: IO[str] | None = None,
) -> ReplayStats:
    """Replay the file at ``path``; write one line per message to ``out``.

    ``progress`` draws a bar on ``err`` (stderr by default); ``None`` means
    "when ``err`` is a terminal". Only used without ``dry_run``.
    """
    err = err if err is not None else sys.stderr
    source = Path(path)
    with db.begin() as session:
        matcher = Matcher.load(session, ownership=OwnershipCache.load(session))
    output = _Output(out, as_json)
    stats = ReplayStats()
    limits = db.config.ingest
    with source.open("rb") as handle:
        if dry_run:
            for number, item in _well_formed(read_messages(handle, limits), stats, output):
                try:
                    recipients = matcher.recipients(facts_of(item))
                except Exception as exc:  # pragma: no cover - the matcher guards its rules
                    stats.errors += 1
                    output.error(number, MalformedMessage(f"cannot be matched: {exc!r}"))
                    continue
                stats.messages += 1
                stats.matched += bool(recipients)
                stats.recipients += len(recipients)
                output.message(number, item, recipients)
            return stats
        total = sum(1 for _ in handle)
        handle.seek(0)
        show = err.isatty() if progress is None else progress
        bar = Progress(total, err, "replaying", "lines") if show else None
        size = batch_size or db.config.delivery.batch_size
        batch: list[tuple[int, fm_message.Message]] = []
        for number, item in _well_formed(read_messages(handle, limits), stats, output):
            batch.append((number, item))
            if len(batch) >= size:
                if bar is not None:
                    bar.clear()
                _ingest(db, matcher, batch, output, stats, metrics)
                batch = []
                if bar is not None:
                    bar.update(number)
        if batch:
            if bar is not None:
                bar.clear()
            _ingest(db, matcher, batch, output, stats, metrics)
        if bar is not None:
            bar.close(total)
    return stats


def _ingest(
    db: Database,
    matcher: Matcher,
    batch: list[tuple[int, fm_message.Message]],
    output: _Output,
    stats: ReplayStats,
    metrics: Metrics | None,
) -> None:
    result = _store(db, matcher, [m for _, m in batch], metrics)
    if isinstance(result, BaseException):
        # One of them fails on its own: store them one at a time, each line on its own.
        for item in batch:
            alone = _store(db, matcher, [item[1]], metrics)
            if isinstance(alone, BaseException):
                stats.messages += 1
                stats.errors += 1
                output.error(
                    item[0],
                    MalformedMessage(f"not stored: {describe(alone)}", message_id=item[1].id),
                )
                continue
            _report(alone, [item], output, stats)
        return
    _report(result, batch, output, stats)


def _store(
    db: Database, matcher: Matcher, messages: list[fm_message.Message], metrics: Metrics | None
) -> IngestResult | Exception:
    """One transaction for ``messages``; the exception when it fails on them.

    An unreachable database is raised: nothing can be stored, the run ends.
    """
    refreshed: set[int] = set()
    try:
        with db.begin() as session:
            return ingest_batch(session, matcher, messages, metrics, refreshed=refreshed)
    except Exception as exc:
        if refreshed:  # the matcher saw one-shot filters switched off that never were
            with db.begin() as session:
                matcher.refresh_users(session, refreshed)
        if is_transient(exc):
            raise
        return exc


def _report(
    result: IngestResult,
    batch: list[tuple[int, fm_message.Message]],
    output: _Output,
    stats: ReplayStats,
) -> None:
    refused = dict(result.malformed)
    for number, msg in batch:
        stats.messages += 1
        if msg.id in refused:
            stats.errors += 1
            output.error(number, MalformedMessage(refused[msg.id], message_id=msg.id))
            continue
        recipients = result.recipients.get(msg.id)
        if recipients is None:
            stats.duplicates += 1
            output.message(number, msg, [], {"duplicate": True})
            continue
        stats.matched += bool(recipients)
        stats.recipients += len(recipients)
        output.message(number, msg, recipients)
    stats.notifications += result.notifications
