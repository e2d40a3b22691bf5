"""The AutoAssist callback and its settings: the callback trains the assistant after each boss batch and logs what
AutoAssist did through the run's recorder; :class:`AutoAssist` is the ``sampler`` config group's checked node."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import lightning as L

from pipeline.arguments import check_int, check_number
from pipeline.methods.autoassist.assistant import Assistant, UpdateMeans
from pipeline.methods.autoassist.batches import KeptBatches, TrainBatchesData
from pipeline.training import budget

# Per-step series this callback writes; a resumed run must not write their steps twice.
STEP_KEYS = ("train/samples", "autoassist/accept_rate", "autoassist/assistant_acc", "autoassist/informative_frac",
             "autoassist/seen", "autoassist/threshold")

class AutoAssistCallback(L.Callback):
    """Trains the assistant after each boss batch and logs what AutoAssist did; ``datamodule`` is the data module
    to train with (the original's validation and test loaders, :class:`KeptBatches` for training)."""

    def __init__(self, settings: AutoAssist, datamodule, recorder) -> None:
        self.settings = settings
        self.recorder = recorder
        self.assistant = Assistant(datamodule.in_channels, datamodule.num_classes, pool_size=settings.pool_size,
                                   lr=settings.lr, l2=settings.l2, loss_ema=settings.loss_ema)
        self.batches = KeptBatches(datamodule.train_dataloader(), self.assistant, base_prob=settings.base_prob,
                                   batch_size=datamodule.batch_size, seed=settings.seed, position=self._position)
        self.datamodule = TrainBatchesData(datamodule, self.batches)
        self._trainer = None
        self.trained_batches = 0  # boss batches on this rank
        self.samples = 0  # samples the boss trained on, all ranks
        self.update_seconds = 0.0
        self.means = UpdateMeans()
        self._last_step, self._last_seen, self._last_kept = 0, 0, 0

    def _position(self) -> int:
        """Batches of the current epoch already trained on (non-zero only when a run resumed mid-epoch)."""
        trainer = self._trainer
        if trainer is None:
            return 0
        accumulate = trainer.accumulate_grad_batches
        per_epoch = budget.steps_per_epoch(self.batches.num_samples, self.batches.batch_size, self.batches.world_size,
                                           accumulate)
        return (trainer.global_step - trainer.current_epoch * per_epoch) * accumulate

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._trainer = trainer
            if not self.trained_batches:
                self.batches.shard(trainer.global_rank, trainer.world_size)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        start = time.perf_counter()
        x, y = batch
        step = self.assistant.update(self.assistant.features(x), y, pl_module.last_sample_losses)
        self.update_seconds += time.perf_counter() - start
        self.trained_batches += 1
        self.samples += len(y) * trainer.world_size
        self.means.add(step)
        if trainer.global_step == self._last_step:
            return  # accumulating gradients: log once per optimizer step
        self._last_step = trainer.global_step
        self.recorder.metrics(self._step_values(step.threshold), trainer.global_step - 1)

    def _step_values(self, threshold: float) -> dict[str, float]:
        """The per-step series (:data:`STEP_KEYS`) at the end of an optimizer step; opens the next step."""
        accuracy, informative = self.means.close_step()
        values = {
            "train/samples": self.samples,
            "autoassist/seen": self.batches.seen,
            "autoassist/assistant_acc": accuracy,
            "autoassist/informative_frac": informative,
            "autoassist/threshold": threshold,
        }
        if self.batches.seen > self._last_seen:  # no raw batch is drawn while kept samples are left over
            values["autoassist/accept_rate"] = (self.batches.kept - self._last_kept) / (self.batches.seen
                                                                                        - self._last_seen)
        self._last_seen, self._last_kept = self.batches.seen, self.batches.kept
        return values

    def summary(self) -> dict[str, float]:
        """``summary/autoassist_*``: raw samples scored, share kept, mean assistant accuracy, seconds spent. The job
        records them with the run's summary (params ``summary.autoassist_*`` and the summary table)."""
        seen = self.batches.seen
        return {
            "summary/autoassist_seen": float(seen),
            "summary/autoassist_accept_rate": self.batches.kept / seen if seen else math.nan,
            "summary/autoassist_acc": self.means.accuracy,
            "summary/autoassist_s": self.batches.seconds + self.update_seconds,
        }

    # -- checkpointed state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "assistant": self.assistant.state_dict(),
            "batches": self.batches.snapshot(self.trained_batches),
            "trained_batches": self.trained_batches,
            "samples": self.samples,
            "update_seconds": self.update_seconds,
            "accuracy": (self.means.run_accuracy, self.means.run_updates),
        }

    def load_state_dict(self, state: dict) -> None:
        self.assistant.load_state_dict(state["assistant"])
        self.batches.restore(state["batches"])
        self.trained_batches, self.samples = state["trained_batches"], state["samples"]
        self.update_seconds = state["update_seconds"]
        self.means.run_accuracy, self.means.run_updates = state["accuracy"]
        self._last_seen, self._last_kept = self.batches.seen, self.batches.kept
        self.recorder.resume_from_store(STEP_KEYS)


@dataclass(frozen=True)
class AutoAssist:
    """AutoAssist's settings (``conf/sampler/autoassist.yaml``), checked when built; calling it with the data module
    and the run's recorder gives the callback (whose ``datamodule`` the trainer must use).

    Args:
        base_prob: floor of the keep probability, in [0, 1] (1 keeps everything: AutoAssist off, assistant on).
        lr: the assistant's SGD learning rate, > 0.
        l2: the assistant's L2 penalty, >= 0.
        pool_size: side of the pooled image the assistant sees, >= 1.
        loss_ema: per-batch decay of the running mean loss (the informative threshold), in [0, 1).
        seed: seeds the keep/skip draws, >= 0.
    """

    base_prob: float = 0.3
    lr: float = 0.1
    l2: float = 1e-3
    pool_size: int = 7
    loss_ema: float = 0.75
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("base_prob", self.base_prob, 0.0, 1.0)
        check_number("lr", self.lr, 0.0, low_open=True)
        check_number("l2", self.l2, 0.0)
        check_int("pool_size", self.pool_size, 1)
        check_number("loss_ema", self.loss_ema, 0.0, 1.0, high_open=True)
        check_int("seed", self.seed, 0)

    def __call__(self, *, datamodule, recorder: Any) -> AutoAssistCallback:
        return AutoAssistCallback(self, datamodule, recorder)
