"""Plots for docs/performance.md, drawn from the benchmarks' own JSON figures.

    python benchmarks/plots.py [--results benchmarks/results] [--out docs/images]

Reads what ``ingest.py --json``, ``latency.py --json``, ``matcher.py --json`` and
``startup.py --json`` wrote (``nox -s bench`` writes them to
``benchmarks/results/``), draws one PNG per benchmark, and prints one met / not
met line per issue-16 goal found in them. matplotlib is a benchmark-only
dependency (``nox -s bench`` installs it); a missing JSON file skips its plot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _load_note(load: list[float]) -> str:
    return f"load average (1 min) {min(load):.1f}-{max(load):.1f} on 2 cores"


def plot_ingest(figures: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    runs = figures["runs"]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [r["processes"] for r in runs]
    ax.plot(xs, [r["total_rate"] for r in runs], "o-", label="fmn, all processes")
    ax.plot(
        xs, [sum(r["rates"]) / len(r["rates"]) for r in runs], "s--", label="fmn, mean per process"
    )
    for name, base in figures["baselines"].items():
        ax.axhline(base["total_rate"], linestyle=":", color="grey")
        ax.annotate(
            f"{name}: {base['total_rate']:,.0f}/s",
            (xs[0], base["total_rate"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    ax.set_xticks(xs)
    ax.set_xlabel("fmn consumer processes on one queue")
    ax.set_ylabel("messages/s")
    loads = [x for r in runs for x in r["load"]]
    ax.set_title(
        f"Ingest, {figures['messages']:,} messages, {figures['users']:,} users\n"
        f"({_load_note(loads)})",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "ingest-scale-out.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_latency(figures: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    runs = figures["runs"]
    fig, ax = plt.subplots(figsize=(7, 4))
    labels, values, colours = [], [], []
    shades = {
        ("baseline", "p50"): "lightgrey",
        ("baseline", "p99"): "grey",
        ("fmn", "p50"): "lightblue",
        ("fmn", "p99"): "tab:blue",
    }
    for run in runs:
        for who in ("baseline", "fmn"):
            got = run.get(who)
            if got is None:
                continue
            for p in ("p50", "p99"):
                labels.append(f"{run['rate']:g}/s\n{who} {p}")
                values.append(got[p])
                colours.append(shades[who, p])
    ax.bar(range(len(values)), values, color=colours)
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("publish -> SMTP accepted (ms, log scale)")
    loads = [x for r in runs for x in r["load"]]
    ax.set_title(f"Latency, {figures['seconds']:g} s per rate ({_load_note(loads)})", fontsize=10)
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def judged_start(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The start-up benchmark's run that its goals are judged on: the consumer's
    start with the median time to ready at the largest population (the lower middle
    one of an even count). Runs written before the whole daemon was measured have
    no "parts": consumers."""
    consumers = [r for r in runs if r.get("parts", "consumer") == "consumer"]
    largest = max(r["users"] for r in consumers)
    starts = sorted((r for r in consumers if r["users"] == largest), key=lambda r: r["ready_s"])
    return starts[(len(starts) - 1) // 2]


def plot_matcher(figures: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    sizes = figures["sizes"]
    fig, ax = plt.subplots(figsize=(7, 4))
    users = [s["users"] for s in sizes]
    ax.plot(users, [s["mean_us"] for s in sizes], "o-", label="indexed + grouped, mean")
    ax.plot(users, [s["p99_us"] for s in sizes], "s--", label="indexed + grouped, p99")
    ax.plot(
        users,
        [s["naive_us"] for s in sizes],
        "x:",
        color="grey",
        label="naive (every filter), sampled",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("users (5% application watchers)")
    ax.set_ylabel("µs per message (CPU)")
    ax.set_title(f"Matcher ({_load_note(figures['load'][:1])})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "matcher.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def goals(results: Path) -> list[tuple[str, str, bool]]:
    """(goal, figure with its baseline, met) for every goal whose figures exist."""
    found: list[tuple[str, str, bool]] = []
    ingest = _read(results / "ingest.json")
    if ingest:
        single = next((r for r in ingest["runs"] if r["processes"] == 1), None)
        bare = ingest["baselines"].get("bare pika consume+ack")
        if single:
            found.append(
                (
                    "ingest >= 4,000 msg/s, 1 process",
                    f"{single['total_rate']:,.0f} msg/s",
                    single["total_rate"] >= 4000,
                )
            )
        if single and bare:
            ratio = single["total_rate"] / bare["total_rate"]
            figure = f"{ratio:.2f}x ({bare['total_rate']:,.0f} msg/s bare)"
            mine, theirs = single.get("per_message_us"), bare.get("per_message_us")
            if mine and theirs:
                figure += f"; whole machine {mine['machine']:.0f} vs {theirs['machine']:.0f} us/msg"
            pairs = ingest.get("pairs", [])
            if len(pairs) > 1:
                figure += "; pairs " + " / ".join(f"{p['fmn'] / p['bare']:.2f}x" for p in pairs)
            found.append(("ingest >= 0.65x bare pika consume+ack", figure, ratio >= 0.65))
        if ingest["runs"]:
            found.append(
                (
                    "ingest: nothing lost, outbox = matcher",
                    "all checks"
                    if all(r["checks_ok"] for r in ingest["runs"])
                    else "a check failed",
                    all(r["checks_ok"] for r in ingest["runs"]),
                )
            )
    latency = _read(results / "latency.json")
    for run in (latency or {}).get("runs", []):
        target = 50.0 if run["rate"] <= 50 else 100.0
        fmn, base = run.get("fmn"), run.get("baseline")
        if fmn:
            shown = f"p99 {fmn['p99']:.0f} ms" + (f" (bare {base['p99']:.0f} ms)" if base else "")
            found.append(
                (
                    f"latency p99 <= {target:.0f} ms at {run['rate']:g} msg/s",
                    shown,
                    fmn["p99"] <= target and not fmn["missing"],
                )
            )
    matcher = _read(results / "matcher.json")
    if matcher:
        by = {s["users"]: s for s in matcher["sizes"]}
        if 100_000 in by:
            found.append(
                (
                    "matcher >= 100,000 msg/s at 100k users",
                    f"{by[100_000]['cpu_rate']:,.0f} msg/s",
                    by[100_000]["cpu_rate"] >= 1e5,
                )
            )
        if 1_000 in by and 100_000 in by:
            growth = by[100_000]["mean_us"] / by[1_000]["mean_us"]
            found.append(("matcher cost at 100k <= 2x at 1k", f"{growth:.2f}x", growth <= 2))
        bad = sum(s["mismatches"] for s in matcher["sizes"])
        found.append(("matcher = naive on every sampled message", f"{bad} differ", bad == 0))
    startup = _read(results / "startup.json")
    if startup:
        largest = judged_start(startup)
        if largest["users"] < 100_000:
            # Quick mode: the figures are printed above, but the goal is at 100k users.
            print(
                f"  (start-up measured at {largest['users']:,} users only: the goals are at "
                "100,000; run nox -s bench -- startup --full)"
            )
        else:
            found.append(
                (
                    "cold start <= 5 s at 100k users",
                    f"{largest['ready_s']:.1f} s",
                    largest["ready_s"] <= 5,
                )
            )
            found.append(
                (
                    "daemon RSS <= 400 MB at 100k users",
                    f"{largest['rss_mb']:.0f} MB ({largest['rss_mib']:.0f} MiB)",
                    largest["rss_mb"] <= 400,
                )
            )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "images")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print("matplotlib is not installed (nox -s bench installs it): no plots")
    else:
        for name, draw in (
            ("ingest", plot_ingest),
            ("latency", plot_latency),
            ("matcher", plot_matcher),
        ):
            figures = _read(args.results / f"{name}.json")
            if figures:
                print(f"  plot: {draw(figures, args.out)}")
    print(f"\nIssue 16 goals (figures from this run's JSON in {args.results}):")
    for goal, figure, met in goals(args.results):
        print(f"  {'MET    ' if met else 'NOT MET'}  {goal}: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
