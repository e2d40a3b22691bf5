"""The files an LCA run leaves behind: the per-step CSV of per-layer LCA and its layers × steps heatmap."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path


def write_layers_csv(rows: Sequence[dict[str, float]], path: Path) -> None:
    """One row per measured step: ``step``, the step's totals, then one column per layer (loss units)."""
    columns = list(rows[0])
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def heatmap_png(steps: Sequence[int], layers: Sequence[str], values: Sequence[Sequence[float]], path: Path,
                title: str) -> None:
    """Layers × steps heatmap of per-step LCA, diverging colours centred at 0 (blue: helped, red: hurt)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.asarray(values, dtype=float)  # [layers, steps]
    bound = float(np.nanmax(np.abs(grid))) if grid.size else 1.0
    bound = bound if bound > 0 else 1.0
    fig, ax = plt.subplots(figsize=(min(14.0, 4.0 + 0.08 * len(steps)), 1.6 + 0.35 * len(layers)), dpi=100)
    image = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    ax.set_yticks(range(len(layers)), layers, fontsize=8)
    ticks = list(range(0, len(steps), math.ceil(len(steps) / 10)))  # at most 10 step labels, evenly spaced
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks], fontsize=8)
    ax.set(xlabel="optimizer step", title=title)
    fig.colorbar(image, ax=ax, label="LCA (loss change; < 0 helped)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_artifacts(rows: Sequence[dict[str, float]], layers: Sequence[str], directory: Path,
                    title: str) -> list[Path]:
    """``lca_layers.csv`` and ``lca_heatmap.png`` of the measured ``rows`` in ``directory``; their paths, in order."""
    csv_path, png_path = directory / "lca_layers.csv", directory / "lca_heatmap.png"
    write_layers_csv(rows, csv_path)
    steps = [int(r["step"]) for r in rows]
    heatmap_png(steps, layers, [[r[layer] for r in rows] for layer in layers], png_path, title)
    return [csv_path, png_path]
