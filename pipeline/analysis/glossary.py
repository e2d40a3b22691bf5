"""What every column and rule of the report means, with units: the glossary printed at the end of each report
(HTML, Markdown, JSON), worded for the report's objective, target and settings."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.analysis.scoring import CLASSIFICATION, LATE_EVALS, Objective, target_label


def glossary(settings: Mapping, objective: Objective = CLASSIFICATION) -> dict[str, str]:
    """Term -> its meaning (plain text), in the order of the report."""
    target = settings.get("target")
    reach = f"{objective.key} {objective.comparator} {target_label(target)}" if target is not None else objective.key
    confidence = settings.get("confidence", 0.95)
    low, high = objective.bounds
    span = f"[{low:g}, {high:g}]"
    fluct = settings.get("max_fluctuation")
    return {
        "scope": "Which runs the report read: by default the latest sweep of the experiments (its parent run: tag "
                 "kind=sweep, newest start time; sweeps of a proposed composite excepted); scope=all reads every "
                 "training run, parent_run_id=<id> one sweep.",
        "objective": f"{objective.key}, {objective.direction} (run tags objective_metric and objective_mode; runs "
                     "without them are classification: val/acc, higher is better). The target and every "
                     f"{objective.label} column are in its units.",
        "candidate": "One exact policy in one (model, dataset, optimizer) group: its LRBench string with its "
                     "parameters, momentum schedule and warm-up. Its scored runs are its seeds.",
        "verdict (good / bad)": f"good: every seed reached {reach} within the budget, none failed and the late "
                                "fluctuation is within max_fluctuation. bad: the reasons say which of these failed.",
        "missed": f"A seed whose {objective.label} never reached {reach} within the budget (optimizer steps, and "
                  "budget_s seconds if set); its best value is shown.",
        "failed": "A seed that ended by a training outcome other than finishing: diverged (non-finite training loss, "
                  "or above divergence_factor times its first loss) or pruned (stopped early for being hopeless). "
                  "Evaluations at or after the divergence step never count toward its scores.",
        "unstable": f"Late std above max_fluctuation ({fluct}).",
        "could not run": "A run that never trained: refused before training (failure tag config: a bad value, a "
                         "missing or corrupt data set, an unusable store; also the tags setup, data, environment), or "
                         "an exception whose text names a setup problem (a missing data set, file or module, no "
                         "device, memory or permission). It is listed with its error and says nothing about its "
                         "policy: it is not a seed and does not make its policy bad.",
        "did not finish": "A run interrupted (Ctrl-C, SIGTERM: failure killed), still running, or crashed by another "
                          "exception: listed, not counted as a seed, not held against its policy.",
        "duplicate": "A run that repeats one already counted: the same run key (the same command and seed), or the "
                     "same candidate and seed with other settings (another budget, say). Never an extra seed: the "
                     "newest finished run is kept.",
        "rank": "Place within the group: good candidates first, ordered by rank_by (steps or seconds: fastest to the "
                "target first, LRBench's rule; final: best final objective first), then bad ones (fewest failures, "
                "most seeds reaching the target).",
        "steps to target": f"Optimizer steps until the first evaluation at which {reach} (mean ± sample std over the "
                           f"seeds that reached it, then the {confidence:.0%} t-interval of the mean). Resolution: the "
                           "evaluation interval (trainer.eval_every_steps).",
        "seconds to target": "Training seconds (evaluation time excluded) until then; same statistics. Seconds "
                             "depend on the machine and its load, steps do not.",
        "reached": "Seeds that reached the target within the budget / scored seeds.",
        f"best {objective.label}": f"The best {objective.label} of any evaluation of the run (mean ± std [t-interval] "
                                   "over seeds).",
        f"final {objective.label}": f"{objective.label} at the run's last evaluation within the budget (for a "
                                    "diverged run: its last evaluation before the divergence).",
        "interval clipped (*)": "A t-interval reaching past the metric's possible values is clipped to them: "
                                f"{objective.label} to {span}, steps and seconds to >= 0; a clipped interval is "
                                "marked *. With 2 or 3 seeds t-intervals are wide.",
        "test top-1 / top-5": "Accuracy on the held-out test set after training (fraction; classification only). "
                              "Shown for information; nothing is selected on it.",
        "AC / CV / CVAC": "LRBench's confidence metrics on the test set, over correctly classified samples (each a "
                          "probability, 0-1): AC the mean of their top softmax probability, CV its standard deviation "
                          "(LRBench calls it a variance), CVAC the standard deviation across classes of the per-class "
                          "mean. High AC with low CV and CVAC: confident, evenly across classes.",
        "late std": f"Late fluctuation: population std of the last {LATE_EVALS} {objective.label} evaluations of a "
                    f"run, mean over seeds ({objective.metric} units). Above max_fluctuation ({fluct}) the candidate "
                    "is unstable (bad).",
        "loss gap": "LRBench's robustness proxy: final training loss minus test loss (cross-entropy, nats per sample). "
                    "Far below 0: the test loss is much higher than the training loss (overfitting).",
        "policy fit": "Marked after a policy's name when in some seed's budget its schedule did not show its shape "
                      "(run tag policy_fit, also printed when the run starts): flat (its LR moved by under 5%), "
                      "partial_cycle (under half a cycle), partial_decay (its decay horizon is past the budget).",
        "Pareto set": f"Good candidates that no other good candidate beats on both speed to the target and final "
                      f"{objective.label}: the honest choices when both matter.",
        "margin": "The recommended policy's lead over the runner-up in the ranking's unit, with Welch's t-test "
                  f"(unequal variances) on the per-seed values: the lead exceeds seed noise when p < alpha "
                  f"({settings.get('alpha')}); it needs 2 or more seeds each.",
        "speed-up": "The baseline policy's mean steps (and training seconds) to the target over the recommended "
                    "one's, worded both ways (2.10× fewer steps; 3.90× slower). Baseline seeds that missed the target "
                    "count as their whole budget, making the ratio a bound (≥ or ≤).",
        "k scale robustness": "Policies run at several scales of their LR (schedule.k_scale): the share of scales at "
                              "which every seed reached the target, and the spread of the mean final "
                              f"{objective.label} across scales (a failed run counts as the metric's worst value).",
        "proposed composite": "LRBench's heterogeneous composite: the recommended policy until the step by which its "
                              "slowest seed reached the target, then FIX at tail_factor × its LR there.",
        "verification": "The composite trained with the recommended policy's seeds, budget and settings (verify=true, "
                        "or the printed command), compared with the recommended policy on speed to the target and "
                        "final objective: better when it is good and ahead beyond seed noise (Welch p < alpha) on one "
                        "without falling behind beyond it on the other; else not better.",
    }
