"""The session-size plot: tail read and turn append latency against the session's size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABELS = {
    "agentledger-sdk": "agentledger (SDK session)",
    "asyncpg-floor": "hand-written asyncpg (floor)",
    "sdk-sqlalchemy": "Agents SDK SQLAlchemySession (peer)",
}
STYLES = {
    "agentledger-sdk": {"color": "tab:blue", "marker": "o"},
    "asyncpg-floor": {"color": "tab:gray", "marker": "s", "linestyle": "--"},
    "sdk-sqlalchemy": {"color": "tab:orange", "marker": "^"},
}


def plot_sweep(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = results["sweep"]
    sizes = sorted(sweep, key=int)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    titles = {"tail50": "get_items(limit=50)", "append": "add_items(user + assistant turn)"}
    for axis, op in zip(axes, ("tail50", "append"), strict=True):
        for name in sweep[sizes[0]][op]:
            xs = [int(s) for s in sizes]
            p50 = [sweep[s][op][name]["p50_ms"] for s in sizes]
            axis.plot(xs, p50, label=LABELS.get(name, name), **STYLES.get(name, {}))
        axis.set_xscale("log")
        axis.set_ylim(bottom=0)
        axis.set_xlabel("items in the session")
        axis.set_ylabel("median latency (ms)")
        axis.set_title(titles[op])
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    meta = results["meta"]
    figure.suptitle(
        f"PostgreSQL {meta.get('postgresql', '?')}, loopback, {meta['machine']} "
        f"(shared machine), {meta['started'][:10]}",
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
