"""Development tasks: ``nox -s tests``, ``lint``, ``typing``, ``changelog``, ``demo``, ``bench``.

Each session installs what it needs into its own virtualenv (the extras of
pyproject.toml), so a fresh clone needs only ``python3 -m pip install nox``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import IO

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


#: ``nox -s tests`` runs the suite as these pytest processes side by side. Most tests
#: wait on servers and subprocesses: on a two-core machine one pytest took 15
#: minutes, and two side by side about 8. Folders rather than pytest-xdist: Limnoria looks
#: names up in its callers' frames (``supybot.dynamicScope``) and finds the
#: ``channel`` that every xdist worker has there. The fault suite's outages stop
#: private servers of their own, never the machine's, so no test needs to run alone.
SHARDS: dict[str, tuple[str, ...]] = {
    "core+bot+tui+e2e": ("tests/core", "tests/bot", "tests/tui", "tests/e2e"),
    "daemon+faults": ("tests/daemon", "tests/faults"),
}


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite, on SQLite and on PostgreSQL (absent services skip, except under CI).

    Without arguments, or with options only (``nox -s tests -- -m "not slow"``, the
    quick loop, which leaves out the fault suite and the other whole-system runs:
    tests/conftest.py, SLOW_FOLDERS), the shards of :data:`SHARDS` run side by side,
    each line of their output marked with its shard. Arguments that name a path
    (``nox -s tests -- tests/core -x``) run one pytest, as given.
    """
    session.install("-e", ".[test]")
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    if any(Path(arg.split("::", 1)[0]).exists() for arg in session.posargs):
        # pytest exits 5 when it collected nothing; nox fails on any non-zero exit,
        # so an empty run can never pass.
        session.run("pytest", *session.posargs, env=env)
        return
    _check_shards_cover_the_suite(session)
    statuses, last_lines = _run_side_by_side(
        session, {name: [*session.posargs, *paths] for name, paths in SHARDS.items()}, env
    )
    # Each shard's own summary ("N passed in Ts"), together: the first shard to end
    # has its line far above the other's by then.
    for name, line in last_lines.items():
        session.log(f"[{name}] {line.strip(' =')}")
    failed = {name: status for name, status in statuses.items() if status not in (0, 5)}
    # Exit 5 is "no tests collected": a shard that lost its tests fails the whole run,
    # and with options (-k, -m) so does a run in which no shard collected any.
    empty = [name for name, status in statuses.items() if status == 5]
    if failed:
        session.error(
            "tests failed in "
            + ", ".join(f"{name} (pytest exit status {status})" for name, status in failed.items())
            + "; their lines above, marked with the shard's name, say which"
        )
    if empty and (not session.posargs or len(empty) == len(statuses)):
        session.error(f"no tests were collected in {', '.join(empty)}")


def _check_shards_cover_the_suite(session: nox.Session) -> None:
    """Every folder of tests/ that holds tests is in a shard, none is in two, and no
    test module sits in tests/ itself (no shard would run it)."""
    loose = sorted(path.name for path in (ROOT / "tests").glob("test_*.py"))
    if loose:
        session.error(
            f"tests/ holds {', '.join(loose)} outside every folder of noxfile.SHARDS: "
            "move it into the folder of the part it tests"
        )
    sharded = [path for paths in SHARDS.values() for path in paths]
    folders = {
        f"tests/{folder.name}"
        for folder in (ROOT / "tests").iterdir()
        if folder.is_dir() and any(folder.rglob("test_*.py"))
    }
    if sorted(sharded) != sorted(folders):
        session.error(
            f"noxfile.SHARDS lists {sorted(sharded)}, but the folders with tests are "
            f"{sorted(folders)}: put each folder in exactly one shard"
        )


def _run_side_by_side(
    session: nox.Session, runs: dict[str, list[str]], env: dict[str, str]
) -> tuple[dict[str, int], dict[str, str]]:
    """Run ``pytest ARGS`` for every named run at once; each one's exit status and
    last line of output.

    Each line a run prints is printed as it comes, after the run's name in brackets.
    """
    bin_dir = str(session.bin)
    environ = {**os.environ, **env, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    lock = threading.Lock()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    last_lines = dict.fromkeys(runs, "(no output)")

    def relay(name: str, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.strip():
                last_lines[name] = line
            with lock:
                print(f"[{name}] {line}", flush=True)

    session.log(
        "running " + "; ".join(f"[{name}] pytest {' '.join(a)}" for name, a in runs.items())
    )
    readers = []
    try:
        for name, args in runs.items():
            process = subprocess.Popen(
                [os.path.join(bin_dir, "pytest"), *args],
                cwd=ROOT,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            processes[name] = process
            assert process.stdout is not None
            reader = threading.Thread(target=relay, args=(name, process.stdout), daemon=True)
            reader.start()
            readers.append(reader)
        statuses = {name: process.wait() for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:  # interrupted: leave no pytest running
                process.terminate()
                process.wait()
    for reader in readers:
        reader.join()
    return statuses, last_lines


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
