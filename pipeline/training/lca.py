"""Loss Change Allocation (Lan, Liu, Zhou, Yosinski, NeurIPS 2019, arXiv 1909.01440), from the paper's equations.

Over one optimizer step ``θ_t → θ_{t+1}`` the change of a fixed loss ``L`` is the integral of its gradient along the
straight segment between the two parameter vectors (``Δθ = θ_{t+1} − θ_t``)::

    L(θ_{t+1}) − L(θ_t) = ∫_0^1 ⟨∇L(θ_t + s·Δθ), Δθ⟩ ds  ≈  Σ_i A_i,   A_i = Δθ_i · k_i,
    k = Σ_{j=0..n} w_j ∇L(θ_t + (j/n)·Δθ),   w = [1, 4, 2, 4, …, 2, 4, 1] / (3n)   (composite Simpson).

``A_i`` is parameter ``i``'s share of the loss change on that step; ``A_i < 0`` means it *helped* (its motion
lowered the loss). ``n = 2`` is the paper's "RK4" rule (gradients at both ends and the midpoint). The conservation
error ``|Σ_i A_i − (L(θ_{t+1}) − L(θ_t))|`` measures the quadrature error; while it exceeds ``threshold`` (paper:
1e-3, loss units) ``n`` is doubled, reusing every gradient already computed, up to ``max_splits`` sub-intervals.

What ``L`` is: the mean cross-entropy (the training loss, without weight decay or any other regulariser) over a fixed
evaluation set (:func:`eval_subset`, a seeded subset of the training data, processed in fixed chunks), evaluated at
arbitrary parameter vectors with ``torch.func.functional_call``; the live parameters are never touched. The passes run
in float32/float64 with autocast disabled (AMP noise would exceed the 1e-3 threshold), with these layer semantics
(:func:`eval_semantics`):

- dropout off (eval mode), so ``L`` is deterministic;
- BatchNorm, ``bn_mode="batch"`` (default, the paper's choice): each evaluation chunk is normalised with its own
  batch statistics and the running buffers are neither read nor updated. ``L`` is then a function of ``θ`` alone:
  per-step LCA conserves, consecutive steps add up to the loss change over a window, and the gradient at ``θ_{t+1}``
  is reused as the next step's start. ``bn_mode="running"`` (plain eval mode): chunks are normalised with the running
  buffers as they are when the step is measured, the same buffers at every point of the step, so each step still
  conserves; but the buffers move between steps (``L`` is redefined every step, sums over steps do not telescope)
  and early in training they lag the weights. Running-buffer BN is what validation uses, not what training
  minimises, hence the default.

Cost per measured step: 3 gradient evaluations of the evaluation set at ``n = 2`` (2 when the previous step was
measured too and its end is reused), plus ``n/2`` more at each doubling. Memory: a few parameter-sized float64
buffers per step and, across steps, only per-layer sums (never per-parameter histories).
"""

from __future__ import annotations

import csv
import math
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from pipeline.training.arguments import check_int

BN_MODES = ("batch", "running")
ARTIFACT_DIR = "lca"

Params = dict[str, Tensor]


# ---------------------------------------------------------------------------------------------------------------------
# Quadrature and aggregation


def simpson_weights(n: int) -> list[float]:
    """Composite Simpson weights of the nodes ``j/n``, ``j = 0..n``, on ``[0, 1]``: ``[1, 4, 2, …, 4, 1] / 3n``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2 or n % 2:
        raise ValueError(f"n must be an even integer >= 2 (Simpson sub-intervals), got {n!r}")
    weights = [1.0] + [4.0 if j % 2 else 2.0 for j in range(1, n)] + [1.0]
    return [w / (3 * n) for w in weights]


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: its owner module's name (``net.features.0.weight`` -> ``net.features.0``)."""
    return name.rpartition(".")[0] or name


def layer_sums(lca: Params) -> dict[str, float]:
    """Per-layer sums of per-parameter LCA (weight and bias together), in first-appearance order of the layers."""
    sums: dict[str, float] = {}
    for name, values in lca.items():
        layer = layer_of(name)
        sums[layer] = sums.get(layer, 0.0) + float(values.sum())
    return sums


def helping_fraction(lca: Params) -> float:
    """Share of *all* parameter entries with ``A < 0`` (the paper's definition: entries with ``A = 0`` count)."""
    helping = sum(int((values < 0).sum()) for values in lca.values())
    return helping / max(sum(values.numel() for values in lca.values()), 1)


