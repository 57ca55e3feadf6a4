"""Retention as the operator meets it: ``fmn-daemon prune`` and the daemon's own passes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from core.test_retention import Left, Seeded, left, seed
from sqlalchemy import select

from fmn_core.config import Config, DeliveryConfig, RetentionConfig
from fmn_core.db import Database
from fmn_core.models import Notification, StoredMessage
from fmn_core.schema import upgrade
from fmn_daemon.cli import main
from fmn_daemon.service import Service

from .conftest import RabbitMQ, serve_during, write_fmn_config


def _seeded(url: str) -> Seeded:
    upgrade(url)
    db = Database(Config(database_url=url))
    try:
        with db.begin() as session:
            return seed(session)
    finally:
        db.dispose()


def _left(url: str) -> Left:
    db = Database(Config(database_url=url))
    try:
        with db.begin() as session:
            return left(session)
    finally:
        db.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_cli_prune_counts_then_deletes_with_a_progress_bar(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'prune.sqlite'}"
    else:
        url = request.getfixturevalue("empty_postgres_url")
    seeded = _seeded(url)
    before = _left(url)
    config = str(write_fmn_config(tmp_path / "fmn.toml", url, "[retention]\nbatch_rows = 2\n"))

    assert main(["--config", config, "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "would prune 3 notifications, 3 bus messages, 1 dead messages, 2 preference changes "
        "and 1 code records older than 30 days"
    ), out
    assert _left(url) == before

    assert main(["--config", config, "prune", "--progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(
        "pruned 3 notifications, 3 bus messages, 1 dead messages, 2 preference changes and "
        "1 code records older than 30 days (before "
    ), captured.out
    # Ten rows in steps of two: the bar moved, and ended full.
    assert captured.err.count("\rpruning [") >= 2, captured.err
    assert f"[{'#' * 30}] 10/10 rows" in captured.err
    assert _left(url) == seeded.kept()

    assert main(["--config", config, "prune", "--progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("pruned 0 notifications, 0 bus messages")
    assert captured.err == ""  # nothing to prune: no bar
    # Rows sent ten days ago go with a shorter window.
    assert main(["--config", config, "prune", "--days", "5"]) == 0
    assert capsys.readouterr().out.startswith("pruned 2 notifications")


def test_cli_prune_refuses_to_keep_nothing_or_to_do_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'prune.sqlite'}"
    seeded = _seeded(url)
    keep_all = str(write_fmn_config(tmp_path / "keep.toml", url, "[retention]\ndays = 0\n"))
    assert main(["--config", keep_all, "prune"]) == 2
    err = capsys.readouterr().err
    assert "retention.days is 0: fmn keeps everything. Give --days N" in err
    for days in ("0", "-3", "36501", "1000000"):
        assert main(["--config", keep_all, "prune", "--days", days]) == 2
        assert f"--days must be from 1 to 36500, not {days}." in capsys.readouterr().err
    assert len(_left(url).notifications) > len(seeded.kept_notifications)
    # Asked for explicitly, a window works even where the daemon keeps everything.
    assert main(["--config", keep_all, "prune", "--days", "30"]) == 0
    assert _left(url) == seeded.kept()


def _serve_until(service: Service, done: Callable[[], object], timeout: float = 30.0) -> int:
    def until_done() -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the daemon did not get there in time"
            time.sleep(0.05)

    return serve_during(service, until_done)


def test_daemon_prunes_once_started_and_counts_it(
    tmp_path: Path, rabbitmq: RabbitMQ, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'daemon.sqlite'}"
    seeded = _seeded(url)
    config = Config(
        database_url=url,
        delivery=DeliveryConfig(shutdown_grace_seconds=2.0),
        retention=RetentionConfig(days=30, batch_rows=3),
    )
    service = Service(config, rabbitmq.config_path, deliver=False, serve_http=False)
    caplog.set_level(logging.INFO, logger="fmn_daemon")

    def told() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention:")]

    # The pass's one line comes once its last step found nothing more.
    assert _serve_until(service, told) == 0
    assert service.metrics.get("rows_pruned") == 10
    assert _left(url) == seeded.kept()
    assert told() == [
        "retention: pruned 3 notifications, 3 bus messages, 1 dead messages, 2 preference "
        "changes and 1 code records older than 30 days"
    ]


def test_daemon_with_retention_off_keeps_everything(tmp_path: Path, rabbitmq: RabbitMQ) -> None:
    url = f"sqlite:///{tmp_path / 'daemon.sqlite'}"
    _seeded(url)
    before = _left(url)
    config = Config(
        database_url=url,
        delivery=DeliveryConfig(shutdown_grace_seconds=2.0),
        retention=RetentionConfig(days=0),
    )
    service = Service(config, rabbitmq.config_path, deliver=False, serve_http=False)
    ready_at: list[float] = []

    def a_while_after_ready() -> bool:
        if not ready_at:
            ready_at.append(time.monotonic())
        # A pass starts as soon as the daemon has started: a second is plenty to see one.
        return time.monotonic() - ready_at[0] > 1.5

    assert _serve_until(service, a_while_after_ready) == 0
    assert service.metrics.get("rows_pruned") == 0
    assert _left(url) == before


_BACKLOG = """
INSERT INTO users (id, name, is_admin, created_at, confirm_failures)
VALUES (1000, 'backlog', false, now(), 0);
INSERT INTO messages (id, topic, body, headers, received_at)
SELECT 'old-' || g, 't', '{}', '{}', now() - interval '40 days' + g * interval '1 ms'
FROM generate_series(1, :count) AS g;
INSERT INTO notifications (message_id, user_id, context, filter_name, state, attempts,
                           next_attempt_at, created_at, sent_at)
