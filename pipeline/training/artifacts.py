"""What every run records when it starts: its params (the resolved config, and the exact policy as a loadable
spec), the config as YAML and a plot of its LR curve."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.tracking.recorder import flatten

# Steps the LR curve plot evaluates the policy at, at most: the figure is 600 px wide, and evaluating every step of a
# 10M-step budget into lists took about 1 GB and 13 s before training started.
MAX_CURVE_POINTS = 2000


def plotted_steps(steps: int, max_points: int = MAX_CURVE_POINTS) -> list[int]:
    """Every step of ``0 .. steps-1``, or ``max_points`` of them evenly spaced with the first and the last."""
    if steps <= max_points:
        return list(range(steps))
    return sorted({round(i * (steps - 1) / (max_points - 1)) for i in range(max_points)})


def lr_curve_png(policy, steps: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.policies import curve

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    at = plotted_steps(steps)
    ax.plot(at, curve(policy, at), lw=1.2)
    ax.set(xlabel="optimizer step", ylabel="learning rate", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def record_setup(recorder, config: dict, policy, total_steps: int, title: str) -> None:
    """Params and the artifacts every run carries from its start: the resolved config and its LR curve."""
    from pipeline.policies.spec import to_spec

    recorder.params({**flatten(config), "policy_config": json.dumps(to_spec(policy), sort_keys=True)})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(OmegaConf.to_yaml(config))
        lr_curve_png(policy, total_steps, Path(tmp) / "lr_curve.png", title)
        recorder.artifact(str(Path(tmp) / "config.yaml"))
        recorder.artifact(str(Path(tmp) / "lr_curve.png"))
