"""What every run records when it starts: its params (the resolved config, and the exact policy as a loadable
spec), the config as YAML and a plot of its LR curve."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.policies.fit import sample_steps
from pipeline.tracking.recorder import flatten

# Steps the LR curve plot evaluates the policy at, at most: the figure is 600 px wide, and evaluating every step of a
# 10M-step budget into lists took about 1 GB and 13 s before training started.
MAX_CURVE_POINTS = 2000


def lr_curve_png(policy, steps: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.policies import curve

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    at = sample_steps(steps, MAX_CURVE_POINTS)
    values = curve(policy, at)
    ax.plot(at, values, lw=1.2)
    # What happened, at a glance: the LR range in the title, and a plain axis from 0 (no offset), so that a 0.002%
    # change looks flat rather than like a full anneal.
    lr_min, lr_max = (min(values), max(values)) if values else (0.0, 0.0)
    ax.set(xlabel="optimizer step", ylabel="learning rate", title=f"{title}\nlr {lr_min:.4g} to {lr_max:.4g}")
    ax.grid(alpha=0.3)
    ax.set_ylim(0, lr_max * 1.05 if lr_max > 0 else 1.0)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
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
