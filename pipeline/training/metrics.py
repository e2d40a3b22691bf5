"""Pure metric computations: evaluation statistics (LRBench's utility metrics) and the end-of-run summary.

LRBench's confidence metrics (notes lrbench.md section 3.2), over *correctly classified* samples only:
``conf_mean`` (AC) is the mean of their max softmax probability, ``conf_std`` (CV, a standard deviation despite
its name) the population std of the same values, ``conf_class_std`` (CVAC) the population std across classes of
the per-class mean, skipping classes with no correct sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


# What every evaluation reports, logged as val/<key> and test/<key>.
EVAL_KEYS = ("loss", "acc", "acc_top5", "conf_mean", "conf_std", "conf_class_std")


class EvalStats:
    """Running sums over evaluation batches, so a whole split is scored without keeping its outputs.

    The sums live in one float64 tensor so that DDP can reduce them with a single all-reduce.
    """

    # Layout of the scalar part of the state vector.
    _N, _LOSS, _TOP1, _TOP5, _NC, _CSUM, _CSQ = range(7)

    def __init__(self, num_classes: int):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.state = torch.zeros(7 + 2 * num_classes, dtype=torch.float64)

    def reset(self) -> None:
        self.state.zero_()

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.detach().float()
        target = target.detach()
        probs = logits.softmax(dim=1)
        conf, pred = probs.max(dim=1)
        correct = pred.eq(target)
        k = min(5, logits.shape[1])
        top5 = logits.topk(k, dim=1).indices.eq(target.unsqueeze(1)).any(dim=1)
        c = conf[correct].double()
        s = self.state
        s[self._N] += target.numel()
        s[self._LOSS] += F.cross_entropy(logits, target, reduction="sum").double().cpu()
        s[self._TOP1] += correct.sum().cpu()
        s[self._TOP5] += top5.sum().cpu()
        s[self._NC] += c.numel()
        s[self._CSUM] += c.sum().cpu()
        s[self._CSQ] += (c * c).sum().cpu()
        classes = target[correct].cpu()
        s[7 : 7 + self.num_classes] += torch.bincount(classes, weights=c.cpu(), minlength=self.num_classes)
        s[7 + self.num_classes :] += torch.bincount(classes, minlength=self.num_classes).double()

    def compute(self) -> dict[str, float]:
        s = self.state
        n = s[self._N].item()
        if n == 0:
            raise ValueError("no evaluation samples were seen")
        nc = s[self._NC].item()
        out = {
            "loss": s[self._LOSS].item() / n,
            "acc": s[self._TOP1].item() / n,
            "acc_top5": s[self._TOP5].item() / n,
            "conf_mean": math.nan,
            "conf_std": math.nan,
            "conf_class_std": math.nan,
        }
        if nc > 0:
            mean = s[self._CSUM].item() / nc
            out["conf_mean"] = mean
            out["conf_std"] = math.sqrt(max(s[self._CSQ].item() / nc - mean * mean, 0.0))
            sums = s[7 : 7 + self.num_classes]
            counts = s[7 + self.num_classes :]
            seen = counts > 0
            per_class = sums[seen] / counts[seen]
            out["conf_class_std"] = per_class.std(unbiased=False).item() if per_class.numel() > 1 else 0.0
        return out


@dataclass
class RunProgress:
    """What the metrics callback has seen of a run, enough to write its summary."""

    targets: tuple[float, ...]
    evals: list[tuple[int, float, float]] = field(default_factory=list)  # (step, train seconds, val acc)
    reached: dict[float, tuple[int, float]] = field(default_factory=dict)  # target -> (step, train seconds)
    best_acc: float = -1.0
    best_step: int = -1
    last_train_loss: float = math.nan
    diverged_at: int | None = None
    samples: int = 0  # training samples the model has trained on so far (all processes)
    reached_samples: dict[float, int] = field(default_factory=dict)  # target -> samples trained on by then

    def add_eval(self, step: int, seconds: float, acc: float) -> None:
        self.evals.append((step, seconds, acc))
        if acc > self.best_acc:
            self.best_acc, self.best_step = acc, step
        for target in self.targets:
            if target not in self.reached and acc >= target:
                self.reached[target] = (step, seconds)
                self.reached_samples[target] = self.samples


def first_finite(first_loss: float | None, loss: float) -> float | None:
    """The loss :func:`divergence` measures against once ``loss`` is seen: the run's first finite training loss."""
    return loss if first_loss is None and math.isfinite(loss) else first_loss


def divergence(loss: float, first_loss: float | None, factor: float) -> str | None:
    """Why a training loss means the run diverged (non-finite, or above ``factor`` x the first finite loss), or
    None. The rule of separate runs (the metrics callback) and of packed copies alike."""
    if not math.isfinite(loss):
        return "non-finite"
    if first_loss is not None and loss > factor * first_loss:
        return f"above {factor:g}x the first loss"
    return None


def divergence_error(loss: float, step: int, reason: str) -> str:
    """The ``error`` a diverged run is recorded FAILED with."""
    return f"training loss {loss:.4g} at step {step} is {reason}"


# How many of the last evaluations the "late fluctuation" (LRBench's variance) is measured over.
LAST_EVALS = 5


def summarize(progress: RunProgress, steps: int, train_s: float, test: dict[str, float] | None) -> dict[str, float]:
    """The ``summary/*`` metrics of a run; a target never reached has no ``steps_to``/``seconds_to`` entry."""
    out: dict[str, float] = {
        "summary/steps": float(steps),
        "summary/samples": float(progress.samples),
        "summary/train_s": train_s,
        "summary/diverged": 1.0 if progress.diverged_at is not None else 0.0,
        "summary/final_train_loss": progress.last_train_loss,
    }
    if progress.diverged_at is not None:
        out["summary/diverged_step"] = float(progress.diverged_at)
    if progress.evals:
        accs = [acc for _, _, acc in progress.evals]
        last = accs[-LAST_EVALS:]
        mean_last = sum(last) / len(last)
        out["summary/best_val_acc"] = progress.best_acc
        out["summary/best_val_acc_step"] = float(progress.best_step)
        out["summary/final_val_acc"] = accs[-1]
        out["summary/val_acc_last_std"] = math.sqrt(sum((a - mean_last) ** 2 for a in last) / len(last))
        # Area under the accuracy-vs-step curve, normalised by the span: rewards reaching accuracy early.
        if len(progress.evals) > 1:
            pts = progress.evals
            area = sum((s1 - s0) * (a0 + a1) / 2 for (s0, _, a0), (s1, _, a1) in zip(pts, pts[1:]))
            out["summary/val_acc_auc"] = area / max(pts[-1][0] - pts[0][0], 1)
    for target in progress.targets:
        out[f"summary/reached_acc_{target:g}"] = 1.0 if target in progress.reached else 0.0
        if target in progress.reached:
            step, seconds = progress.reached[target]
            out[f"summary/steps_to_acc_{target:g}"] = float(step)
            out[f"summary/seconds_to_acc_{target:g}"] = seconds
            if target in progress.reached_samples:
                out[f"summary/samples_to_acc_{target:g}"] = float(progress.reached_samples[target])
    if test:
        for key, value in test.items():
            out[f"summary/test_{key}"] = value
        if not math.isnan(progress.last_train_loss):
            # LRBench's robustness proxy: final training loss minus test loss.
            out["summary/loss_gap"] = progress.last_train_loss - test["loss"]
    return out
