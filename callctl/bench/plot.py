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
    base_hops = (report.get("baseline") or {}).get("hops_ms") or {}
    names = list(dict.fromkeys([*hops, *base_hops]))
    idx = range(len(names))

    def q(h: dict[str, Any], n: str, k: str) -> float:
        return float((h.get(n) or {}).get(k) or 0)

    ax.barh([i + 0.27 for i in idx], [q(hops, n, "p50") for n in names], height=0.27,
            label="callctl p50")
    ax.barh(list(idx), [q(hops, n, "p95") for n in names], height=0.27, label="callctl p95")
    if base_hops:
        ax.barh([i - 0.27 for i in idx], [q(base_hops, n, "p50") for n in names],
                height=0.27, label="baseline p50")
    ax.set_yticks(list(idx), names)
    ax.set_xlabel("ms")
    ax.set_title("Where the time goes (per hop)")
    ax.legend()

    ax = axes[2]
    sweep = report.get("sweep") or []
    if sweep:
        calls = [r["calls"] for r in sweep]
        for k in ("p50", "p95", "p99"):
            ax.plot(calls, [r["turn_latency_ms"][k] or 0 for r in sweep], marker="o", label=k)
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
