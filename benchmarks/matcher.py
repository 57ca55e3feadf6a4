"""Matcher benchmark: the indexed matcher against the naive one, at growing populations.

    python benchmarks/matcher.py [--users 1000,10000,100000] [--quick]

For each population size it builds a synthetic population in memory
(``benchmarks/populations.py``), compiles the matcher, runs every corpus message
through ``Matcher.recipients`` several times, and through
``Matcher.naive_recipients`` (every filter of every user) on a sample sized to a
time budget. Every sampled answer of the index is checked against the naive one.

Timings are CPU time of this (single) thread, per message, so that other
processes on the machine don't count as matcher cost; wall-clock throughput is
printed beside it. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import corpus_files
from machine import print_machine
from populations import build_population, corpus_names

from fmn_core.errors import MalformedMessage
from fmn_core.matcher import Matcher
from fmn_core.messages import MessageFacts, facts_of, parse_line

#: The targets this benchmark checks (DESIGN.md "Matcher").
TARGET_RATE_AT_10K = 20_000
#: Issue 16: at 100k users with 5% of them watching whole applications.
TARGET_RATE_AT_100K = 100_000
TARGET_GROWTH_1K_TO_100K = 2.0
TARGET_SPEEDUP_AT_10K = 50.0


@dataclass
class Result:
    """One population size's figures."""

    users: int
    filters: int
    indexed: int
    always: int
    build_s: float
    compile_s: float
    matcher_mib: float
    rss_mib: float
    cpu_rate: float
    wall_rate: float
    p50_us: float
    p99_us: float
    mean_us: float
    candidates: float
    recipients: float
    naive_messages: int
    naive_us: float
    indexed_us_on_sample: float
    mismatches: int

    @property
    def speedup(self) -> float:
        return self.naive_us / self.indexed_us_on_sample


