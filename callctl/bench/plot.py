"""PNG plot of a benchmark run: latency distributions (callctl vs baseline), hop breakdown,
latency vs concurrency. Uses matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def plot(report: dict[str, Any], samples: Mapping[str, Sequence[float]], path: Path) -> None:
    """Write the plot to ``path``. ``samples`` maps "callctl"/"baseline" to turn latencies (s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for name, values in samples.items():
        if values:
            xs = sorted(v * 1000 for v in values)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=f"{name} (n={len(xs)})")
    ax.axvline(400, color="red", linestyle="--", linewidth=1, label="400 ms budget")
    ax.set_xlabel("turn latency (ms)")
    ax.set_ylabel("share of turns")
    ax.set_title("Turn latency, caller side")
    ax.legend(loc="lower right")

    ax = axes[1]
    hops = report.get("hops_ms", {})
    names = list(hops)
    p50 = [hops[n]["p50"] or 0 for n in names]
    p95 = [hops[n]["p95"] or 0 for n in names]
    idx = range(len(names))
    ax.barh([i + 0.2 for i in idx], p50, height=0.4, label="p50")
    ax.barh([i - 0.2 for i in idx], p95, height=0.4, label="p95")
    ax.set_yticks(list(idx), names)
    ax.set_xlabel("ms")
    ax.set_title("Where the time goes (per hop)")
    ax.legend()

    ax = axes[2]
    sweep = report.get("sweep") or []
    if sweep:
        calls = [r["calls"] for r in sweep]
        for q in ("p50", "p95", "p99"):
            ax.plot(calls, [r["turn_latency_ms"][q] or 0 for r in sweep], marker="o", label=q)
        ax.axhline(400, color="red", linestyle="--", linewidth=1)
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no sweep in this run", ha="center", va="center")
    ax.set_xlabel("concurrent calls")
    ax.set_ylabel("turn latency (ms)")
    ax.set_title("Latency vs concurrency")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
