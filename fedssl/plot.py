"""The run's picture: kNN top-1 per round and probe task, with every baseline as a line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_knn(metrics: dict[str, Any], path: Path) -> None:
    """kNN top-1 per round and task, with the raw-pixel, random-init and local-only baselines dashed."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = [r["round"] for r in metrics["rounds"]]
    for i, task in enumerate(sorted({t for r in metrics["rounds"] for t in r.get("knn", {})})):
        color = f"C{i}"
        ax.plot(rounds, [r["knn"].get(task, np.nan) for r in metrics["rounds"]], "o-", color=color,
                label=f"{task} (federated)")
        for style, name in ((":", "raw-pixels"), (":", "raw-log-mel"),
                            ("--", "random-init"), ((0, (1, 3)), "random-init-bn"),
                            ("-.", "local-only")):
            value = metrics["baselines"].get(name, {}).get(task)
            if value is not None:
                ax.axhline(value, linestyle=style, color=color, alpha=0.6, label=f"{task} ({name})")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("kNN top-1")
    ax.set_title(f"run {metrics['run_id']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
