"""``python -m pipeline.range_test <overrides>``: the LR range test of the job the same overrides describe (model,
data, task, optimizer, ``range_test.*``), recorded in MLflow (reused if one with the same key is there), printed:
the averaged curve, k0/k1 and their spread over the seeds, what the job's policy would run with, and where it is."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from pipeline import redaction
from pipeline.cli import CONF_DIR, EXIT_CONFIG, normalise_argv, remove_output_dir
from pipeline.config.checks import ConfigError
from pipeline.tracking.store import TrackingError

# Points of the averaged curve printed (evenly spaced over the sweep, the lowest always among them).
SUMMARY_POINTS = 12


def summary_lines(outcome, job) -> list[str]:
    """What the range test found, as printed lines."""
    from pipeline.policies.k_values import with_k
    from pipeline.policies.spec import to_spec

    lines = []
    result = outcome.result
    if result is not None:
        n = len(result.lr)
        best = result.lr.index(result.lr_at_min)
        shown = sorted({round(i * (n - 1) / (SUMMARY_POINTS - 1)) for i in range(SUMMARY_POINTS)} | {best})
        lines.append(f"averaged smoothed loss over {len(outcome.curves)} seed(s) ({n} LRs):")
        lines += [f"  lr {result.lr[i]:10.3g}  loss {result.mean_loss[i]:10.4g}" + ("  <- lowest" if i == best else "")
                  for i in shown]
        lines.append(f"lowest mean loss {result.min_loss:.4g} at lr {result.lr_at_min:.4g}")
        lines.append("k1 per seed (the rule on each seed alone): " + ", ".join(f"{v:.3g}" for v in result.k1_per_seed))
        steepest = ", ".join("-" if v is None else f"{v:.3g}" for v in result.steepest_per_seed)
        lines.append(f"Lightning's steepest-descent suggestion per seed (not used): {steepest}")
        if result.warning:
            lines.append(f"warning: {result.warning}")
    elif outcome.params:
        stored = outcome.params
        lines.append(f"lowest mean loss {stored.get('result.min_loss', '?')} at lr "
                     f"{stored.get('result.lr_at_min', '?')}; k1 per seed {stored.get('result.k1_per_seed', '?')}")
        lines.append("Lightning's steepest-descent suggestion per seed (not used): "
                     f"{stored.get('result.steepest_lr_per_seed', '?')}")
    lines.append(f"k0 = {outcome.k0:.4g}   k1 = {outcome.k1:.4g}")
    if job.policy_name != "fix" or job.k_from == "range_test":
        policy = with_k(job.policy.base, outcome.k0, outcome.k1)
        spec = policy if isinstance(policy, dict) else to_spec(policy)
        lrs = {k: v for k, v in spec.items() if k in ("k0", "k1", "peak_lr", "end_lr", "max_lr")}
        lines.append(f"policy {job.policy_name} with policy.k_from=range_test: " +
                     (", ".join(f"{k}={v:.4g}" for k, v in lrs.items()) or "each segment by its family"))
    return lines


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def range_test(cfg: DictConfig):
    from pipeline.config.checks import check
    from pipeline.range_test.run import obtain
    from pipeline.tracking.range_tests import artifact_uri
    from pipeline.tracking.store import prepare, public_uri
    from pipeline.training.trainer import quiet_frameworks

    quiet_frameworks()
    try:
        job = check(cfg)
        prepare(job.tracking.uri, job.tracking.experiment)
        outcome = obtain(job)
    except (ConfigError, TrackingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        remove_output_dir()
        sys.exit(EXIT_CONFIG)
    for line in summary_lines(outcome, job):
        print(line)
    how = "reused (a FINISHED range test with the same key was in the store)" if outcome.reused else "recorded"
    print(f"range test run {outcome.run_id} {how}: tracking.uri={public_uri(job.tracking.uri)} "
          f"experiment={job.tracking.experiment}")
    print(f"plot and curves: {artifact_uri(job.tracking.uri, outcome.run_id)}/range_test.png, curves.csv")


def main() -> None:
    redaction.install()
    sys.argv = normalise_argv(sys.argv)
    range_test()


if __name__ == "__main__":
    main()
