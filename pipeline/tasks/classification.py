"""Classification: cross-entropy on one integer label per sample; top-1 and top-5 accuracy and LRBench's confidence
metrics.

LRBench's confidence metrics (notes lrbench.md section 3.2), over *correctly classified* samples only:
``conf_mean`` (AC) is the mean of their max softmax probability, ``conf_std`` (CV, a standard deviation despite
its name) the population std of the same values, ``conf_class_std`` (CVAC) the population std across classes of
the per-class mean, skipping classes with no correct sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.tasks.base import Metric, Task, floating, integer, shape

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


class Classification(Task):
    """One integer class label per sample; the model outputs one logit per class, ``[batch, classes]``."""

    name = "classification"
    metrics = (
        Metric("loss", "a cross-entropy in nats", 0.0, low_open=True, better="min"),
        Metric("acc", "an accuracy", 0.0, 1.0, low_open=True, better="max"),
        Metric("acc_top5", "a top-5 accuracy", 0.0, 1.0, low_open=True, better="max"),
        Metric("conf_mean", "a mean confidence", 0.0, 1.0),
        Metric("conf_std", "a confidence standard deviation", 0.0, 1.0),
        Metric("conf_class_std", "a standard deviation of per-class confidence", 0.0, 1.0),
    )

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, reduction="none")

    def stats(self, output_size: int) -> EvalStats:
        return EvalStats(output_size)

    def check_batch(self, output: torch.Tensor, target: torch.Tensor, output_size: int | None) -> None:
        if not integer(target) or target.ndim != 1:
            raise ValueError(f"dataset: task=classification needs one integer class label per sample (targets "
                             f"[batch] int64); the data gives targets {shape(target)}"
                             + (" (values to regress? use task=regression)" if floating(target) else ""))
        classes = output_size or (output.shape[-1] if output.ndim == 2 else None)
        if not floating(output) or output.ndim != 2 or output.shape[0] != target.shape[0] or (
                classes is not None and output.shape[1] != classes):
            raise ValueError(f"model: task=classification needs one logit per class, output [batch, "
                             f"{classes if classes else 'classes'}] float; the model gives {shape(output)} for a "
                             f"batch of {target.shape[0]}")
        if classes is not None and classes < 2:
            raise ValueError(f"model: task=classification needs at least 2 classes; the data has {classes}")
        if len(target) and (int(target.min()) < 0 or int(target.max()) >= output.shape[1]):
            raise ValueError(f"dataset: class labels must lie in [0, {output.shape[1] - 1}] (one per logit of the "
                             f"model's output); the data gives labels in [{int(target.min())}, {int(target.max())}]")
