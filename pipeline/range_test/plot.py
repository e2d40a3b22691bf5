"""The range test's figure: each seed's smoothed loss against the LR (log axis), their mean, and where k0, k1 and the
lowest mean loss are."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pipeline.range_test.rule import Curve, RangeResult


def _ylim(values: Sequence[float], starts: Sequence[float]) -> tuple[float, float] | None:
    """From the lowest loss to a bit above the highest starting loss: the blow-up at the end of the sweep would
    otherwise squash the part that matters flat."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    low = min(finite)
    high = max([v for v in starts if math.isfinite(v)] + [low * 1.05])
    pad = (high - low) * 0.15 or abs(high) * 0.1 or 1.0
    return low - pad, high + pad


def range_test_png(curves: Sequence[Curve], result: RangeResult, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for c in curves:
        ax.plot(c.lr, c.loss, lw=0.9, alpha=0.55, label=f"seed {c.seed}")
    ax.plot(result.lr, result.mean_loss, lw=2.0, color="black", label=f"mean of {len(curves)} seeds")
    ax.set_xscale("log")
    ax.axvline(result.k0, color="#2e7d32", ls="--", lw=1.2, label=f"k0 = {result.k0:.3g}")
    ax.axvline(result.k1, color="#c62828", ls="--", lw=1.2, label=f"k1 = {result.k1:.3g}")
    ax.plot([result.lr_at_min], [result.min_loss], "o", color="black", ms=5,
            label=f"lowest mean loss at {result.lr_at_min:.3g}")
    limits = _ylim([v for c in curves for v in c.loss], [c.loss[0] for c in curves if c.loss])
    if limits:
        ax.set_ylim(*limits)
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss (centred 5-step average)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
