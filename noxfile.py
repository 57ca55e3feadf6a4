"""Development tasks: ``nox -s tests``, ``lint``, ``typing``, ``changelog``, ``demo``, ``bench``.

Each session installs what it needs into its own virtualenv (the extras of
pyproject.toml), so a fresh clone needs only ``python3 -m pip install nox``.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typing", "tests", "changelog"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).resolve().parent
PACKAGES = ["fmn_core", "fmn_daemon", "fmn_bot", "fmn_tui"]
#: The ruff that lints and formats; the same pin is in .pre-commit-config.yaml,
#: since another ruff may format differently.
RUFF = "ruff==0.17.6"
#: What ruff checks and formats.
LINTED = [*PACKAGES, "tests", "benchmarks", "noxfile.py", "alembic"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite, on SQLite and on PostgreSQL (absent services skip, except under CI).

    ``nox -s tests -- -m "not slow"`` is the quick loop: it leaves out the
    fault suite and the other whole-system runs (tests/conftest.py, SLOW_FOLDERS).
    """
    session.install("-e", ".[test]")
    args = session.posargs or ["tests"]
    # pytest exits 5 when it collected nothing; nox fails on any non-zero exit,
    # so an empty run can never pass.
    session.run("pytest", *args, env={"PYTHONDONTWRITEBYTECODE": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: the lint rules, then the formatting (``ruff format`` fixes what this reports)."""
    session.install(RUFF)
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session
def typing(session: nox.Session) -> None:
    """mypy in strict mode over the four packages, then over the tests (annotations optional)."""
    session.install("-e", ".[dev]")
    session.run("mypy", *PACKAGES)
    session.run("mypy", "tests")


@nox.session
def changelog(session: nox.Session) -> None:
    """The next release's notes from changelog.d/: ``towncrier build --draft``.

    It fails on a file in changelog.d/ that is not a fragment towncrier can
    place (``ignore`` in [tool.towncrier] lists the ones that are not fragments).
    """
    session.install("towncrier>=24.7")
    # The one version number is pyproject.toml's; towncrier is given it rather
    # than importing the package.
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    session.run("towncrier", "build", "--draft", "--version", version)


@nox.session
def demo(session: nox.Session) -> None:
    """Run fmn end to end on the embedded default (SQLite, no broker): sample users,
    the bundled messages, real deliveries into a local mailbox and feeds."""
    session.install(".[demo]")
    session.run("fmn-daemon", "demo", *session.posargs)


#: Every benchmark script, in run order, with the arguments of its quick mode.
BENCHMARKS: dict[str, list[str]] = {
    "matcher": ["--quick"],
    # Full size: the ratio to bare pika needs runs of seconds, not tenths (~3 min).
    "ingest": [],
    "backlog": ["--quick"],
    "latency": ["--quick"],
    # The goal is stated at 100k users, so even the quick run loads that many (~2 min).
    "startup": ["--users", "0,100000", "--whole"],
    "peer_fmn3": ["--sizes", "1000", "--passes", "1"],
    # Full size, 1M messages: at 100k the fixed cost of each transaction hides the rate
    # (~1.5 min).
    "retention": [],
}
#: The benchmarks that write their figures as JSON for benchmarks/plots.py.
BENCH_JSON = ("matcher", "ingest", "latency", "startup")


def _deployed_python(session: nox.Session) -> str:
    """An interpreter with fmn installed as a deployment has it: no extras, no test tools.

    The start-up benchmark runs the daemon with it; in the benchmarks' own virtualenv
    fedora-messaging would also import pytest, which no deployment carries.
    """
    venv = os.path.join(session.cache_dir, "deployed")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        session.run(sys.executable, "-m", "venv", venv, external=True)
    session.run(python, "-m", "pip", "install", "-q", "-e", ".", external=True)
    return python


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks in benchmarks/ (figures printed with the machine they ran on).

    ``nox -s bench`` runs every benchmark in its quick mode; ``nox -s bench --
    ingest latency`` runs some of them; add ``--full`` for their full-size runs
    (see docs/performance.md), and ``--create-peer-venv`` to install FMN 3 for
    the peer comparison first. Ingest, backlog and latency need PostgreSQL and
    RabbitMQ on loopback.
    """
    # matplotlib draws the plots in docs/performance.md; only the benchmarks need it.
    session.install("-e", ".[test]", "matplotlib")
    options = {"--full", "--create-peer-venv"}
    full = "--full" in session.posargs
    names = [a for a in session.posargs if a not in options] or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        session.error(f"no benchmark called {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    for name in names:
        arguments = [] if full else list(BENCHMARKS[name])
        if name == "peer_fmn3":
            # FMN 3 is not part of a clone: without its virtualenv (FMN3_VENV or
            # benchmarks/peer/.venv) the peer run says it was skipped, and why.
            create = "--create-peer-venv" in session.posargs
            arguments.append("--create-venv" if create else "--skip-without-peer")
        if name == "startup":
            arguments += ["--daemon-python", _deployed_python(session)]
        if name in BENCH_JSON:
            os.makedirs(os.path.join("benchmarks", "results"), exist_ok=True)
            arguments += ["--json", os.path.join("benchmarks", "results", f"{name}.json")]
        session.run("python", os.path.join("benchmarks", f"{name}.py"), *arguments)
    # The plots, and one met / not met line per goal, from this run's figures.
    session.run("python", os.path.join("benchmarks", "plots.py"))
