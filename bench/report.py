"""Markdown tables from benchmark results, for docs/performance.md (numbers are never typed).

``python -m bench.report bench/results/latest.json [--before bench/results/before.json]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

FLOOR, PEER = "asyncpg-floor", "sdk-sqlalchemy"
CONTENDERS = ("agentledger-sdk", "agentledger-service", FLOOR, PEER)


def _load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def latency_table(results: dict[str, Any]) -> str:
    plan = results["meta"]["plan"]
    rows = [
        "| workload | contender | p50 ms | p99 ms | p50 / floor | p50 / peer |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    titles = {
        "turn_append": "turn append (user + assistant item)",
        "tail50": f"`get_items(limit=50)`, {plan['tail_size']:,}-item session",
        "full_read": f"`get_items()`, {plan['full_size']:,}-item session",
    }
    for workload, title in titles.items():
        entry = results[workload]
        for name in CONTENDERS:
            stats = entry[name]
            rows.append(
                f"| {title} | {name} | {stats['p50_ms']:.3f} | {stats['p99_ms']:.3f} | "
                f"{stats['p50_ms'] / entry[FLOOR]['p50_ms']:.2f} | "
                f"{stats['p50_ms'] / entry[PEER]['p50_ms']:.2f} |"
            )
            title = ""
    conc = results["concurrent_append"]
    title = f"{plan['concurrent_sessions']} sessions appending, items/s"
    for name in CONTENDERS:
        rate = conc[name]["items_per_s"]
        rows.append(
            f"| {title} | {name} | {rate:,.0f} | | {rate / conc[FLOOR]['items_per_s']:.2f} | "
            f"{rate / conc[PEER]['items_per_s']:.2f} |"
        )
        title = ""
    return "\n".join(rows)


def listing_table(results: dict[str, Any]) -> str:
    rows = [
        "| sessions of the user | agentledger p50 ms | p99 ms | floor p50 ms | p50 / floor |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    listing = results["listing"]
    for count in sorted((k for k in listing if k != "plan"), key=int):
        ours, floor = listing[count]["agentledger-service"], listing[count][FLOOR]
        rows.append(
            f"| {int(count):,} | {ours['p50_ms']:.3f} | {ours['p99_ms']:.3f} | "
            f"{floor['p50_ms']:.3f} | {ours['p50_ms'] / floor['p50_ms']:.2f} |"
        )
    return "\n".join(rows)


def cpu_table(results: dict[str, Any]) -> str:
    cpu = results["client_cpu"]
    rows = [
        f"| µs of client CPU per call (median of {cpu['rounds']} rounds of {cpu['per_round']}) "
        "| agentledger-sdk | asyncpg-floor | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for op, title in (("append", "turn append"), ("tail50", "`get_items(50)`")):
        for mode in ("pooled", "dedicated"):
            ours = cpu[op][f"agentledger-sdk {mode}"]["cpu_us"]
            floor = cpu[op][f"asyncpg-floor {mode}"]["cpu_us"]
            rows.append(f"| {title}, {mode} | {ours:.0f} | {floor:.0f} | {ours / floor:.2f} |")
    return "\n".join(rows)


def throughput_lines(results: dict[str, Any]) -> str:
    conc = results["concurrent_append"]
    return "\n".join(
        f"- {name}: median {stats['items_per_s']:,.0f} items/s, rounds "
        f"{min(stats['rounds']):,.0f} to {max(stats['rounds']):,.0f}"
        for name, stats in conc.items()
    )


def records_lines(results: dict[str, Any]) -> str:
    rec = results["records"]
    items = rec["get_items()"]
    lines = [
        f"- `{name}`: {rec[name]:.2f} ms ({rec[name] / items:.2f}× `get_items()`)"
        for name in ("get_items()", "get_session()", "export_session()")
    ]
    if "asyncpg: items" in rec:
        driver = rec["asyncpg: items"]
        lines.append(
            f"- hand-written asyncpg, the items: {driver:.2f} ms; the record's columns: "
            f"{rec['asyncpg: history columns']:.2f} ms "
            f"({rec['asyncpg: history columns'] / driver:.2f}× its items read)"
        )
    return "\n".join(lines)


def compacted_lines(results: dict[str, Any]) -> str:
    comp = results.get("compacted")
    if comp is None:
        return "(not in this run)"
    return (
        f"`LedgerSession.get_items()` on {comp['size']:,} messages with a checkpoint 40 from "
        f"the end: {comp['compacted']['p50_ms']:.3f} ms p50; on a 40-message session "
        f"{comp['short']['p50_ms']:.3f} ms ({comp['ratio_p50']:.2f}×)"
    )


def sweep_table(results: dict[str, Any]) -> str:
    sweep = results["sweep"]
    sizes = sorted(sweep, key=int)
    header = " | ".join(f"{int(s):,} items" for s in sizes)
    rows = [
        f"| p50 ms | contender | {header} | largest / smallest |",
        "| --- | --- |" + " ---: |" * (len(sizes) + 1),
    ]
    for op, title in (("tail50", "`get_items(50)`"), ("append", "turn append")):
        for name in (n for n in CONTENDERS if n in sweep[sizes[0]][op]):
            values = [sweep[s][op][name]["p50_ms"] for s in sizes]
            cells = " | ".join(f"{v:.3f}" for v in values)
            rows.append(f"| {title} | {name} | {cells} | {values[-1] / values[0]:.2f} |")
            title = ""
    return "\n".join(rows)


def cleanup_lines(results: dict[str, Any]) -> str:
    c = results["cleanup"]
    live = c.get("live_append") or {}
    lines = [
        f"- {c['messages']:,} messages in {c['sessions']:,} idle sessions (built in "
        f"{c['build_s']:.0f} s), deleted in {c['total_s']:.1f} s "
        f"({c['messages_per_s']:,} messages/s) in {c['batches']} batches of at most "
        f"{c['batch_size_sessions']} sessions;",
        f"- per batch (one `DELETE` statement and its commit): median {c['batch_p50_ms']:.0f} ms, "
        f"longest {c['batch_max_ms']:.0f} ms;",
    ]
    if live:
        lines.append(
            f"- an agent session appending a turn every 20 ms meanwhile: median "
            f"{live['p50_ms']:.2f} ms, longest {live['max_ms']:.1f} ms over {live['n']} turns."
        )
    return "\n".join(lines)


def targets_table(results: dict[str, Any]) -> str:
    rows = ["| target | measured | bound | |", "| --- | ---: | ---: | --- |"]
    for t in results["targets"]:
        sign = "≤" if t["at_most"] else "≥"
        rows.append(
            f"| {t['target']} | {t['value']:.2f} | {sign} {t['bound']} | "
            f"{'met' if t['met'] else '**missed**'} |"
        )
    return "\n".join(rows)


def comparison_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    rows = [
        "| agentledger (SDK session) | before | after |",
        "| --- | ---: | ---: |",
    ]

    def ratio(results: dict[str, Any], workload: str) -> float:
        entry = results[workload]
        value: float = entry["agentledger-sdk"]["p50_ms"] / entry[FLOOR]["p50_ms"]
        return value

    for workload, title in (
        ("turn_append", "turn append p50 / floor"),
        ("tail50", "tail-50 read p50 / floor"),
        ("full_read", "full 1k read p50 / floor"),
    ):
        rows.append(f"| {title} | {ratio(before, workload):.2f} | {ratio(after, workload):.2f} |")
    for other, title in ((FLOOR, "floor"), (PEER, "SDK peer")):

        def rate(results: dict[str, Any], other: str = other) -> float:
            conc = results["concurrent_append"]
            value: float = conc["agentledger-sdk"]["items_per_s"] / conc[other]["items_per_s"]
            return value

        rows.append(
            f"| concurrent append items/s / {title} | {rate(before):.2f} | {rate(after):.2f} |"
        )
    b, a = before["cleanup"], after["cleanup"]
    rows.append(f"| cleanup, batches | {b['batches']} | {a['batches']} |")
    rows.append(
        f"| cleanup, median batch (ms) | {b['batch_p50_ms']:.0f} | {a['batch_p50_ms']:.0f} |"
    )
    rows.append(
        f"| cleanup, longest batch (ms) | {b['batch_max_ms']:.0f} | {a['batch_max_ms']:.0f} |"
    )
    if b.get("live_append") and a.get("live_append"):
        rows.append(
            f"| live append during cleanup, p50 (ms) | {b['live_append']['p50_ms']:.2f} | "
            f"{a['live_append']['p50_ms']:.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("results", type=Path)
    parser.add_argument("--before", type=Path)
    args = parser.parse_args()
    results = _load(args.results)
    meta = results["meta"]
    mode = meta["plan"]["mode"]
    print(
        f"<!-- {args.results}: {meta['started']} to {meta['finished']}, {mode} run, "
        f"PostgreSQL {meta.get('postgresql')}, Python {meta['python']}, {meta['machine']} -->"
    )
    for title, body in (
        ("Latency and throughput", latency_table(results)),
        ("Listing", listing_table(results)),
        ("Client CPU", cpu_table(results)),
        ("Throughput rounds", throughput_lines(results)),
        (f"Records on {results['records']['size']:,} messages", records_lines(results)),
        ("Compacted sessions", compacted_lines(results)),
        ("Session size", sweep_table(results)),
        ("Cleanup", cleanup_lines(results)),
        ("Targets", targets_table(results)),
    ):
        print(f"\n### {title}\n\n{body}")
    if args.before is not None:
        print(f"\n### Before and after\n\n{comparison_table(_load(args.before), results)}")


if __name__ == "__main__":
    main()
