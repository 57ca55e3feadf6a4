"""The error hierarchy's edge helper: one sentence and one log entry for every bug."""

from __future__ import annotations

import logging
import re

import pytest

from fmn_core.errors import report_internal_error


def test_report_internal_error_logs_the_traceback_under_the_reference(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("fmn_core.tests.edge")
    with caplog.at_level(logging.ERROR, logger=log.name):
        try:
            dict[str, int]()["missing"]
        except KeyError:
            notice = report_internal_error(log, "sending message m-1 to a***@example.org")
    assert re.fullmatch(r"[0-9a-f]{8}", notice.reference)
    assert str(notice) == (
        f"internal error (reference {notice.reference}); the fmn log has the details"
    )
    (record,) = caplog.records
    assert notice.reference in record.getMessage()
    assert "sending message m-1" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    # The sentence people see names no exception and no detail of it.
    assert "KeyError" not in str(notice) and "missing" not in str(notice)


def test_report_internal_error_takes_an_exception_outside_its_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("fmn_core.tests.edge")
    error = RuntimeError("boom")
    with caplog.at_level(logging.ERROR, logger=log.name):
        first = report_internal_error(log, "starting", error)
        second = report_internal_error(log, "starting", error)
    assert first.reference != second.reference
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [error, error]
