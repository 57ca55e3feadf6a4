"""A paced or slow context costs only itself: Matrix pacing, long push jobs, claim leases.

Matrix lines go at ``matrix.lines_per_second``: a line waiting for its turn must hold
no send slot and stop no claim of another context's rows, and must not wait past its
claim's lease. A push job to many slow destinations must end well inside its lease.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

import pytest
from core.test_outbox import add_notification, add_user, state_of
from hostile_http import hostile_server, matrix_homeserver

from daemon.test_push import answering, drip_body, ntfy_url
from fmn_core.config import Config, DeliveryConfig, MatrixConfig, PushConfig
from fmn_core.confirmation import MAX_DESTINATIONS_PER_CONTEXT
from fmn_core.db import Database
from fmn_core.rendering import Links, Rendered
from fmn_daemon import delivery as delivery_module
from fmn_daemon.delivery import Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports import Transport
from fmn_daemon.transports.matrix import MatrixClient, MatrixTransport
from fmn_daemon.transports.push import SEND_DEADLINE_TIMEOUTS, PushTransport

BOT = "@fmn:localhost"


class _Recorded:
    """A transport that takes every message at once and notes when."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}

    async def send(self, destination: str, rendered: Rendered) -> None:
        self.sent[destination] = time.monotonic()


def test_transport_pacing_matrix_lines_waiting_their_turn_hold_up_no_other_context(
    file_db: Database,
) -> None:
    """12 Matrix lines at 2 a second, 4 send slots, then one push row: the push row
    goes at once (it used to wait ~4 s for the Matrix lines ahead of it in the slots),
    and the Matrix lines keep their pace."""
    users = 12
    with file_db.begin() as session:
        matrix_rows = [
            add_notification(
                session, add_user(session, f"m{n}", "matrix", (f"@m{n}:localhost",)), "matrix"
            ).id
            for n in range(users)
        ]
        push_row = add_notification(session, add_user(session, "p", "push", ("quick",)), "push").id
    push = _Recorded()

    async def scenario(url: str) -> tuple[float, float]:
        matrix = MatrixConfig(
            homeserver_url=url, user_id=BOT, password="pw", lines_per_second=2, burst=1
        )
        config = file_db.config.replace(
            matrix=matrix, delivery=DeliveryConfig(senders=4, idle_poll_seconds=0.05)
        )
        transports: dict[str, Transport] = {"matrix": MatrixTransport(matrix), "push": push}
        senders = Senders(file_db, config, Metrics(), transports=transports)
        stop = asyncio.Event()
        started = time.monotonic()
        runner = asyncio.create_task(senders.run(stop))
        try:
            for _ in range(400):
                if all(state_of(file_db, i).state == "sent" for i in matrix_rows):
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(runner, 20)
        return push.sent["quick"] - started, time.monotonic() - started

    with hostile_server(matrix_homeserver(BOT)) as server:
        push_after, took = asyncio.run(scenario(server.url))
        sends = sum("/send/m.room.message/" in line for line in server.request_lines())
    assert push_after < 1.5, f"the push row waited {push_after:.1f}s behind Matrix pacing"
    assert sends == users
    # The pace still holds: 12 lines at 2 a second, the first at once.
    assert took >= (users - 1) / 2 - 0.5
    rows = [state_of(file_db, i) for i in matrix_rows]
    assert all(r.state == "sent" and r.attempts == 0 for r in rows)
    assert state_of(file_db, push_row).state == "sent"


class _HeldClient(MatrixClient):
    """Takes its pacing turn, then never answers (until cancelled)."""

    async def send_text(
        self, user_id: str, text: str, *, pace: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        if pace is not None:
            await pace()
        await asyncio.Event().wait()


class Held:
    """A transport whose sends never end (until cancelled)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def send(self, destination: str, rendered: Rendered) -> None:
        self.started.append(destination)
        await asyncio.Event().wait()

    async def until_started(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` sends have started (a loaded machine starts them late),
        then a moment more, in which a send too many would start too."""
        deadline = time.monotonic() + timeout
        while len(self.started) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)