SELECT 'old-' || g, 1000, 'email', 'f',
       CASE WHEN g % 100 = 0 THEN 'pending' ELSE 'sent' END, 0,
       CASE WHEN g % 100 = 0 THEN now() + interval '1 day' ELSE now() - interval '40 days' END,
       now() - interval '40 days',
       CASE WHEN g % 100 = 0 THEN NULL ELSE now() - interval '40 days' END
FROM generate_series(1, :count) AS g WHERE g % 2 = 0;
"""


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_daemon_prunes_a_large_backlog_while_it_goes_on_storing_the_bus(
    empty_postgres_url: str, rabbitmq: RabbitMQ
) -> None:
    """Pruning ~30,000 rows in steps of 1,000 beside the consumer: every new message is
    stored, every old one nothing waits on is gone, the waiting ones and theirs stay."""
    from sqlalchemy import func, text

    from .test_service import publish

    url = empty_postgres_url
    upgrade(url)
    count = 20_000
    db = Database(Config(database_url=url))
    with db.begin() as session:
        session.execute(text(_BACKLOG.replace(":count", str(count))))
    config = Config(
        database_url=url,
        delivery=DeliveryConfig(shutdown_grace_seconds=2.0),
        retention=RetentionConfig(days=30, batch_rows=1000),
    )
    service = Service(config, rabbitmq.config_path, deliver=False, serve_http=False)
    waiting = count // 100
    expected = (count // 2 - waiting) + (count - waiting)
    published: list[str] = []

    def scalar(statement: object) -> int:
        with db.begin() as session:
            return int(session.scalar(statement) or 0)

    def pruned_and_stored() -> bool:
        if not published:
            # Published once the daemon has started, while its first pass runs.
            published.extend(publish(rabbitmq, 300))
        new = select(func.count()).select_from(StoredMessage).where(StoredMessage.id.in_(published))
        return service.metrics.get("rows_pruned") == expected and scalar(new) == len(published)

    try:
        assert _serve_until(service, pruned_and_stored, timeout=60) == 0
        old = select(func.count()).select_from(StoredMessage).where(StoredMessage.id.like("old-%"))
        assert scalar(old) == waiting
        assert scalar(select(func.count()).select_from(Notification)) == waiting
        states = select(Notification.state).distinct()
        with db.begin() as session:
            assert set(session.scalars(states)) == {"pending"}
    finally:
        db.dispose()
