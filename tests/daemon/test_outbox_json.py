"""``fmn-daemon outbox --json``: every notification not sent, why it waits, until when."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from fmn_core.models import Notification, NotificationState, StoredMessage, User

from .test_cli import cli_database, run

UNTIL = dt.datetime(2031, 1, 2, 6, 0, tzinfo=dt.UTC)


def test_outbox_json_prints_one_object_per_waiting_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with cli_database(tmp_path, capsys) as (config, db):
        with db.begin() as session:
            user = User(name="dora")
            session.add(user)
            session.add_all(
                StoredMessage(id=f"m-{n}", topic="t", body={}, headers={}) for n in range(4)
            )
            session.flush()
            rows = [
                ("m-0", NotificationState.PENDING, "quiet_hours", UNTIL, None),
                ("m-1", NotificationState.FAILED, "no_address", UNTIL, "no address"),
                ("m-2", NotificationState.DEAD, None, UNTIL, "SMTP said no"),
                ("m-3", NotificationState.SENT, None, UNTIL, None),
            ]
            for message_id, state, reason, due, error in rows:
                session.add(
                    Notification(
                        message_id=message_id,
                        user_id=user.id,
                        context="email",
                        filter_name="f",
                        state=state.value,
                        hold_reason=reason,
                        next_attempt_at=due,
                        last_error=error,
                    )
                )
        for argv in (
            ("outbox", "--json"),
            ("outbox", "list", "--json"),
            ("outbox", "--json", "list"),
        ):
            code, out, _ = run(capsys, "--config", str(config), *argv)
            assert code == 0, argv
            lines = [json.loads(line) for line in out.splitlines()]
            assert [line["message_id"] for line in lines] == ["m-0", "m-1", "m-2"], argv
        quiet, address, dead = lines
        assert set(quiet) == {"id", "user", "context", "message_id", "state", "reason", "due_at"}
        assert quiet["user"] == "dora" and quiet["state"] == "pending"
        assert quiet["due_at"] == "2031-01-02T06:00:00Z"
        assert quiet["reason"] == "held for your quiet hours until 2031-01-02 06:00 UTC"
        assert address["reason"].startswith("waiting for a confirmed address")
        assert (dead["due_at"], dead["reason"]) == (None, "given up: SMTP said no")
