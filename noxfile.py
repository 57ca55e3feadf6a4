"""Development tasks: ``nox -s tests``, ``lint``, ``typing``, ``demo``, ``bench``."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typing", "tests"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ["fmn_core", "fmn_daemon", "fmn_bot", "fmn_tui"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite, on SQLite and on PostgreSQL (absent services skip, except under CI)."""
    session.install("-e", ".[test]")
    args = session.posargs or ["tests"]
    # pytest exits 5 when it collected nothing; nox fails on any non-zero exit,
    # so an empty run can never pass.
    session.run("pytest", *args, env={"PYTHONDONTWRITEBYTECODE": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the code, tests and benchmarks."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", *PACKAGES, "tests", "benchmarks", "noxfile.py", "alembic")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy in strict mode over the four packages."""
    session.install("-e", ".[dev]")
    session.run("mypy", *PACKAGES)


@nox.session
def demo(session: nox.Session) -> None:
    """Run fmn end to end on the embedded default (SQLite, no broker): sample users,
    the bundled messages, real deliveries into a local mailbox and feeds."""
    session.install(".")
    session.run("fmn-daemon", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks in benchmarks/ (figures printed with the machine they ran on)."""
    session.install("-e", ".[test]")
    names = session.posargs or ["matcher"]
    for name in names:
        session.run("python", os.path.join("benchmarks", f"{name}.py"))
