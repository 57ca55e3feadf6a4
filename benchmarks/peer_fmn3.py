"""Benchmark item 5, "Peer": FMN 3.4 and fmn's matcher on the same corpus and users.

Run ``python benchmarks/peer_fmn3.py`` from the project's virtualenv. FMN 3.4 runs
from its own virtualenv (it can't share ours, both projects are called ``fmn``):
``--venv PATH`` or ``FMN3_VENV``, by default ``benchmarks/peer/.venv`` (gitignored).
``--create-venv`` makes it once (``python -m venv`` then ``pip install
'fmn[consumer,database,sqlite,schemas]==3.4.0'`` from PyPI, 2-3 minutes; versions
pinned by ``benchmarks/peer/constraints.txt``). Without it, a missing virtualenv
stops the run with a message saying how to make one, or, with
``--skip-without-peer`` (what ``nox -s bench`` passes), is reported as a skipped
run: a fresh clone has no FMN 3 and the other benchmarks need none.

For each population size (1k and 10k users by default, ``benchmarks/populations.py``):

1. The population's filters are translated into FMN 3 rules (a tracking rule
   plus filters on one generation rule, one destination) where FMN 3 can say
   the same thing; see ``translate``. The filters it can't express are dropped
   from an *equivalent* population, so both systems answer the same question.
2. ``benchmarks/peer/fmn3_runner.py`` runs inside FMN 3's virtualenv: its real
   ``Consumer`` over SQLite, its caches, its dist-git backend on a SQLite copy of
   Pagure's ownership tables, a loopback FASJSON, and a list instead of
   RabbitMQ. Each case gets a time budget; FMN 3 is slow enough that only part
   of the corpus fits, which the output says.
3. fmn's ``Matcher`` answers the same messages for the equivalent population
   (and for the full one), in this process.
4. The recipients are compared message by message.

Figures are printed; ``--json PATH`` also saves them (``benchmarks/results/`` is
gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from common import corpus_files  # noqa: E402
from machine import describe_machine, print_machine  # noqa: E402
from populations import Population, build_population, corpus_names  # noqa: E402

from fmn_core.errors import MalformedMessage  # noqa: E402
from fmn_core.matcher import (  # noqa: E402
    ContextSnapshot,
    FilterSnapshot,
    Matcher,
    RuleSnapshot,
    UserSnapshot,
)
from fmn_core.messages import MessageFacts, facts_of, parse_line  # noqa: E402

PEER_VERSION = "3.4.0"
PEER_REQUIREMENTS = (
    f"fmn[consumer,database,sqlite,schemas]=={PEER_VERSION}",
    # fmn.backends imports httpx and httpx_gssapi, which FMN 3 lists under its
    # "api" extra only; the consumer needs them all the same. <0.28: what
    # httpx-gssapi 0.3.1 accepts, so what a full FMN 3 install resolves to.
    "httpx>=0.23.0,<0.28.0",
)
# Needs gssapi, which compiles only where krb5-config exists (libkrb5-dev);
# without it the runner uses a no-op stand-in (the loopback FASJSON never asks).
PEER_OPTIONAL = "httpx-gssapi>=0.1.7,<0.4.0"
DEFAULT_VENV = HERE / "peer" / ".venv"
#: Where FMN 3's virtualenv is, when not ``--venv`` nor the default.
VENV_VARIABLE = "FMN3_VENV"
#: Exit status when FMN 3 is not installed and the run was not allowed to skip or create it.
EXIT_NO_PEER = 3
RUNNER = HERE / "peer" / "fmn3_runner.py"
CONSTRAINTS = HERE / "peer" / "constraints.txt"  # the versions the figures were taken with
# Topics that make FMN 3 rebuild its rules and tracked caches in the background:
# maintenance, not matching, and at 10k users long enough to swamp the timings.
CACHE_REBUILD_TOPICS = ("fmn.rule.create.v1", "fmn.rule.update.v1", "fmn.rule.delete.v1")
FMN3_CASES = ("consumer", "match", "consumer-memo", "match-memo")
CASE_TITLES = {
    "consumer": "FMN 3 Consumer.handle_or_rollback, as shipped",
    "match": "FMN 3 rules only (no DB session, no rendering), as shipped",
    "consumer-memo": "FMN 3 Consumer, entry-point lookups memoized",
    "match-memo": "FMN 3 rules only, entry-point lookups memoized",
}


# --- FMN 3's virtualenv ---------------------------------------------------------


def _peer_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _peer_ready(venv: Path) -> str | None:
    """FMN 3's version in that virtualenv if its consumer imports, else None."""
    python = _peer_python(venv)
    if not python.exists():
        return None
    probe = (
        "import importlib.metadata as m, fmn.cache.tracked, sqlalchemy_helpers, aiosqlite;"
        "print(m.version('fmn'))"
    )
    # -I: our own checkout (also called fmn, with its egg-info) must not be on the path.
    result = subprocess.run(
        [str(python), "-I", "-c", probe], capture_output=True, text=True, env=_peer_env(), cwd=venv
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _peer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def missing_peer(venv: Path) -> str | None:
    """Why FMN 3 can't run from ``venv`` (a sentence), or None if it can."""
    version = _peer_ready(venv)
    if version == PEER_VERSION:
        return None
    found = f"FMN {version} is installed there" if version else "FMN 3 is not installed there"
    return (
        f"FMN {PEER_VERSION}'s virtualenv is not ready at {venv} ({found}); make it once "
        f"with `python benchmarks/peer_fmn3.py --create-venv` (2-3 minutes, from PyPI), "
        f"or point --venv or {VENV_VARIABLE} at one that has it"
    )


def ensure_peer_venv(venv: Path) -> str:
    """Create FMN 3's virtualenv if it is missing or broken; returns FMN 3's version."""
    version = _peer_ready(venv)
    if version != PEER_VERSION:
        print(
            f"Creating FMN {PEER_VERSION}'s virtualenv in {venv} (once; a few minutes)", flush=True
        )
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [
            str(_peer_python(venv)),
            "-I",
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--constraint",
            str(CONSTRAINTS),
        ]
        log = venv / "pip-install.log"
        with log.open("w", encoding="utf-8") as output:
            installed = subprocess.run(
                [*pip, *PEER_REQUIREMENTS],
                env=_peer_env(),
                cwd=venv,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        if installed.returncode != 0:
            tail = log.read_text(encoding="utf-8").splitlines()[-15:]
            raise SystemExit(
                f"pip could not install FMN {PEER_VERSION} (log: {log}):\n" + "\n".join(tail)
            )
        optional = subprocess.run(
            [*pip, PEER_OPTIONAL], capture_output=True, text=True, env=_peer_env(), cwd=venv
        )
        if optional.returncode != 0:
            reason = (
                "krb5-config missing"
                if "krb5-config" in optional.stdout + optional.stderr
                else "pip failed"
            )
            print(
                f"  {PEER_OPTIONAL} not installed ({reason}); the runner uses a stand-in",
                flush=True,
            )
        version = _peer_ready(venv)
        if version != PEER_VERSION:
            raise SystemExit(f"FMN {PEER_VERSION} did not install into {venv}")
    return version


# --- the corpus ----------------------------------------------------------------


@dataclass
class Corpus:
    """The corpus messages both systems get, as ours parses them."""

    facts: list[MessageFacts]
    lines: list[dict[str, Any]]
    rejected: Counter[str] = field(default_factory=Counter)
    left_out: Counter[str] = field(default_factory=Counter)


def load_corpus(paths: Sequence[Path]) -> Corpus:
    """Parse every line with fmn_core; what it rejects, fedora-messaging rejects too."""
    corpus = Corpus([], [])
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                message = parse_line(line)
            except MalformedMessage:
                corpus.rejected[path.name] += 1
                continue
            facts = facts_of(message)
            if facts.topic.endswith(CACHE_REBUILD_TOPICS):
                corpus.left_out[facts.topic] += 1
                continue
            data = json.loads(line)
            headers = dict(data.get("headers") or {})
            # On the live bus every message names its schema; the corpus often
            # doesn't, so FMN 3 gets the class fmn_core found from the topic.
            headers.setdefault("fedora_messaging_schema", facts.schema)
            severity = headers.get("fedora_messaging_severity")
            corpus.facts.append(facts)
            corpus.lines.append(
                {
                    "id": facts.id,
                    "topic": facts.topic,
                    "headers": headers,
                    "body": data["body"],
                    "severity": severity if isinstance(severity, int) else None,
                }
            )
    return corpus


# --- the two populations -------------------------------------------------------

_LEVELS = ("debug", "info", "warning", "error")


def _tracking_rule(rule: RuleSnapshot, me: str) -> tuple[str, Any] | None:
    """FMN 3's tracking rule for one of our positive rules, if it is one."""
    args = rule.arguments
    if rule.negated:
        return None
    match rule.name:
        case "package_owned_by_me":
            return "artifacts-owned", [me]
        case "package_owned_by":
            return "artifacts-owned", [args["username"]]
        case "package_owned_by_group":
            return "artifacts-group-owned", [args["group"]]
        case "package_involved":
            return "artifacts-followed", [{"name": args["package"], "type": "rpms"}]
        case "pertains_to_me":
            return "related-events", None
        case "triggered_by":
            return "users-followed", [args["username"]]
    return None


def _filter(rule: RuleSnapshot) -> tuple[str, Any] | None:
    """FMN 3's filter for one of our rules, if it has one."""
    args = rule.arguments
    match (rule.name, rule.negated):
        case ("app_is", False):
            return "applications", [args["app"]]
        case ("app_is", True):
            return "excluded_applications", [args["app"]]
        case ("topic_matches", False):
            return "topic", args["pattern"]
        case ("triggered_by_me", True):
            return "my_actions", False
        case ("severity_at_least", False):
            return "severities", list(_LEVELS[_LEVELS.index(args["level"].lower()) :])
    return None


#: Ours -> the rule FMN 3 has in its place, when the meaning differs. FMN 3's
#: users-followed matches the message's agent only, not every user it names.
SUBSTITUTES = {"user_involved": "triggered_by"}
_PROTOCOLS = {"email": "email", "irc": "irc"}  # others stand in as FMN 3's third: matrix


@dataclass
class Translation:
    """A population in FMN 3's terms, and ours restricted to what FMN 3 can express."""

    fmn3: dict[str, Any]
    equivalent: list[UserSnapshot]
    kept: int = 0
    substituted: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)


def translate(population: Population) -> Translation:
    """Map each filter to one FMN 3 rule: exactly one tracking rule, the rest filters."""
    users, rules = [], []
    equivalent: list[UserSnapshot] = []
    result = Translation({}, equivalent)
    for user in population.users:
        users.append({"id": user.user_id, "name": user.name})
        contexts = []
        for context in user.contexts:
            kept_filters = []
            for filter_ in context.filters:
                ours = tuple(
                    RuleSnapshot(SUBSTITUTES[r.name], r.arguments, r.negated)
                    if r.name in SUBSTITUTES
                    else r
                    for r in filter_.rules
                )
                for r in filter_.rules:
                    if r.name in SUBSTITUTES:
                        result.substituted[f"{r.name} -> {SUBSTITUTES[r.name]}"] += 1
                tracking = [t for r in ours if (t := _tracking_rule(r, user.name))]
                others = [r for r in ours if not _tracking_rule(r, user.name)]
                filters = [_filter(r) for r in others]
                if len(tracking) != 1 or None in filters:
                    reason = (
                        "no tracking rule"
                        if not tracking
                        else "two tracking rules"
                        if len(tracking) > 1
                        else "no FMN 3 filter for "
                        + ", ".join(
                            sorted(
                                {
                                    ("not " if r.negated else "") + r.name
                                    for r, f in zip(others, filters, strict=True)
                                    if f is None
                                }
                            )
                        )
                    )
                    result.dropped[reason] += 1
                    continue
                result.kept += 1
                kept_filters.append(
                    FilterSnapshot(filter_.filter_id, filter_.name, ours, filter_.active)
                )
                rules.append(
                    {
                        "user_id": user.user_id,
                        "name": filter_.name,
                        "disabled": not (filter_.active and context.enabled),
                        "tracking": list(tracking[0]),
                        "filters": [list(f) for f in filters if f],
                        "protocol": _PROTOCOLS.get(context.context, "matrix"),
                        "address": f"{user.user_id}:{context.context}",
                    }
                )
            contexts.append(ContextSnapshot(context.context, tuple(kept_filters), context.enabled))
        equivalent.append(UserSnapshot(user.user_id, user.name, tuple(contexts)))
    ownership = population.ownership._packages  # the benchmark's own map, read as is
    result.fmn3 = {
        "users": users,
        "rules": rules,
        "ownership": {owner: sorted(p) for owner, p in sorted(ownership.items())},
    }
    return result


# --- statistics -------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _weighted_percentile(samples: Sequence[tuple[float, float]], q: float) -> float:
    """Percentile of (value, weight) pairs: each class of messages weighs its corpus share."""
    ordered = sorted(samples)
    total = sum(w for _, w in ordered)
    running = 0.0
    for value, weight in ordered:
        running += weight
        if running >= q / 100 * total - 1e-12:
            return value
    return ordered[-1][0]


def _us(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:,.2f} s"
    if seconds >= 1e-2:
        return f"{seconds * 1e3:,.1f} ms"
    return f"{seconds * 1e6:,.1f} µs"


def _describe(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    p99 = "max" if len(values) < 100 else "p99"
    return (
        f"n={len(values)}: p50 {_us(_percentile(values, 50))}, "
        f"{p99} {_us(_percentile(values, 99))}, mean {_us(statistics.fmean(values))}"
    )


def _figures(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_us": _percentile(values, 50) * 1e6,
        "p99_us": _percentile(values, 99) * 1e6,
        "mean_us": statistics.fmean(values) * 1e6,
        "msg_per_s": len(values) / sum(values),
    }


# --- timing fmn --------------------------------------------------------------------


def time_ours(
    matcher: Matcher, corpus: Corpus, passes: int, with_facts: bool
) -> dict[str, list[float]]:
    """Seconds per message, ``passes`` samples each, by message id."""
    from time import perf_counter_ns

    samples: dict[str, list[float]] = defaultdict(list)
    recipients = matcher.recipients
    for _ in range(passes):
        for facts in corpus.facts:
            message = facts.message
            started = perf_counter_ns()
            if with_facts:
                recipients(facts_of(message))  # type: ignore[arg-type]
            else:
                recipients(facts)
            samples[facts.id].append((perf_counter_ns() - started) / 1e9)
    return samples


# --- running FMN 3 -----------------------------------------------------------------


def run_fmn3(
    venv: Path,
    work: Path,
    translation: Translation,
    corpus: Corpus,
    budget: float,
    cases: Sequence[str],
    seed: int,
) -> list[dict[str, Any]]:
    """Run the peer runner in FMN 3's virtualenv; returns its JSON-lines records."""
    work.mkdir(parents=True, exist_ok=True)
    population = work / "population.json"
    population.write_text(json.dumps(translation.fmn3), encoding="utf-8")
    messages = work / "messages.jsonl"
    messages.write_text("".join(json.dumps(line) + "\n" for line in corpus.lines), encoding="utf-8")
    out = work / "fmn3.jsonl"
    command = [
        str(_peer_python(venv)),
        "-I",
        str(RUNNER),
        "--work",
        str(work / "db"),
        "--population",
        str(population),
        "--messages",
        str(messages),
        "--out",
        str(out),
        "--budget",
        str(budget),
        "--cases",
        ",".join(cases),
        "--seed",
        str(seed),
    ]
    # Setup grows with the population (rules cache, tracked cache, warm caches);
    # the cases stop themselves at their budgets.
    limit = 900 + budget * len(cases) * 2
    result = subprocess.run(command, env=_peer_env(), timeout=limit, cwd=work)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    if result.returncode != 0:
        raise SystemExit(
            f"FMN 3's runner failed (exit {result.returncode}); records so far in {out}"
        )
    return records


@dataclass
class Fmn3Case:
    """One FMN 3 case's per-message seconds, split by what its tracked cache did."""

    case: str
    untracked: list[float] = field(default_factory=list)
    tracked: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    censored: dict[str, Any] | None = None
    merge: list[float] = field(default_factory=list)

    def projection(self) -> tuple[float, str] | None:
        """A cut-off tracked message's full time, from its pace before the cut-off."""
        c = self.censored
        if not c or not c["rules"]:
            return None
        merge = c.get("merge_seconds")
        if c["case"].startswith("consumer") and merge is None:
            if not c["merged"]:
                return None
            return (
                c["elapsed"] * c["rules"] / c["merged"],
                f"at least: merged {c['merged']:,} of {c['rules']:,} rules into its "
                f"session in {c['elapsed']:.1f} s, before evaluating any",
            )
        before = merge or 0.0
        if not c["evaluated"]:
            return None
        pace = (c["elapsed"] - before) / c["evaluated"]
        text = (
            f"evaluated {c['evaluated']:,} of {c['rules']:,} rules in {c['elapsed'] - before:.1f} s"
        )
        if merge:
            text = f"merged all rules in {merge:.1f} s, then " + text
        return before + pace * c["rules"], text


def fmn3_cases(
    records: Iterable[dict[str, Any]], tracked_of: dict[str, bool | None]
) -> dict[str, Fmn3Case]:
    """Group the runner's records by case."""
    cases: dict[str, Fmn3Case] = {}
    for r in records:
        if r["kind"] not in ("message", "censored"):
            continue
        case = cases.setdefault(r["case"], Fmn3Case(r["case"]))
        if r["kind"] == "censored":
            case.censored = r
        elif r["error"]:
            case.errors[r["error"].split(":")[0]] += 1
        elif tracked_of.get(r["id"]):
            case.tracked.append(r["seconds"])
            if r.get("merge_seconds") is not None:
                case.merge.append(r["merge_seconds"])
        else:
            case.untracked.append(r["seconds"])
    return cases


# --- the report -------------------------------------------------------------------


def _ours_recipients(matcher: Matcher, facts: MessageFacts) -> set[str]:
    return {f"{r.user_id}:{r.context}" for r in matcher.recipients(facts)}


def compare(
    matcher: Matcher, corpus: Corpus, records: Iterable[dict[str, Any]], case: str
) -> dict[str, Any]:
    """Message by message: do FMN 3 and fmn pick the same (user, context) pairs?"""
    by_id = {f.id: f for f in corpus.facts}
    views = {r["id"]: r for r in records if r["kind"] == "view"}
    same = differ = nonempty = 0
    reasons: Counter[str] = Counter()
    examples: list[str] = []
    for record in records:
        if record["kind"] != "message" or record["case"] != case or record["error"]:
            continue
        facts = by_id[record["id"]]
        theirs = {address for _protocol, address in record["recipients"]}
        ours = _ours_recipients(matcher, facts)
        if theirs == ours:
            same += 1
            nonempty += bool(ours)
            continue
        differ += 1
        why = _why(facts, views.get(record["id"], {}))
        reasons[why] += 1
        if len(examples) < 6:
            examples.append(f"{facts.topic}: fmn {len(ours)}, FMN 3 {len(theirs)} ({why})")
    return {
        "case": case,
        "same": same,
        "same_with_recipients": nonempty,
        "differ": differ,
        "reasons": dict(reasons),
        "examples": examples,
    }


def _why(facts: MessageFacts, view: dict[str, Any]) -> str:
    """The first difference between the two systems' reading of a message."""
    if view.get("deprecated") is True:
        return "FMN 3 skips messages of deprecated schemas"
    for name in ("packages", "usernames"):
        value = view.get(name)
        if isinstance(value, str):
            return f"FMN 3's .{name} raised"
        if set(value or ()) != set(getattr(facts, name)):
            return f"{name} differ"
    if (view.get("agent_name") or None) != facts.agent_name:
        return "agent differs"
    if (view.get("app_name") or "").lower() != facts.app_name.lower():
        return "app name differs"
    return "same facts, different answer"


def run_size(
    n_users: int, args: argparse.Namespace, corpus: Corpus, work_root: Path
) -> dict[str, Any]:
    """One population size: build, translate, time both systems, compare."""
    print(f"\n== {n_users:,} users ==", flush=True)
    started = time.perf_counter()
    population = build_population(n_users, corpus_names(corpus.facts), seed=args.seed)
    translation = translate(population)
    full = Matcher.from_snapshots(population.users, ownership=population.ownership)
    ours = Matcher.from_snapshots(translation.equivalent, ownership=population.ownership)
    built = time.perf_counter() - started
    print(
        f"Population ({', '.join(f'{k} {v:,}' for k, v in sorted(population.templates.items()))}"
        f"): {population.filters:,} filters, built and compiled in {built:.1f} s"
    )
    print(
        f"  FMN 3 can express {translation.kept:,} of them as rules (one tracking rule + "
        f"filters + one destination each); not expressible: "
        + ", ".join(f"{v:,} ({k})" for k, v in translation.dropped.most_common())
    )
    if translation.substituted:
        print(
            "  equivalent population: "
            + ", ".join(f"{v:,} x {k}" for k, v in translation.substituted.items())
            + " (FMN 3's users-followed matches the agent only)"
        )
    stats = ours.stats()
    print(
        f"  fmn matcher on it: {stats.filters:,} live filters, {stats.buckets:,} index buckets,"
        f" {stats.always} checked on every message, {stats.never} that can never match"
    )
    results: dict[str, Any] = {
        "users": n_users,
        "filters": population.filters,
        "fmn3_rules": translation.kept,
        "not_expressible": dict(translation.dropped),
        "substituted": dict(translation.substituted),
    }

    records: list[dict[str, Any]] = []
    if args.cases:
        records = run_fmn3(
            args.venv,
            work_root / f"users-{n_users}",
            translation,
            corpus,
            args.budget,
            args.cases,
            args.seed,
        )
    env = next((r for r in records if r["kind"] == "environment"), {})
    loaded = next((r for r in records if r["kind"] == "load"), {})
    setup = next((r for r in records if r["kind"] == "setup"), {})
    tracked_of: dict[str, bool | None] = {
        r["id"]: r["tracked"] for r in records if r["kind"] == "tracked"
    }
    results.update(environment=env, setup=setup)
    if env:
        print(
            f"FMN {env['fmn']} (Python {env['python']}, SQLAlchemy {env['sqlalchemy']}, "
            f"cashews {env['cashews']}, {env['distributions']} distributions installed, "
            f"Kerberos {env['gssapi']}):"
        )
        print(
            f"  {env['db']['rules']:,} rules ({setup['active_rules']:,} enabled) for "
            f"{env['db']['users']:,} users; Pagure copy: {env['pagure']['projects']:,} projects"
        )
        print(
            f"  setup (not timed below): databases {env['build_seconds']:.1f} s, rules cache "
            f"{setup['rules_cache_seconds']:.1f} s, tracked cache "
            f"{setup['tracked_cache_seconds']:.1f} s, FASJSON answers "
            f"{setup['fasjson_warm_seconds']:.1f} s (one miss over loopback HTTP: "
            f"{_us(setup['fasjson_http_miss_seconds'])}), dist-git owners "
            f"{setup['distgit_warm_seconds']:.1f} s"
        )
    n_tracked = sum(1 for v in tracked_of.values() if v)
    n_raising = sum(1 for v in tracked_of.values() if v is None)
    n_untracked = len(tracked_of) - n_tracked - n_raising
    if tracked_of:
        print(
            f"  its tracked cache drops {n_untracked} of {len(tracked_of)} messages after a few "
            f"set lookups; {n_tracked} go through every enabled rule"
            + (f"; {n_raising} raise in a schema property first" if n_raising else "")
        )
        print(
            f"  {loaded.get('deprecated', 0)} messages have a deprecated schema class there "
            f"(FMN 3 notifies nobody of those); {loaded.get('schema_unknown_here', 0)} name a "
            f"schema FMN 3's virtualenv doesn't have"
        )
    results["fmn3_messages"] = loaded

    print(f"Per message, this machine, this run ({args.passes} passes over the corpus for fmn):")
    share_t = n_tracked / max(1, n_tracked + n_untracked)
    ours_timings: dict[str, Any] = {}
    for key, title, matcher, with_facts in (
        ("equivalent", "fmn Matcher.recipients, equivalent population", ours, False),
        ("equivalent+facts", "fmn facts_of + recipients, equivalent population", ours, True),
        (
            "full",
            "fmn Matcher.recipients, full population (FMN 3 can't express all of it)",
            full,
            False,
        ),
    ):
        samples = time_ours(matcher, corpus, args.passes, with_facts)
        every = [s for values in samples.values() for s in values]
        print(f"  {title}")
        print(
            f"      all {len(corpus.facts)} messages {_describe(every)}; "
            f"{len(every) / sum(every):,.0f} msg/s"
        )
        entry = {"all": _figures(every)}
        if tracked_of:
            for name, wanted in (("untracked", False), ("tracked", True)):
                part = [
                    s
                    for i, values in samples.items()
                    if tracked_of.get(i) is wanted
                    for s in values
                ]
                entry[name] = _figures(part)
                print(
                    f"      those FMN 3 {'runs rules for' if wanted else 'drops'}: "
                    f"{_describe(part)}"
                )
        ours_timings[key] = entry
    results["fmn"] = ours_timings

    cases = fmn3_cases(records, tracked_of)
    results["fmn3"] = {}
    for case_name in args.cases:
        case = cases.get(case_name, Fmn3Case(case_name))
        print(f"  {CASE_TITLES[case_name]}")
        print(f"      dropped by its tracked cache: {_describe(case.untracked)} (of {n_untracked})")
        line = f"      through its rules: {_describe(case.tracked)} (of {n_tracked})"
        if case.merge:
            merge = statistics.median(case.merge)
            line += f"; merging the rules into the session took {_us(merge)}"
        print(line)
        entry: dict[str, Any] = {
            "untracked": _figures(case.untracked),
            "tracked": _figures(case.tracked),
            "errors": dict(case.errors),
        }
        if case.errors:
            print(f"      raised: {dict(case.errors)}")
        projected = case.projection()
        if case.censored:
            text = (
                f"      then one cut off by the {args.budget:.0f} s budget after "
                f"{case.censored['elapsed']:.1f} s"
            )
            if projected:
                text += f" ({projected[1]}): projected {_us(projected[0])} for that message"
                entry["projected_tracked_s"] = projected[0]
            print(text)
            entry["censored"] = case.censored
        tracked_mean = (
            statistics.fmean(case.tracked) if case.tracked else projected[0] if projected else None
        )
        if case.untracked and tracked_mean is not None:
            mean = share_t * tracked_mean + (1 - share_t) * statistics.fmean(case.untracked)
            weights = [(v, (1 - share_t) / len(case.untracked)) for v in case.untracked]
            tracked_values = case.tracked or [tracked_mean]
            weights += [(v, share_t / len(tracked_values)) for v in tracked_values]
            p50 = _weighted_percentile(weights, 50)
            p99 = _weighted_percentile(weights, 99)
            basis = "measured" if case.tracked else "projected"
            print(
                f"      corpus mix ({share_t:.0%} through rules, {basis} tracked time): "
                f"estimated {1 / mean:,.2f} msg/s, mean {_us(mean)}, p50 {_us(p50)}, "
                f"p99 {_us(p99)}"
            )
            fmn_mean = ours_timings["equivalent"]["all"]["mean_us"] / 1e6
            print(
                f"      vs fmn's mean {_us(fmn_mean)} on the same population: "
                f"{mean / fmn_mean:,.0f}x"
            )
            entry["corpus_mix_estimate"] = {
                "msg_per_s": 1 / mean,
                "mean_us": mean * 1e6,
                "p50_us": p50 * 1e6,
                "p99_us": p99 * 1e6,
                "tracked_basis": basis,
            }
        results["fmn3"][case_name] = entry

    if records:
        comparisons = [compare(ours, corpus, records, c) for c in args.cases]
        results["agreement"] = comparisons
        print(
            "Same recipients? FMN 3's notifications vs fmn's (user, context) pairs, "
            "per message measured:"
        )
        for c in comparisons:
            if c["same"] + c["differ"] == 0:
                continue
            reasons = "; ".join(f"{v} {k}" for k, v in Counter(c["reasons"]).most_common())
            print(
                f"  {c['case']}: {c['same']} same ({c['same_with_recipients']} of them with "
                f"recipients), {c['differ']} differ" + (f" ({reasons})" if reasons else "")
            )
            for example in c["examples"][:3]:
                print(f"      e.g. {example}")
    return results


def _load() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="population sizes, comma-separated")
    parser.add_argument(
        "--budget",
        type=float,
        default=15.0,
        help="seconds each FMN 3 case may run per size (default 15)",
    )
    parser.add_argument(
        "--cases",
        default=",".join(FMN3_CASES),
        help=f"FMN 3 cases to run, of {', '.join(FMN3_CASES)} ('' for none)",
    )
    parser.add_argument("--passes", type=int, default=5, help="passes over the corpus for fmn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--venv",
        type=Path,
        default=Path(os.environ.get(VENV_VARIABLE) or DEFAULT_VENV),
        help=f"FMN 3's virtualenv (default: ${VENV_VARIABLE}, else {DEFAULT_VENV})",
    )
    parser.add_argument(
        "--create-venv",
        action="store_true",
        help="create FMN 3's virtualenv if it is missing (pip, from PyPI)",
    )
    parser.add_argument(
        "--skip-without-peer",
        action="store_true",
        help="if FMN 3's virtualenv is missing, say so and exit 0 (nox -s bench)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep FMN 3's databases and raw records here (default: temporary)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    args.cases = [c for c in args.cases.split(",") if c]
    if set(args.cases) - set(FMN3_CASES):
        parser.error(f"unknown cases; known: {', '.join(FMN3_CASES)}")
    sizes = [int(s) for s in args.sizes.split(",") if s]

    started = time.perf_counter()
    print_machine()
    # Other work on the machine skews both systems' figures; say how busy it was.
    print(f"  load:    {_load()} (1, 5, 15 min averages) at start")
    if args.cases:
        if args.create_venv:
            ensure_peer_venv(args.venv)
        elif (why := missing_peer(args.venv)) is not None:
            if args.skip_without_peer:
                print(f"\npeer_fmn3: SKIPPED, nothing was measured: {why}", flush=True)
                return 0
            print(f"peer_fmn3: {why}", file=sys.stderr)
            return EXIT_NO_PEER
    corpus = load_corpus(corpus_files())
    print(
        f"Corpus: {len(corpus.facts)} messages for both systems; "
        f"{sum(corpus.rejected.values())} rejected as malformed by fmn_core (and so by "
        f"fedora-messaging) ({dict(corpus.rejected)}); left out: {dict(corpus.left_out)} "
        f"(makes FMN 3 rebuild its caches)"
    )
    report: dict[str, Any] = {
        "machine": describe_machine(),
        "load_at_start": _load(),
        "corpus": len(corpus.facts),
        "budget_s": args.budget,
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="fmn-peer-") as temporary:
        work_root = args.work or Path(temporary)
        for n_users in sizes:
            report["sizes"].append(run_size(n_users, args, corpus, work_root))
    print(f"\nTotal {time.perf_counter() - started:.0f} s; load {_load()} at the end")
    report["load_at_end"] = _load()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