@dataclass(frozen=True)
class StepLCA:
    """LCA of one optimizer step.

    ``lca`` holds the per-parameter ``A`` (float64, shaped like the parameters). ``splits`` is the number of Simpson
    sub-intervals used (0 for first-order LCA). ``end_grad`` is ``∇L(θ_{t+1})`` (float64), kept so the next step can
    start from it.
    """

    lca: Params
    loss_before: float
    loss_after: float
    splits: int
    end_grad: Params

    @property
    def total(self) -> float:
        return sum(float(values.sum()) for values in self.lca.values())

    @property
    def loss_change(self) -> float:
        return self.loss_after - self.loss_before

    @property
    def conservation_error(self) -> float:
        """``|Σ_i A_i − (L(θ_{t+1}) − L(θ_t))|``, in loss units."""
        return abs(self.total - self.loss_change)

    def layer_sums(self) -> dict[str, float]:
        return layer_sums(self.lca)

    @property
    def helping_frac(self) -> float:
        return helping_fraction(self.lca)


# ---------------------------------------------------------------------------------------------------------------------
# The loss as a function of the parameters


@contextmanager
def eval_semantics(model: nn.Module, bn_mode: str = "batch") -> Iterator[None]:
    """Dropout off; BatchNorm on per-chunk batch statistics (``"batch"``) or on its running buffers (``"running"``).

    Every module's ``training`` flag and every BatchNorm's ``track_running_stats`` are restored on exit.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {', '.join(BN_MODES)}; got {bn_mode!r}")
    modules = list(model.modules())
    training = [module.training for module in modules]
    norms = [m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = [m.track_running_stats for m in norms]
    try:
        model.eval()
        if bn_mode == "batch":
            for norm in norms:  # train mode without running stats: normalise by the batch, leave the buffers alone
                norm.train()
                norm.track_running_stats = False
        yield
    finally:
        for module, flag in zip(modules, training):
            module.training = flag
        for norm, flag in zip(norms, tracking):
            norm.track_running_stats = flag


class EvalLoss:
    """``L(θ)``: mean cross-entropy of ``model`` over fixed ``(x, y)`` chunks, and its gradient, at any parameters.

    The chunks are weighted by their size, so ``L`` is the mean over all samples (with ``bn_mode="batch"`` each
    chunk is normalised by its own statistics, which is why the chunking is fixed). ``points_per_pass`` points are
    evaluated in one ``torch.func.vmap`` pass; 1 evaluates them one at a time (on a 2-core CPU that was faster: vmap
    over 3 LeNet-5 points took 1.3x the time of 3 single passes). Call inside :func:`eval_semantics`.
    """

    def __init__(self, model: nn.Module, chunks: Sequence[tuple[Tensor, Tensor]], points_per_pass: int = 1):
        check_int("points_per_pass", points_per_pass, 1)
        self.model = model
        self.chunks = [(x, y) for x, y in chunks]
        self.size = sum(len(y) for _, y in self.chunks)
        if self.size == 0:
            raise ValueError("the evaluation set is empty")
        self.points_per_pass = points_per_pass
        self._one = grad_and_value(self._loss)
        self._many = vmap(self._one, in_dims=(0, None, None))

    def _loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(self.model, params, (x,)), y)

    def gradients(
        self, origin: Params, delta: Params, fractions: Sequence[float], dtypes: dict[str, torch.dtype], *,
        reduce: bool = False
    ) -> tuple[Params, Tensor]:
        """Gradients and losses at ``origin + f·delta`` for each ``f`` (``origin``, ``delta`` in float64).

        Returns float64 gradients stacked ``[len(fractions), *shape]`` and losses ``[len(fractions)]``; with
        ``reduce`` the gradients are summed over the points instead (memory: one gradient per point of a pass).
        """
        count = len(fractions)
        device = next(iter(origin.values())).device
        grads = {name: torch.zeros(((1 if reduce else count), *value.shape), dtype=torch.float64, device=device)
                 for name, value in origin.items()}
        losses = torch.zeros(count, dtype=torch.float64)
        with torch.autocast(device_type=device.type, enabled=False):
            for first in range(0, count, self.points_per_pass):
                part = list(fractions[first : first + self.points_per_pass])
                points = {name: torch.stack([(origin[name] + f * delta[name]).to(dtypes[name]) for f in part])
                          for name in origin}
                rows = slice(0, 1) if reduce else slice(first, first + len(part))
                for x, y in self.chunks:
                    weight = len(y) / self.size
                    if len(part) == 1:
                        grad, value = self._one({name: p[0] for name, p in points.items()}, x, y)
                        grad, value = {name: g.unsqueeze(0) for name, g in grad.items()}, value.unsqueeze(0)
                    else:
                        grad, value = self._many(points, x, y)
                    for name, g in grad.items():
                        g = g.detach().to(torch.float64)
                        grads[name][rows] += weight * (g.sum(0, keepdim=True) if reduce else g)
                    losses[first : first + len(part)] += weight * value.detach().to(torch.float64).cpu()
        if reduce:
            grads = {name: g[0] for name, g in grads.items()}
        return grads, losses


# ---------------------------------------------------------------------------------------------------------------------
# LCA of one step


def _segment(theta0: Params, theta1: Params) -> tuple[Params, Params, dict[str, torch.dtype]]:
    if theta0.keys() != theta1.keys():
        raise ValueError("theta0 and theta1 must hold the same parameter names")
    origin = {name: value.detach().to(torch.float64) for name, value in theta0.items()}
    delta = {name: theta1[name].detach().to(torch.float64) - origin[name] for name in origin}
    return origin, delta, {name: value.dtype for name, value in theta0.items()}


def lca_step(
    loss: EvalLoss,
    theta0: Params,
    theta1: Params,
    *,
    threshold: float = 1e-3,
    max_splits: int = 32,
    start: tuple[Params, float] | None = None,
) -> StepLCA:
    """Per-parameter LCA of the step ``theta0 → theta1`` by composite Simpson with adaptive splitting.

    Starts with ``n = 2`` sub-intervals and doubles ``n`` while the conservation error exceeds ``threshold`` (loss
    units) and ``n < max_splits``. ``start`` = ``(∇L(theta0), L(theta0))`` (float64) skips the evaluation at
    ``theta0`` (the previous step's ``end_grad``; only valid if ``L`` has not changed since).
    """
    origin, delta, dtypes = _segment(theta0, theta1)
    if start is None:
        grads, losses = loss.gradients(origin, delta, [0.0, 0.5, 1.0], dtypes)
        g0 = {name: g[0] for name, g in grads.items()}
        loss0, mid, g1, loss1 = float(losses[0]), 1, {name: g[2] for name, g in grads.items()}, float(losses[2])
    else:
        g0, loss0 = start
        grads, losses = loss.gradients(origin, delta, [0.5, 1.0], dtypes)
        mid, g1, loss1 = 0, {name: g[1] for name, g in grads.items()}, float(losses[1])
    # Simpson with n sub-intervals = (ends + 4·odd + 2·even) / 3n, where odd sums the nodes new at this n and even the
    # interior nodes of coarser levels; doubling n turns every interior node into an even one.
    ends = {name: g0[name] + g1[name] for name in origin}
    odd = {name: g[mid] for name, g in grads.items()}
    even = {name: torch.zeros_like(value) for name, value in origin.items()}
    n = 2
    while True:
        lca = {name: delta[name] * (ends[name] + 4 * odd[name] + 2 * even[name]) / (3 * n) for name in origin}
        total = sum(float(values.sum()) for values in lca.values())
        if abs(total - (loss1 - loss0)) <= threshold or n >= max_splits:
            break
        even = {name: even[name] + odd[name] for name in origin}
        n *= 2
        odd, _ = loss.gradients(origin, delta, [(2 * j + 1) / n for j in range(n // 2)], dtypes, reduce=True)
    return StepLCA(lca, loss0, loss1, n, g1)


def first_order_lca(loss: EvalLoss, theta0: Params, theta1: Params) -> StepLCA:
    """One-point LCA, ``A = Δθ ⊙ ∇L(θ_t)``: the first-order Taylor term, for comparison only (it is biased)."""
    origin, delta, dtypes = _segment(theta0, theta1)
    grads, losses = loss.gradients(origin, delta, [0.0, 1.0], dtypes)
    lca = {name: delta[name] * grads[name][0] for name in origin}
    return StepLCA(lca, float(losses[0]), float(losses[1]), 0, {name: g[1] for name, g in grads.items()})


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation set, schedule, artifacts


def eval_subset(dataset, size: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """``size`` samples of ``dataset`` (all if None or larger) drawn without replacement by a seeded permutation."""
    count = len(dataset) if size is None else min(size, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    x, y = torch.utils.data.default_collate([dataset[i] for i in order.tolist()])
    return x, y


def is_measured(step: int, *, start_step: int, every_k_steps: int, window_steps: int | None) -> bool:
    """Whether optimizer step ``step`` (0-based) gets LCA: every k-th step of ``[start, start + window)``."""
    if step < start_step or (window_steps is not None and step >= start_step + window_steps):
        return False
    return (step - start_step) % every_k_steps == 0


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


# ---------------------------------------------------------------------------------------------------------------------
# The callback


def _training_dataset(trainer):
    """The raw training set: the data module's ``train_set`` (no augmentation), else the train loader's dataset."""
    dataset = getattr(trainer.datamodule, "train_set", None)
    if dataset is None:
        dataset = getattr(trainer.train_dataloader, "dataset", None)
    if dataset is None:
        raise ValueError("LCA needs the training data set: the data module has no train_set and the train loader "
                         "no dataset")
    return dataset


class LCACallback(L.Callback):
    """Per-step LCA during training, logged per layer; a pure observer that never changes training.

    Args:
        recorder: the run's :class:`~pipeline.tracking.recorder.RunRecorder`.
        every_k_steps: measure every k-th optimizer step of the window (1 = every step, which reuses each step's
            end gradient: 2 instead of 3 evaluations per step).
        start_step: first optimizer step measured (0-based).
        window_steps: measure only steps ``[start_step, start_step + window_steps)``; None = to the end.
        subset_size: training samples in the fixed evaluation set, drawn once at train start; None = all.
        threshold: conservation error (loss units) above which a step is split further (paper: 1e-3).
        max_splits: most Simpson sub-intervals per step, a power of 2 >= 2 (paper: 32).
        eval_batch_size: samples per evaluation chunk (memory; with ``bn_mode="batch"`` also the BN batch).
        points_per_pass: segment points per vmapped gradient pass (1 = no vmap).
        bn_mode: ``"batch"`` or ``"running"``, see the module docstring.
        seed: seed of the evaluation subset (fixed, so every policy and job seed is measured on the same samples).

    Logged at step t (the step's index, as ``lr``): ``lca/<layer>``, ``lca/total``, ``lca/loss_change``,
    ``lca/conservation_error``, ``lca/helping_frac``, ``lca/splits``. At the end of fit: ``summary/lca_helping_frac``
    (mean over measured steps), ``summary/lca_cum/<layer>``, ``summary/lca_conservation_error_max``,
    ``summary/lca_steps``, ``summary/lca_s`` (seconds spent in LCA; they are inside ``summary/train_s``), and the
    artifacts ``lca/lca_layers.csv`` and ``lca/lca_heatmap.png``. Under DDP only global rank 0 computes and logs,
    on the unwrapped module (no collective calls; SyncBatchNorm is refused with ``bn_mode="batch"``).
    """

    def __init__(
        self,
        recorder,
        every_k_steps: int = 10,
        start_step: int = 0,
        window_steps: int | None = None,
        subset_size: int | None = 1000,
        threshold: float = 1e-3,
        max_splits: int = 32,
        eval_batch_size: int = 500,
        points_per_pass: int = 1,
        bn_mode: str = "batch",
        seed: int = 0,
    ):
        check_int("every_k_steps", every_k_steps, 1)
        check_int("start_step", start_step, 0)
        check_int("window_steps", window_steps, 1, optional=True)
        check_int("subset_size", subset_size, 1, optional=True)
        check_int("max_splits", max_splits, 2)
        if max_splits & (max_splits - 1):
            raise ValueError(f"max_splits must be a power of 2 >= 2 (2, 4, 8, 16, 32, ...), got {max_splits!r}")
        check_int("eval_batch_size", eval_batch_size, 1)
        check_int("points_per_pass", points_per_pass, 1)
        check_int("seed", seed, 0)
        ok = isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and math.isfinite(threshold)
        if not ok or threshold <= 0:
            raise ValueError(f"threshold must be a finite number > 0 (loss units), got {threshold!r}")
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {', '.join(BN_MODES)}; got {bn_mode!r}")
        self.recorder = recorder
        self.every_k_steps, self.start_step, self.window_steps = every_k_steps, start_step, window_steps
        self.subset_size, self.threshold, self.max_splits = subset_size, float(threshold), max_splits
        self.eval_batch_size, self.points_per_pass, self.bn_mode, self.seed = (
            eval_batch_size, points_per_pass, bn_mode, seed)
        self.rows: list[dict[str, float]] = []  # per measured step: totals and per-layer sums only
        self.cumulative: dict[str, float] = {}
        self.seconds = 0.0
        self._loss: EvalLoss | None = None
        self._pending: tuple[int, Params] | None = None  # (t, θ_t) snapshot before a measured step
        self._end: tuple[int, Params, Params, float] | None = None  # (t+1, θ_{t+1}, ∇L, L) for the next step
        self._resumed = False

    # -- checkpointed state: a resumed run's series, summaries and artifacts cover the whole run ----------------
    def state_dict(self) -> dict:
        return {"rows": self.rows, "cumulative": self.cumulative, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])
        self.cumulative = dict(state["cumulative"])
        self.seconds = float(state["seconds"])
        self._resumed = True

    def _measured(self, step: int) -> bool:
        return is_measured(step, start_step=self.start_step, every_k_steps=self.every_k_steps,
                           window_steps=self.window_steps)

    @staticmethod
    def _params(pl_module) -> Params:
        return {name: p.detach() for name, p in pl_module.named_parameters() if p.requires_grad}

    def on_train_start(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        if self.bn_mode == "batch" and trainer.world_size > 1 and any(
                isinstance(m, nn.SyncBatchNorm) for m in pl_module.modules()):
            raise ValueError("analysis.bn_mode=batch cannot run on rank 0 alone with SyncBatchNorm; use running")
        x, y = eval_subset(_training_dataset(trainer), self.subset_size, self.seed)
        x, y = x.to(pl_module.device), y.to(pl_module.device)
        chunks = [(x[i : i + self.eval_batch_size], y[i : i + self.eval_batch_size])
                  for i in range(0, len(y), self.eval_batch_size)]
        self._loss = EvalLoss(pl_module, chunks, self.points_per_pass)
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in pl_module.modules())
        # Reusing ∇L(θ_{t+1}) as the next step's start needs L unchanged between steps: not so with running BN
        # buffers (they move every step).
        self._reuse = self.every_k_steps == 1 and (self.bn_mode == "batch" or not has_bn)
        if self._resumed:  # steps between the checkpoint and the interruption are measured again: log them once
            keys = [*self.cumulative, "total", "loss_change", "conservation_error", "helping_frac", "splits"]
            self.recorder.resume_from_store([f"lca/{key}" for key in keys])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self._loss is not None and self._measured(trainer.global_step):
            self._pending = (trainer.global_step, {n: p.clone() for n, p in self._params(pl_module).items()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._pending is None or trainer.global_step <= self._pending[0]:
            return  # no measured step, or gradient accumulation has not stepped yet
        (step, theta0), self._pending = self._pending, None
        theta1 = self._params(pl_module)
        if all(torch.equal(theta0[n], theta1[n]) for n in theta0):
            return  # a skipped step (AMP overflow): nothing moved
        began = time.perf_counter()
        start = None
        if self._end is not None and self._end[0] == step and all(
                torch.equal(self._end[1][n], theta0[n]) for n in theta0):
            start = (self._end[2], self._end[3])
        with eval_semantics(pl_module, self.bn_mode):
            result = lca_step(self._loss, theta0, theta1, threshold=self.threshold, max_splits=self.max_splits,
                              start=start)
        self._end = (step + 1, {n: p.clone() for n, p in theta1.items()}, result.end_grad,
                     result.loss_after) if self._reuse else None
        self.seconds += time.perf_counter() - began
        self._record(step, result)

    def _record(self, step: int, result: StepLCA) -> None:
        layers = result.layer_sums()
        for layer, value in layers.items():
            self.cumulative[layer] = self.cumulative.get(layer, 0.0) + value
        totals = {"total": result.total, "loss_change": result.loss_change,
                  "conservation_error": result.conservation_error, "helping_frac": result.helping_frac,
                  "splits": float(result.splits)}
        self.recorder.metrics({f"lca/{key}": value for key, value in {**layers, **totals}.items()}, step)
        self.rows.append({"step": step, "loss_before": result.loss_before, **totals, **layers})

    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero or not self.rows:
            return
        step = trainer.global_step
        summary = {
            "summary/lca_helping_frac": sum(r["helping_frac"] for r in self.rows) / len(self.rows),
            "summary/lca_conservation_error_max": max(r["conservation_error"] for r in self.rows),
            "summary/lca_steps": float(len(self.rows)),
            "summary/lca_s": self.seconds,
        }
        summary.update({f"summary/lca_cum/{layer}": value for layer, value in self.cumulative.items()})
        self.recorder.metrics(summary, step)
        layers = list(self.cumulative)
        with tempfile.TemporaryDirectory() as tmp:
            csv_path, png_path = Path(tmp) / "lca_layers.csv", Path(tmp) / "lca_heatmap.png"
            write_layers_csv(self.rows, csv_path)
            steps = [int(r["step"]) for r in self.rows]
            heatmap_png(steps, layers, [[r[layer] for r in self.rows] for layer in layers], png_path,
                        f"LCA per layer per step ({self._loss.size} training samples)")
            self.recorder.artifact(str(csv_path), ARTIFACT_DIR)
            self.recorder.artifact(str(png_path), ARTIFACT_DIR)
