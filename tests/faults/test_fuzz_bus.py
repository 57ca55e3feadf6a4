"""Issue 10's hostile bus, fuzzed with hypothesis.

- ``test_fuzzed_deliveries_never_stop_the_daemon``: whole AMQP deliveries (bodies,
  headers, properties, sizes, depths), each followed by a valid message that must
  arrive, through one ``fmn-daemon run`` process: alive, never restarted, each
  refused delivery logged once, memory and descriptors under bounds.
- ``test_fuzzed_replay_files_cost_only_their_bad_lines``: message files mixing
  corpus lines with hostile ones for ``fmn-daemon replay``.
"""

from __future__ import annotations

import io
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import (
    Outgoing,
    expected_recipients,
    fresh_messages,
    outbox_rows,
    outgoing,
    upgrade_schema,
    wait_for,
)
from .hostile_bus import (
    CONTROL,
    DAEMON_EXTRA,
    FD_BOUND,
    MIB,
    RSS_BOUND_MB,
    Gauge,
    deep_object,
    fuzz_examples,
    publish_all,
)

pytestmark = pytest.mark.slow


# Any character UTF-8 can carry (so no lone surrogates), control characters included.
printable_or_not = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
header_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    printable_or_not,
    st.binary(max_size=30),
)


@st.composite
def header_tables(draw: st.DrawFn) -> dict[str, Any]:
    """Header tables: wide or deep (iteratively built up to 3,000 levels)."""
    shape = draw(st.sampled_from(["flat", "wide", "deep", "nested"]))
    if shape == "flat":
        return draw(st.dictionaries(st.text(max_size=20), header_leaf, max_size=8))
    if shape == "wide":
        width = draw(st.integers(min_value=100, max_value=2500))
        return {f"k{i}": "v" * 40 for i in range(width)}
    if shape == "deep":
        table: Any = draw(header_leaf)
        for _ in range(draw(st.integers(min_value=10, max_value=3000))):
            table = {"d": table} if draw(st.booleans()) else {"l": [table]}
        return dict(table) if isinstance(table, dict) else {"v": table}
    return draw(
        st.recursive(
            st.dictionaries(st.text(max_size=5), header_leaf, max_size=3),
            lambda inner: st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=20,
        )
    )


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Bodies: JSON of any depth or size, near-JSON, binary, other encodings."""
    shape = draw(
        st.sampled_from(
            ["object", "json", "deep", "deep_array", "huge", "binary", "constants", "text"]
        )
    )
    if shape == "object":
        leaves = st.one_of(st.none(), st.integers(), printable_or_not)
        return json.dumps(draw(st.dictionaries(printable_or_not, leaves, max_size=6))).encode()
    if shape == "json":
        value = draw(
            st.recursive(
                st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), printable_or_not),
                lambda inner: st.one_of(
                    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner)
                ),
                max_leaves=30,
            )
        )
        return json.dumps(value).encode()
    if shape == "deep":
        return deep_object(draw(st.integers(min_value=60, max_value=20_000)))
    if shape == "deep_array":
        depth = draw(st.integers(min_value=60, max_value=20_000))
        return b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    if shape == "huge":
        size = draw(st.integers(min_value=4 * MIB, max_value=12 * MIB))
        return b'{"blob": "' + b"y" * size + b'"}'
    if shape == "binary":
        return draw(st.binary(max_size=2000))
    if shape == "constants":
        return draw(st.sampled_from([b'{"a": NaN}', b'{"a": -Infinity}', b'{"n": 1e999}']))
    return draw(printable_or_not).encode("utf-8")


@st.composite
def deliveries(draw: st.DrawFn) -> Outgoing:
    marker = f"fuzz-{uuid.uuid4().hex[:10]}"
    message_id = draw(
        st.one_of(
            st.just(marker),
            st.just(marker + CONTROL),
            st.just(marker + "x" * 230),  # AMQP short strings end at 255 bytes
            st.none(),
        )
    )
    topic = draw(
        st.one_of(
            st.just("org.fedoraproject.prod.fuzz.thing"),
            st.text(min_size=1, max_size=55).map(lambda t: "org.fuzz." + t),
        )
    )
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16", "x-nope", None]))
    return Outgoing(
        message_id, topic, draw(bodies()), draw(header_tables()), content_encoding=encoding
    )


def stored_ids(url: str, prefix: str) -> set[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id FROM messages WHERE id LIKE :p"), {"p": prefix + "%"}
            )
            return {row[0] for row in rows}
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_fuzzed_deliveries_never_stop_the_daemon(
    empty_postgres_url: str, rabbitmq: Any, make_daemon: Any, figures: Any
) -> None:
    """Each drawn delivery is followed by a valid message, which must arrive; the daemon lives."""
    from .conftest import set_up_watcher

    url = empty_postgres_url
    upgrade_schema(url)
    set_up_watcher(url)
    daemon = make_daemon(url, rabbitmq.config_path, extra=DAEMON_EXTRA)
    daemon.start()
    assert daemon.process is not None
    pid = daemon.process.pid
    gauge = Gauge(pid)
    valid: list[dict[str, Any]] = []
    fuzzed: list[Outgoing] = []
    started = time.monotonic()

    @settings(
        max_examples=fuzz_examples(),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(delivery=deliveries())
    def one(delivery: Outgoing) -> None:
        message = fresh_messages(1, f"fuzz-valid-{len(valid):04d}", seed=len(valid))[0]
        publish_all(rabbitmq.amqp_url, rabbitmq.exchange, [delivery, outgoing(message)])
        valid.append(message)
        fuzzed.append(delivery)
        wait_for(
            lambda: message["id"] in stored_ids(url, message["id"]),
            timeout=60,
            what=f"the valid message after {delivery.message_id!r}",
            interval=0.1,
        )
        assert daemon.alive(), daemon.output()[-3000:]

    try:
        one()
        expected = expected_recipients(url, valid)
        wait_for(
            lambda: {(m, u, c) for m, u, c, s, _a in outbox_rows(url) if s == "sent"} >= expected,
            timeout=120,
            what="every valid message's notification sent",
            interval=0.5,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{daemon.output()[-3000:]}") from None
    gauge.stop()
    peak_rss = gauge.peak_rss_mb()
    assert daemon.alive() and daemon.runs == 1
    assert daemon.stop() == 0, daemon.output()[-3000:]
    log = daemon.output()
    rows = outbox_rows(url)
    fuzz_stored = stored_ids(url, "fuzz-")
    for_valid = {(m, u, c) for m, u, c, _s, _a in rows if m.startswith("fuzz-valid-")}
    assert for_valid == expected
    # Each refused delivery with an id: one line; accepted ones: none saying "dropped".
    lines = [line for line in log.splitlines() if "dropped" in line or "put aside" in line]
    wrong: dict[str, int] = {}
    for item in fuzzed:
        if item.message_id is None:
            continue
        marker = item.message_id[:15]
        seen = sum(1 for line in lines if marker in line)
        accepted = any(i.startswith(marker) for i in fuzz_stored)
        if seen != (0 if accepted else 1):
            wrong[marker] = seen
    no_id = sum(1 for item in fuzzed if item.message_id is None)
    figures(
        examples=len(fuzzed),
        accepted=sum(1 for i in fuzz_stored if not i.startswith("fuzz-valid-")),
        no_id=no_id,
        valid_delivered=len(for_valid),
        peak_rss_mb=round(peak_rss),
        fds_max=gauge.max_fds,
        seconds=round(time.monotonic() - started, 1),
    )
    assert wrong == {}, wrong
    assert sum(1 for line in lines if "message (no id):" in line) == no_id
    assert "Traceback" not in log
    assert peak_rss < RSS_BOUND_MB
    assert gauge.max_fds < FD_BOUND


hostile_lines = st.one_of(
    st.text(max_size=200).filter(lambda t: t.strip() != "" and "\n" not in t and "\r" not in t),
    st.integers(min_value=50, max_value=30_000).map(
        lambda d: '{"id": "deep", "topic": "a.b", "body": ' + "[" * d + "]" * d + "}"
    ),
    st.sampled_from(
        [
            '{"topic": "a.b", "body": {}}',
            '{"id": null, "topic": "a.b", "body": {}}',
            '{"id": 42, "topic": "a.b", "body": {}}',
            '{"id": "nan", "topic": "a.b", "body": {"x": NaN}}',
            '{"id": "inf", "topic": "a.b", "body": {"x": -Infinity}}',
            "[1, 2, 3]",
            '"just a string"',
            '{"id": "no-body", "topic": "a.b"}',
        ]
    ),
    st.integers(min_value=300_000, max_value=600_000).map(
        lambda n: '{"id": "huge", "topic": "a.b", "body": {"x": "' + "z" * n + '"}}'
    ),
)


def test_fuzzed_replay_files_cost_only_their_bad_lines(tmp_path: Path, corpus: list[str]) -> None:
    """Hostile lines among corpus lines: each costs its line, the others are stored once."""
    from fmn_core.config import Config, IngestConfig
    from fmn_core.db import Database
    from fmn_core.schema import upgrade
    from fmn_daemon.replay import replay

    runs: list[int] = []

    @settings(
        max_examples=max(1, fuzz_examples() // 2),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        picks=st.lists(st.integers(min_value=0, max_value=len(corpus) - 1), min_size=1, max_size=8),
        bad=st.lists(hostile_lines, min_size=1, max_size=6),
        seed=st.integers(min_value=0, max_value=1000),
    )
    def one(picks: list[int], bad: list[str], seed: int) -> None:
        run = len(runs)
        runs.append(run)
        url = f"sqlite:///{tmp_path / f'replay-{run}.sqlite'}"
        upgrade(url)
        limits = IngestConfig(max_body_bytes=256 * 1024, max_header_bytes=16 * 1024)
        db = Database(Config(database_url=url, ingest=limits))
        good = []
        for n, index in enumerate(picks):
            data = json.loads(corpus[index])
            data["id"] = f"good-{run}-{n}"
            good.append(json.dumps(data))
        lines = [(line, True) for line in good] + [(line, False) for line in bad]
        random.Random(seed).shuffle(lines)
        path = tmp_path / f"replay-{run}.jsonl"
        path.write_text("\n".join(line for line, _ in lines) + "\n", encoding="utf-8")
        out = io.StringIO()
        try:
            stats = replay(db, path, out, dry_run=False, as_json=True, batch_size=3)
            with db.begin() as session:
                from sqlalchemy import text

                stored = {row[0] for row in session.execute(text("SELECT id FROM messages"))}
        finally:
            db.dispose()
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        bad_numbers = {n for n, (_, ok) in enumerate(lines, start=1) if not ok}
        errors = [r["line"] for r in records if "error" in r]
        assert sorted(errors) == sorted(bad_numbers)
        assert stats.errors == len(bad)
        assert {f"good-{run}-{n}" for n in range(len(good))} <= stored
        assert "None" not in stored
        ok_ids = [r["id"] for r in records if "id" in r]
        assert sorted(ok_ids) == sorted(f"good-{run}-{n}" for n in range(len(good)))

    one()
    assert runs
