"""The LCA callback: snapshots the parameters around each measured optimizer step and hands the step to
:func:`~.quadrature.lca_step`; logs per-layer series, summaries and artifacts through the run's recorder."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch import nn

from pipeline.arguments import check_int, check_number
from pipeline.methods.lca.artifacts import write_artifacts
from pipeline.methods.lca.loss import BN_MODES, EvalLoss, Params, eval_semantics, eval_subset
from pipeline.methods.lca.quadrature import StepLCA, lca_step

ARTIFACT_DIR = "lca"
# Per measured step, beside one sum per layer: lca/<key> series and columns of lca_layers.csv.
TOTALS = ("total", "loss_change", "conservation_error", "helping_frac", "splits")


def is_measured(step: int, *, start_step: int, every_k_steps: int, window_steps: int | None) -> bool:
    """Whether optimizer step ``step`` (0-based) gets LCA: every k-th step of ``[start, start + window)``."""
    if step < start_step or (window_steps is not None and step >= start_step + window_steps):
        return False
    return (step - start_step) % every_k_steps == 0


def step_totals(result: StepLCA) -> dict[str, float]:
    """The :data:`TOTALS` of one measured step (loss units; ``helping_frac`` a share, ``splits`` a count)."""
    values = (result.total, result.loss_change, result.conservation_error, result.helping_frac, float(result.splits))
    return dict(zip(TOTALS, values))


def run_summary(rows: list[dict[str, float]], cumulative: dict[str, float], seconds: float) -> dict[str, float]:
    """``summary/lca_*`` over the measured steps' ``rows``: means and maxima, the per-layer sums, the time spent."""
    summary = {
        "summary/lca_helping_frac": sum(r["helping_frac"] for r in rows) / len(rows),
        "summary/lca_conservation_error_max": max(r["conservation_error"] for r in rows),
        "summary/lca_steps": float(len(rows)),
        "summary/lca_s": seconds,
    }
    summary.update({f"summary/lca_cum/{layer}": value for layer, value in cumulative.items()})
    return summary


def _reusable_start(end: tuple[int, Params, Params, float] | None, step: int,
                    theta0: Params) -> tuple[Params, float] | None:
    """``(∇L, L)`` at the previous measured step's end when this step starts there (same step, same parameters)."""
    if end is not None and end[0] == step and all(torch.equal(end[1][n], theta0[n]) for n in theta0):
        return end[2], end[3]
    return None


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
        bn_mode: ``"batch"`` or ``"running"``, see :mod:`pipeline.methods.lca.loss`.
        seed: seed of the evaluation subset (fixed, so every policy and job seed is measured on the same samples).

    Logged at step t (the step's index, as ``lr``): ``lca/<layer>``, ``lca/total``, ``lca/loss_change``,
    ``lca/conservation_error``, ``lca/helping_frac``, ``lca/splits``. In the run's summary (:meth:`summary`, params
    ``summary.<name>``): ``summary/lca_helping_frac`` (mean over measured steps), ``summary/lca_cum/<layer>``,
    ``summary/lca_conservation_error_max``, ``summary/lca_steps``, ``summary/lca_s`` (seconds spent in LCA; they are
    inside ``summary/train_s``). At the end of fit, the artifacts ``lca/lca_layers.csv`` and ``lca/lca_heatmap.png``.
    Under DDP only global rank 0 computes and logs, on the unwrapped module (no collective calls; SyncBatchNorm is
    refused with ``bn_mode="batch"``).
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
        check_number("threshold", threshold, 0.0, low_open=True)
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
            self.recorder.resume_from_store([f"lca/{key}" for key in [*self.cumulative, *TOTALS]])

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
        with eval_semantics(pl_module, self.bn_mode):
            result = lca_step(self._loss, theta0, theta1, threshold=self.threshold, max_splits=self.max_splits,
                              start=_reusable_start(self._end, step, theta0))
        self._end = (step + 1, {n: p.clone() for n, p in theta1.items()}, result.end_grad,
                     result.loss_after) if self._reuse else None
        self.seconds += time.perf_counter() - began
        self._record(step, result)

    def _record(self, step: int, result: StepLCA) -> None:
        layers, totals = result.layer_sums(), step_totals(result)
        for layer, value in layers.items():
            self.cumulative[layer] = self.cumulative.get(layer, 0.0) + value
        self.recorder.metrics({f"lca/{key}": value for key, value in {**layers, **totals}.items()}, step)
        self.rows.append({"step": step, "loss_before": result.loss_before, **totals, **layers})

    def summary(self) -> dict[str, float]:
        """``summary/lca_*`` (:func:`run_summary`), which the job records with the run's summary (params
        ``summary.lca_*`` and the summary table, not single-point metric charts); none before a measured step."""
        return run_summary(self.rows, self.cumulative, self.seconds) if self.rows else {}

    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero or not self.rows:
            return
        title = f"LCA per layer per step ({self._loss.size} training samples)"
        with tempfile.TemporaryDirectory() as tmp:
            for path in write_artifacts(self.rows, list(self.cumulative), Path(tmp), title):
                self.recorder.artifact(str(path), ARTIFACT_DIR)