def test_transport_pacing_a_full_matrix_backlog_claims_no_more_and_stops_no_other_claim(
    db: Database,
) -> None:
    """At 1 line a second and a 40 s lease, at most 10 Matrix lines are claimed ahead
    (a quarter of the lease): the rest of a claim goes back to ``pending`` at once
    (no attempt counted), rather than waiting its turn past the lease and being
    claimed again; and the next claim leaves Matrix out, so a push row behind the
    Matrix rows is claimed, and sent in the slot the Matrix lines waiting their turn
    leave free (the other holds the first line, which the homeserver never answers)."""
    lease = 40.0
    ahead = 10  # lease * lines_per_second / 4
    with db.begin() as session:
        matrix_rows = [
            add_notification(
                session, add_user(session, f"m{n}", "matrix", (f"@m{n}:localhost",)), "matrix"
            ).id
            for n in range(30)
        ]
        push_row = add_notification(session, add_user(session, "p", "push", ("held",)), "push").id
    matrix = MatrixConfig(
        homeserver_url="http://127.0.0.1:9", user_id=BOT, password="pw", lines_per_second=1, burst=1
    )
    config = db.config.replace(
        matrix=matrix,
        delivery=DeliveryConfig(senders=2, batch_size=30, claim_lease_seconds=lease),
    )
    push = Held()
    transports: dict[str, Transport] = {
        "matrix": MatrixTransport(matrix, client=_HeldClient(matrix)),
        "push": push,
    }
    senders = Senders(db, config, Metrics(), transports=transports)

    async def scenario() -> tuple[list[str], list[str]]:
        await senders._start_round(codes=False)
        first = [state_of(db, i).state for i in matrix_rows]
        await senders._start_round(codes=False)
        await push.until_started(1)
        second = [state_of(db, i).state for i in [*matrix_rows, push_row]]
        await senders._finish(0.0)
        return first, second

    first, second = asyncio.run(scenario())
    assert first == ["sending"] * ahead + ["pending"] * (30 - ahead)
    assert ahead / matrix.lines_per_second <= lease / 2
    assert second == ["sending"] * ahead + ["pending"] * (30 - ahead) + ["sending"]
    assert push.started == ["held"]
    assert all(state_of(db, i).attempts == 0 for i in matrix_rows)


# -- a long push job ---------------------------------------------------------------------------


def test_transport_pacing_a_push_job_to_many_slow_destinations_ends_within_one_deadline_round(
    db: Database,
) -> None:
    """A user's 5 push URLs, each kept by its server to the send's deadline (3 s): the
    job goes to them at once, not one after the other (15 s), so it ends well inside
    its lease."""
    push_config = PushConfig(allow_private_hosts=True, timeout_seconds=1)
    deadline = push_config.timeout_seconds * SEND_DEADLINE_TIMEOUTS
    with answering(drip_body) as (server, _):
        urls = tuple(ntfy_url(server, f"t{n}") for n in range(5))
        with db.begin() as session:
            row = add_notification(session, add_user(session, "jo", "push", urls), "push").id
        config = db.config.replace(
            push=push_config, delivery=DeliveryConfig(senders=1, max_attempts=5)
        )
        senders = Senders(
            db, config, Metrics(), transports={"push": PushTransport(push_config, threads=8)}
        )
        started = time.monotonic()
        asyncio.run(senders.drain(60))
        took = time.monotonic() - started
    assert took < 2 * deadline, f"the job took {took:.1f}s"
    state = state_of(db, row)
    assert (state.state, state.attempts) == ("failed", 1)


def test_transport_pacing_a_lease_a_push_job_can_outlast_is_named_at_start_up(
    file_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """10 destinations, 5 at once, each send up to 3 timeouts: 6 timeouts a job, and
    twice that within the lease (the other half for the wait for a slot)."""
    rounds = math.ceil(MAX_DESTINATIONS_PER_CONTEXT / delivery_module.DESTINATIONS_AT_ONCE)
    assert SEND_DEADLINE_TIMEOUTS * rounds == delivery_module.PUSH_JOB_TIMEOUTS == 6
    push = PushConfig(timeout_seconds=30)
    config = file_db.config.replace(push=push)

    def warnings(config: Config) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fmn_daemon.delivery"):
            Senders(file_db, config, Metrics(), links=Links("https://fmn.example.org", b"k"))
        return [r.getMessage() for r in caplog.records if r.name == "fmn_daemon.delivery"]

    assert warnings(file_db.config) == []  # the defaults: 120 s of 300
    (warning,) = warnings(config)
    assert warning.startswith(
        "delivery: delivery.claim_lease_seconds (300 s) is short for push.timeout_seconds "
        "(30 s): a push to a user's destinations may take 180 s"
    )
    assert warning.endswith(
        "set delivery.claim_lease_seconds to at least 360 or push.timeout_seconds to at most 25"
    )
    assert warnings(config.replace(contexts=("email",))) == []
