"""What every run records when it starts (its params: the resolved config, and the exact policy as a loadable
spec; the config as YAML and a plot of its LR curve) and when it ends (its summary as params and a table, and one
figure of the LR and the objective over steps)."""

from __future__ import annotations

import csv
import json
import math
import sys
import tempfile
from collections.abc import Mapping, Sequence
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
    """Params and the artifacts every run carries from its start: the resolved config, its exact policy, its budget
    in optimizer steps (``budget.total_steps``: what a run stopped early, e.g. pruned, was to train; a budget given
    in epochs is known only once the data is loaded) and its LR curve."""
    from pipeline.policies.spec import to_spec

    recorder.params({**flatten(config), "policy_config": json.dumps(to_spec(policy), sort_keys=True),
                     "budget.total_steps": int(total_steps)})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(OmegaConf.to_yaml(config))
        lr_curve_png(policy, total_steps, Path(tmp) / "lr_curve.png", title)
        recorder.artifact(str(Path(tmp) / "config.yaml"))
        recorder.artifact(str(Path(tmp) / "lr_curve.png"))


# End-of-run figures are params ``summary.<name>`` and the table artifact summary.csv (and .json), not metrics: a
# single-point metric is a chart of one dot in the MLflow UI, and 29 of them pushed ``lr`` and ``val/*`` off the
# run page. The report reads the params in its one query (pipeline.tracking.runs.summaries).
SUMMARY_PARAM = "summary."


def record_summary(recorder, summary: Mapping[str, float], step: int) -> None:
    """The ``summary/<name>`` values of :func:`pipeline.training.metrics.summarize` as params ``summary.<name>``
    (NaN ones left out, as absent) and as ``summary.csv`` / ``summary.json`` (name, value). Params a resumed run
    already recorded are kept: MLflow refuses to change a param, and the table holds the final values. A store that
    does not take them gets the summary as metrics at ``step`` instead, which the recorder keeps and spools."""
    values = {k.split("/", 1)[-1]: float(v) for k, v in summary.items()
              if v is not None and not (isinstance(v, float) and math.isnan(v))}
    try:
        existing = recorder.recorded_params()
        recorder.params({SUMMARY_PARAM + k: repr(v) for k, v in values.items() if SUMMARY_PARAM + k not in existing})
        with tempfile.TemporaryDirectory() as tmp:
            with open(Path(tmp) / "summary.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["name", "value"])
                writer.writerows(values.items())
            (Path(tmp) / "summary.json").write_text(json.dumps(values, indent=1))
            recorder.artifact(str(Path(tmp) / "summary.csv"))
            recorder.artifact(str(Path(tmp) / "summary.json"))
    except Exception as exc:  # noqa: BLE001 - the store is down: keep the summary where it survives an outage
        print(f"warning: the summary could not be recorded as params ({type(exc).__name__}); it is kept as "
              "summary/* metrics instead", file=sys.stderr, flush=True)
        recorder.metrics(summary, step)


def record_curves(recorder, policy, steps: int, evals: Sequence[tuple], title: str, objective: str = "val/acc"
                  ) -> None:
    """``lr_objective.png``: the LR the policy set at each optimizer step and the objective at each evaluation
    (``evals``: (step, seconds, value), as ``RunProgress.evals``) on one figure, two y axes; logged once, at the
    end of the run. Nothing for a recorder without a run (DDP ranks > 0); a failure to draw is a warning."""
    if not recorder.run_id or steps < 1:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from pipeline.policies import curve

        fig, lr_ax = plt.subplots(figsize=(7, 3.5), dpi=100)
        lr_ax.plot(range(steps), curve(policy, steps), lw=1.2, color="#1565c0", label="lr")
        lr_ax.set(xlabel="optimizer step", ylabel="learning rate", title=title)
        lr_ax.yaxis.label.set_color("#1565c0")
        lr_ax.grid(alpha=0.3)
        value_ax = lr_ax.twinx()
        if evals:
            value_ax.plot([e[0] for e in evals], [e[-1] for e in evals], "o-", ms=3, lw=1.2, color="#c62828")
        value_ax.set_ylabel(objective, color="#c62828")
        fig.tight_layout()
        with tempfile.TemporaryDirectory() as tmp:
            fig.savefig(Path(tmp) / "lr_objective.png")
            recorder.artifact(str(Path(tmp) / "lr_objective.png"))
        plt.close(fig)
    except Exception as exc:  # noqa: BLE001 - a figure is not worth failing a finished run for
        print(f"warning: lr_objective.png not drawn ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