def _rss_mib() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def load_corpus() -> tuple[list[MessageFacts], int]:
    """Every corpus message's facts, and how many lines could not be read."""
    facts: list[MessageFacts] = []
    malformed = 0
    for path in corpus_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                facts.append(facts_of(parse_line(line)))
            except MalformedMessage:
                malformed += 1
    return facts, malformed


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_size(
    n_users: int,
    messages: list[MessageFacts],
    rounds: int,
    naive_budget_s: float,
    app_watchers: float,
    seed: int,
) -> Result:
    """Build, compile and measure one population size."""
    names = corpus_names(messages)
    gc.collect()
    rss_before = _rss_mib()
    started = time.perf_counter()
    population = build_population(n_users, names, seed=seed, app_watchers=app_watchers)
    build_s = time.perf_counter() - started

    started = time.process_time()
    matcher = Matcher.from_snapshots(population.users, ownership=population.ownership)
    compile_s = time.process_time() - started
    gc.collect()
    rss_mib = _rss_mib() - rss_before

    # The matcher's own structures (entries, index, compiled rules), without the
    # snapshots the population already holds: compiled again under tracemalloc.
    tracemalloc.start()
    traced = Matcher.from_snapshots(population.users, ownership=population.ownership)
    matcher_mib = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    del traced
    gc.collect()

    for facts in messages:  # warm-up
        matcher.recipients(facts)

    per_message: list[list[int]] = [[] for _ in messages]
    cpu_total = 0
    wall_total = 0.0
    clock = time.thread_time_ns
    for _ in range(rounds):
        wall_started = time.perf_counter()
        for i, facts in enumerate(messages):
            before = clock()
            matcher.recipients(facts)
            elapsed = clock() - before
            per_message[i].append(elapsed)
            cpu_total += elapsed
        wall_total += time.perf_counter() - wall_started
    samples = sorted(ns / 1000 for times in per_message for ns in times)
    medians = [statistics.median(times) / 1000 for times in per_message]
    count = len(messages) * rounds

    candidates = sum(matcher.count_candidates(f) for f in messages) / len(messages)
    recipients = sum(len(matcher.recipients(f)) for f in messages) / len(messages)

    # The naive matcher on as many messages as the budget allows, spread evenly.
    probe = messages[: min(3, len(messages))]
    before = clock()
    for facts in probe:
        matcher.naive_recipients(facts)
    naive_estimate_s = (clock() - before) / 1e9 / len(probe)
    sample_size = max(len(probe), min(len(messages), int(naive_budget_s / naive_estimate_s)))
    step = max(1, len(messages) // sample_size)
    chosen = list(range(0, len(messages), step))[:sample_size]
    naive_ns = 0
    mismatches = 0
    for i in chosen:
        before = clock()
        naive = matcher.naive_recipients(messages[i])
        naive_ns += clock() - before
        if naive != matcher.recipients(messages[i]):
            mismatches += 1
    stats = matcher.stats()
    return Result(
        users=n_users,
        filters=stats.filters,
        indexed=stats.indexed,
        always=stats.always,
        build_s=build_s,
        compile_s=compile_s,
        matcher_mib=matcher_mib,
        rss_mib=rss_mib,
        cpu_rate=count / (cpu_total / 1e9),
        wall_rate=count / wall_total,
        p50_us=_percentile(samples, 0.50),
        p99_us=_percentile(samples, 0.99),
        mean_us=cpu_total / 1000 / count,
        candidates=candidates,
        recipients=recipients,
        naive_messages=len(chosen),
        naive_us=naive_ns / 1000 / len(chosen),
        indexed_us_on_sample=statistics.fmean(medians[i] for i in chosen),
        mismatches=mismatches,
    )


def _report(result: Result, total_messages: int) -> None:
    r = result
    sampled = (
        f"all {total_messages}"
        if r.naive_messages >= total_messages
        else f"a sample of {r.naive_messages} of {total_messages} messages (time budget)"
    )
    print(
        f"\n{r.users:,} users: {r.filters:,} live filters ({r.indexed:,} indexed, "
        f"{r.always:,} checked on every message)"
    )
    print(f"  build population {r.build_s:.1f} s; compile {r.compile_s:.2f} s CPU")
    print(
        f"  memory: matcher {r.matcher_mib:.1f} MiB (tracemalloc), "
        f"population + matcher {r.rss_mib:.0f} MiB (RSS growth)"
    )
    print(
        f"  indexed: {r.cpu_rate:,.0f} msg/s CPU ({r.wall_rate:,.0f} msg/s wall); "
        f"per message p50 {r.p50_us:.1f} us, p99 {r.p99_us:.1f} us, mean {r.mean_us:.1f} us"
    )
    print(f"  per message: {r.candidates:.1f} filters evaluated, {r.recipients:.2f} recipients")
    print(
        f"  naive: {r.naive_us:,.0f} us/message on {sampled}; "
        f"speedup {r.speedup:,.0f}x (same messages); "
        f"answers checked: {r.naive_messages - r.mismatches}/{r.naive_messages} equal"
    )


def _summary(results: list[Result]) -> int:
    print("\nSummary (CPU time, one thread)")
    print(
        f"  {'users':>8} {'msg/s':>9} {'p50 us':>8} {'p99 us':>8} {'mean us':>8} "
        f"{'evaluated':>9} {'recips':>7} {'naive us':>10} {'speedup':>8} {'matcher':>9}"
    )
    for r in results:
        print(
            f"  {r.users:>8,} {r.cpu_rate:>9,.0f} {r.p50_us:>8.1f} {r.p99_us:>8.1f} "
            f"{r.mean_us:>8.1f} {r.candidates:>9.1f} {r.recipients:>7.2f} "
            f"{r.naive_us:>10,.0f} {r.speedup:>7,.0f}x {r.matcher_mib:>6.1f} MiB"
        )
    by_size = {r.users: r for r in results}
    failed = sum(r.mismatches for r in results)
    print("\nTargets")
    if failed:
        print(f"  FAIL  the index disagreed with the naive matcher on {failed} message(s)")
    if 10_000 in by_size:
        r = by_size[10_000]
        ok = r.cpu_rate >= TARGET_RATE_AT_10K
        print(
            f"  {'met ' if ok else 'NOT MET'}  >= {TARGET_RATE_AT_10K:,} msg/s at 10k users: "
            f"{r.cpu_rate:,.0f}"
        )
        ok = r.speedup >= TARGET_SPEEDUP_AT_10K
        print(
            f"  {'met ' if ok else 'NOT MET'}  >= {TARGET_SPEEDUP_AT_10K:.0f}x naive at 10k users: "
            f"{r.speedup:,.0f}x"
        )
    if 100_000 in by_size:
        r = by_size[100_000]
        ok = r.cpu_rate >= TARGET_RATE_AT_100K
        print(
            f"  {'met ' if ok else 'NOT MET'}  >= {TARGET_RATE_AT_100K:,} msg/s at 100k users: "
            f"{r.cpu_rate:,.0f}"
        )
    if 1_000 in by_size and 100_000 in by_size:
        growth = by_size[100_000].mean_us / by_size[1_000].mean_us
        ok = growth <= TARGET_GROWTH_1K_TO_100K
        print(
            f"  {'met ' if ok else 'NOT MET'}  cost per message grows <= "
            f"{TARGET_GROWTH_1K_TO_100K:.0f}x from 1k to 100k users: {growth:.2f}x "
            f"(mean {by_size[1_000].mean_us:.1f} -> {by_size[100_000].mean_us:.1f} us)"
        )
    # A missed speed target is a figure to report (the machine may be loaded), not a
    # failure; a disagreement with the naive evaluation is a wrong answer, and fails.
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--users",
        default="1000,10000,100000",
        help="population sizes, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1k, 10k and 100k users, one timed pass, a smaller naive budget",
    )
    parser.add_argument("--rounds", type=int, default=5, help="passes over the corpus per size")
    parser.add_argument(
        "--naive-budget",
        type=float,
        default=20.0,
        help="seconds of naive matching per size, at most (default: %(default)s)",
    )
    parser.add_argument(
        "--app-watchers",
        type=float,
        default=0.05,
        help="app watchers: a number (>= 1) or a share of users (< 1) (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON (for plots)")
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU (Linux)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.users.split(",") if s.strip()]
    rounds, budget = args.rounds, args.naive_budget
    if args.quick:
        rounds, budget = min(rounds, 1), min(budget, 3.0)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    print_machine()
    print(f"  load:    {_load_average()} (1, 5, 15 min) at start")
    started = time.perf_counter()
    messages, malformed = load_corpus()
    print(
        f"\nCorpus: {len(messages)} messages read in {time.perf_counter() - started:.1f} s "
        f"({malformed} malformed lines skipped), {rounds} timed passes per size"
    )
    watchers = (
        f"{args.app_watchers:.0%} of users"
        if args.app_watchers < 1
        else f"{int(args.app_watchers)} users"
    )
    print(f"Population: benchmarks/populations.py, seed {args.seed}, app watchers: {watchers}")

    results = []
    for n in sizes:
        result = run_size(n, messages, rounds, budget, args.app_watchers, args.seed)
        _report(result, len(messages))
        results.append(result)
    status = _summary(results)
    if args.json:
        figures = [{**vars(r), "speedup": r.speedup} for r in results]
        Path(args.json).write_text(
            json.dumps({"load": list(os.getloadavg()), "sizes": figures}, indent=1),
            encoding="utf-8",
        )
    print(f"\n  load:    {_load_average()} (1, 5, 15 min) at the end")
    return status


if __name__ == "__main__":
    sys.exit(main())
