"""fmn_daemon.concurrency: the one way the daemon's async code calls blocking code."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from fmn_core.db import Database
from fmn_core.models import User
from fmn_daemon.concurrency import in_thread, in_unit_of_work


def _add_user(session: Session, name: str, *, fail: bool = False) -> int:
    session.add(User(name=name))
    session.flush()
    if fail:
        raise RuntimeError("after the write")
    return threading.get_ident()


def _names(db: Database) -> list[str]:
    with db.begin() as session:
        return list(session.scalars(select(User.name).order_by(User.name)))


def test_in_thread_runs_blocking_code_off_the_event_loop() -> None:
    async def main() -> tuple[int, int]:
        return threading.get_ident(), await in_thread(threading.get_ident)

    loop_thread, worker = asyncio.run(main())
    assert worker != loop_thread


def test_in_unit_of_work_commits_when_the_function_returns(db: Database) -> None:
    async def main() -> int:
        return await in_unit_of_work(db, _add_user, "alice")

    worker = asyncio.run(main())
    assert worker != threading.get_ident()
    assert _names(db) == ["alice"]


def test_in_unit_of_work_rolls_back_and_raises_when_the_function_raises(db: Database) -> None:
    async def main() -> None:
        await in_unit_of_work(db, _add_user, "bob", fail=True)

    with pytest.raises(RuntimeError, match="after the write"):
        asyncio.run(main())
    assert _names(db) == []
