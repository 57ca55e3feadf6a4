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
    session.install("-e", ".[test,fas]")
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


#: Every benchmark script, in run order, with the arguments of its quick mode.
BENCHMARKS: dict[str, list[str]] = {
    "matcher": ["--quick"],
    "ingest": ["--quick"],
    "backlog": ["--quick"],
    "latency": ["--quick"],
    "peer_fmn3": ["--sizes", "1000", "--passes", "1"],
}


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks in benchmarks/ (figures printed with the machine they ran on).

    ``nox -s bench`` runs every benchmark in its quick mode; ``nox -s bench --
    ingest latency`` runs some of them; add ``--full`` for their full-size runs
    (see docs/performance.md). Ingest, backlog and latency need PostgreSQL and
    RabbitMQ on loopback.
    """
    session.install("-e", ".[test]")
    full = "--full" in session.posargs
    names = [a for a in session.posargs if a != "--full"] or list(BENCHMARKS)
    for name in names:
        quick = [] if full else BENCHMARKS.get(name, [])
        session.run("python", os.path.join("benchmarks", f"{name}.py"), *quick)
