"""AutoAssist (Zhang et al., NeurIPS 2019): a cheap assistant model decides which samples the main model (the
"boss") trains on, skipping those it predicts to be uninformative (notes seeds_methods.md section C).

Parts, each small and testable alone:

- :func:`keep_probability`: the acceptance rule, ``P(keep) = base_prob + (1 - base_prob) * p``.
- :class:`Assistant`: ``p(informative | x, y) = sigmoid(W . pool(x) + U[y])``, logistic regression on the image
  average-pooled to ``pool_size x pool_size`` per channel, plus a per-class bias. A sample is *informative* when the
  boss's loss on it is above the running mean loss (the paper's ``--sec_method mean``): an exponential moving average
  over batches, with decay ``loss_ema``, of the loss sum and of the sample count. Trained online by SGD on the log
  loss, one step per boss batch.
- :class:`KeptBatches`: the boss's training batches. It pulls raw batches from the data module's train loader (a new
  shuffled pass whenever one ends), scores them with the assistant, keeps each sample with probability
  :func:`keep_probability` (a seeded generator, so a run is reproducible), and emits batches of exactly
  ``batch_size`` kept samples. An epoch is a fixed number of emitted batches, ``ceil(N / (batch_size * world_size))``
  for N training samples: the boss's batch size, its steps per epoch and so the LR policy's clock are the same as
  without AutoAssist. This is the paper's convention: "an epoch" is N *trained-on* samples, and "fewer epochs" means
  fewer boss gradient computations.
- :class:`AutoAssistCallback`: after each boss batch it trains the assistant on that batch and the boss's per-sample
  losses (``PolicyClassifier.last_sample_losses``: no extra forward pass), and logs, per optimizer step,
  ``autoassist/accept_rate`` (kept / scored raw samples since the previous step), ``train/samples`` (cumulative
  samples the boss trained on), ``autoassist/assistant_acc`` (the assistant's accuracy on the step's batches, measured
  before it learns from them; compare with ``1 - autoassist/informative_frac``, the accuracy of always answering
  "uninformative"), ``autoassist/informative_frac`` (share of the step's samples labelled informative),
  ``autoassist/seen`` (cumulative raw samples scored) and ``autoassist/threshold`` (the running mean loss). At the
  end: ``summary/autoassist_*``. Samples and samples-to-target of *every* run, with or without AutoAssist, are
  summarised by the metrics callback (``summary/samples``, ``summary/samples_to_acc_{T}``).
- :class:`AutoAssist`: the checked settings (the ``sampler`` config group); calling it with the data module and the
  run's recorder builds the callback.

Cost: scoring is one average-pool and one ``[B, d] x [d]`` product per raw batch (d = 49 for 28x28 grey images), the
update the same plus an outer product, all vectorised on the CPU, so it runs synchronously in the training loop.
Measured (``summary/autoassist_s``, scoring + drawing + updating): about 2 s of a 60-90 s Fashion-MNIST/LeNet epoch
(~3%) on the shared 2-core CPU, where one LeNet step costs 40-60 ms. Not counted there: at an acceptance rate of ~0.48
the loader is read about twice as often (one indexing op, ~0.2 ms, per raw batch). On a GPU the update copies the
pooled batch (B x d) and the losses to the CPU, a sync the metrics callback already pays by reading the loss every
batch. Decisions are one batch stale: Lightning prefetches the next batch before the assistant has learnt from the
current one (the paper's are a few batches stale).

DDP: every rank iterates the same shuffled raw order and takes the samples at positions ``rank, rank + world_size,
...`` of each pass (disjoint shards, equal to one sample), draws its keep decisions from its own seeded stream, trains
its own assistant on its own losses, and emits the same fixed number of batches per epoch, so no rank waits in an
all-reduce. Per-rank counters (``seen``, accept rate, accuracy) are the logging process's own; ``train/samples``
counts all ranks.

What it does not do: no importance re-weighting (the gradient is biased towards informative samples; ``base_prob``
bounds the bias, as in the paper); the assistant sees the data module's batch as loaded (there is no augmentation in
this project; with augmentation it would score the augmented view the boss trains on). A resumed run restores the
assistant, the counters and the stream where the boss stopped (no sample skipped or repeated), but is not bit-exact:
the first regenerated batch is scored by an assistant one update fresher than in the uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.training.arguments import check_int, check_number
from pipeline.training.data import derive_seed

# The keep/skip draws' random stream; keys 0-2 are the data module's (split, order, synthetic data).
_KEEP_STREAM = 3
# Per-step series this callback writes; a resumed run must not write their steps twice.
STEP_KEYS = ("train/samples", "autoassist/accept_rate", "autoassist/assistant_acc", "autoassist/informative_frac",
             "autoassist/seen", "autoassist/threshold")


def keep_probability(p: Tensor | float, base_prob: float) -> Tensor | float:
    """Probability that a sample the assistant scores ``p`` (in [0, 1]) is kept: at least ``base_prob``, 1 at p = 1.

    The paper draws c ~ U(0, 1) and keeps when c < base_prob, else when (c - base_prob) / (1 - base_prob) < p: the
    same probability, with one draw.
    """
    check_number("base_prob", base_prob, 0.0, 1.0)
    return base_prob + (1.0 - base_prob) * p


# ---------------------------------------------------------------------------------------------------------------------
# The assistant


class AssistantStep(NamedTuple):
    """What one update saw, measured before the update: accuracy, share labelled informative, the loss threshold."""

    accuracy: float
    informative_frac: float
    threshold: float


class Assistant:
    """Online logistic regression ``p(informative | x, y) = sigmoid(W . pool(x) + U[y])``, on the CPU.

    Args:
        in_channels: image channels.
        num_classes: classes (one bias each).
        pool_size: the image is average-pooled to ``pool_size x pool_size`` per channel (``d = C * pool_size**2``).
        lr: SGD learning rate on the mean log loss of a batch.
        l2: L2 penalty on W and U (added to the gradient as ``l2 * parameter``).
        loss_ema: decay, per batch, of the running mean loss that separates informative from uninformative samples.

    Parameters start at zero: every sample scores p = 0.5 until the boss's losses have taught it something.
    """

    def __init__(self, in_channels: int, num_classes: int, *, pool_size: int = 7, lr: float = 0.1, l2: float = 1e-3,
                 loss_ema: float = 0.75) -> None:
        check_int("in_channels", in_channels, 1)
        check_int("num_classes", num_classes, 2)
        self.pool_size = check_int("pool_size", pool_size, 1)
        self.lr = check_number("lr", lr, 0.0, low_open=True)
        self.l2 = check_number("l2", l2, 0.0)
        self.loss_ema = check_number("loss_ema", loss_ema, 0.0, 1.0, high_open=True)
        self.weight = torch.zeros(in_channels * pool_size * pool_size)
        self.class_bias = torch.zeros(num_classes)
        self.loss_sum = 0.0  # EMAs over batches of the boss's loss sum and sample count: their ratio is the threshold
        self.loss_count = 0.0

    def features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` images -> ``[B, C * pool_size**2]`` float32 features on the CPU."""
        pooled = F.adaptive_avg_pool2d(x.detach().float(), self.pool_size).flatten(1)
        return pooled.cpu()

    def prob(self, features: Tensor, y: Tensor) -> Tensor:
        """p(informative) of each sample."""
        return torch.sigmoid(features @ self.weight + self.class_bias[y])

    @property
    def threshold(self) -> float:
        """The running mean loss (NaN before the first update)."""
        return self.loss_sum / self.loss_count if self.loss_count else math.nan

    def labels(self, losses: Tensor) -> Tensor:
        """Fold the batch into the running mean loss, then label samples above it informative (1.0) or not (0.0)."""
        self.loss_sum = self.loss_ema * self.loss_sum + float(losses.sum())
        self.loss_count = self.loss_ema * self.loss_count + losses.numel()
        return (losses > self.threshold).float()

    def update(self, features: Tensor, y: Tensor, losses: Tensor) -> AssistantStep:
        """One SGD step on a batch the boss trained on, given the boss's per-sample losses (CPU tensors)."""
        labels = self.labels(losses.detach().float().cpu())
        y = y.cpu()
        p = self.prob(features, y)
        accuracy = float(((p > 0.5).float() == labels).float().mean())
        residual = (p - labels) / len(labels)  # d(mean log loss)/d(logit)
        self.weight -= self.lr * (features.T @ residual + self.l2 * self.weight)
        bias_grad = torch.zeros_like(self.class_bias).index_add_(0, y, residual)
        self.class_bias -= self.lr * (bias_grad + self.l2 * self.class_bias)
        return AssistantStep(accuracy, float(labels.mean()), self.threshold)

    def state_dict(self) -> dict:
        return {"weight": self.weight.clone(), "class_bias": self.class_bias.clone(), "loss_sum": self.loss_sum,
                "loss_count": self.loss_count}

    def load_state_dict(self, state: dict) -> None:
        self.weight = state["weight"].clone()
        self.class_bias = state["class_bias"].clone()
        self.loss_sum, self.loss_count = state["loss_sum"], state["loss_count"]


# ---------------------------------------------------------------------------------------------------------------------
# The boss's batches


class _Snapshot(NamedTuple):
    """The stream just before it produced one batch: enough to produce it, and all after it, again."""

    produced: int
    generator: Tensor
    raw_pass: int
    raw_batches: int
    buffer: tuple[Tensor, Tensor] | None
    seen: int
    kept: int


class KeptBatches:
    """Fixed-size batches of the samples the assistant keeps, ``batches_per_epoch`` of them per epoch.

    Args:
        loader: the data module's train loader, yielding ``(x, y)``; its sampler's ``set_epoch`` (if any) is called
            with the number of the pass, so pass k through the data has the order epoch k would have had.
        assistant: scores raw samples.
        base_prob: floor of the keep probability.
        batch_size: samples per emitted batch.
        seed: seeds the keep/skip draws (one stream per rank).
        position: batches of the current epoch already trained on (non-zero only when a run resumes mid-epoch):
            the epoch then emits only the rest.

    The stream is continuous across epochs: samples kept but not yet emitted at an epoch's end open the next epoch.
    """

    def __init__(self, loader, assistant: Assistant, *, base_prob: float, batch_size: int, seed: int,
                 position: Callable[[], int] | None = None) -> None:
        self.loader = loader
        self.assistant = assistant
        self.base_prob = check_number("base_prob", base_prob, 0.0, 1.0)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.position = position
        self.rank, self.world_size = 0, 1
        self.seen = 0  # raw samples scored
        self.kept = 0  # of which kept
        self.seconds = 0.0  # spent scoring and drawing
        self._restart(produced=0, raw_pass=0, raw_batches=0, buffer=None)
        self._generator = torch.Generator().manual_seed(derive_seed(self.seed, _KEEP_STREAM, self.rank))
        self._snapshots: deque[_Snapshot] = deque(maxlen=4)  # the prefetcher runs at most one or two batches ahead

    def shard(self, rank: int, world_size: int) -> None:
        """Take the ``rank``-th of ``world_size`` disjoint shards; call before the first batch."""
        check_int("world_size", world_size, 1)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size - 1}], got {rank!r}")
        if self._produced:
            raise RuntimeError("KeptBatches.shard() must be called before the first batch")
        self.rank, self.world_size = rank, world_size
        self._generator = torch.Generator().manual_seed(derive_seed(self.seed, _KEEP_STREAM, rank))

    @property
    def batches_per_epoch(self) -> int:
        """``ceil(N / (batch_size * world_size))``: as many boss batches per rank as an unfiltered epoch has."""
        return max(math.ceil(len(self.loader.dataset) / (self.batch_size * self.world_size)), 1)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        done = min(max(self.position() if self.position else 0, 0), self.batches_per_epoch)
        for _ in range(self.batches_per_epoch - done):
            yield self.next_batch()

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """The next ``batch_size`` kept samples."""
        self._snapshots.append(self._snapshot())
        xs, ys = ([self._buffer[0]], [self._buffer[1]]) if self._buffer is not None else ([], [])
        count = len(ys[0]) if ys else 0
        while count < self.batch_size:
            x, y = self._raw_batch()
            start = time.perf_counter()
            keep = self._keep(x, y)
            self.seconds += time.perf_counter() - start
            xs.append(x[keep])
            ys.append(y[keep])
            count += int(keep.sum())
        x, y = torch.cat(xs), torch.cat(ys)
        self._buffer = (x[self.batch_size :], y[self.batch_size :]) if count > self.batch_size else None
        self._produced += 1
        return x[: self.batch_size], y[: self.batch_size]

    def _keep(self, x: Tensor, y: Tensor) -> Tensor:
        p = self.assistant.prob(self.assistant.features(x), y)
        keep = torch.rand(len(y), generator=self._generator) < keep_probability(p, self.base_prob)
        self.seen += len(y)
        self.kept += int(keep.sum())
        return keep

    def _raw_batch(self) -> tuple[Tensor, Tensor]:
        """This rank's share of the next raw batch (never empty), starting a new pass through the data as needed."""
        while True:
            try:
                x, y = next(self._raw)
            except StopIteration:
                self._open_pass(self._raw_pass + 1, skip=0)
                continue
            start = (self.rank - self._raw_samples) % self.world_size  # position in the pass decides the rank
            self._raw_batches += 1
            self._raw_samples += len(y)
            if self.world_size > 1:
                x, y = x[start :: self.world_size], y[start :: self.world_size]
            if len(y):
                return x, y

    def _open_pass(self, raw_pass: int, skip: int) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(raw_pass)
        self._raw = iter(self.loader)
        self._raw_pass, self._raw_batches, self._raw_samples = raw_pass, 0, 0
        for _ in range(skip):
            self._raw_samples += len(next(self._raw)[1])
            self._raw_batches += 1

    def _restart(self, *, produced: int, raw_pass: int, raw_batches: int,
                 buffer: tuple[Tensor, Tensor] | None) -> None:
        self._produced = produced
        self._buffer = buffer
        self._raw = iter(())  # opened lazily: a loader is not iterated before training asks for a batch
        self._raw_pass, self._raw_batches, self._raw_samples = raw_pass, raw_batches, 0
        self._pending_pass = (raw_pass, raw_batches)

    def _snapshot(self) -> _Snapshot:
        if self._pending_pass is not None:  # the first batch after (re)starting: open the pass where it was
            raw_pass, skip = self._pending_pass
            self._open_pass(raw_pass, skip=skip)
            self._pending_pass = None
        return _Snapshot(self._produced, self._generator.get_state(), self._raw_pass, self._raw_batches,
                         self._buffer, self.seen, self.kept)

    # -- resuming (not named state_dict: Lightning would checkpoint a loader with one itself, prefetched batches
    # included) -------------------------------------------------------------------------------------------------
    def snapshot(self, trained_batches: int) -> dict:
        """The stream as it was just after the boss's ``trained_batches``-th batch (batches prefetched beyond it are
        produced again after a resume)."""
        snapshot = next((s for s in self._snapshots if s.produced == trained_batches), None)
        if snapshot is None:  # nothing prefetched: the stream is exactly there
            snapshot = self._snapshot()
        return {**snapshot._asdict(), "rank": self.rank, "world_size": self.world_size, "seconds": self.seconds}

    def restore(self, state: dict) -> None:
        """Go on from a :meth:`snapshot`."""
        if (state["rank"], state["world_size"]) != (self.rank, self.world_size):
            raise ValueError(f"cannot resume rank {state['rank']} of {state['world_size']} as rank {self.rank} of "
                             f"{self.world_size}")
        self._generator.set_state(state["generator"])
        self.seen, self.kept, self.seconds = state["seen"], state["kept"], state["seconds"]
        self._snapshots.clear()
        self._restart(produced=state["produced"], raw_pass=state["raw_pass"], raw_batches=state["raw_batches"],
                      buffer=state["buffer"])


class _TrainBatchesData(L.LightningDataModule):
    """A data module that trains on ``train_batches`` and validates and tests on ``data``'s loaders."""

    def __init__(self, data: L.LightningDataModule, train_batches: KeptBatches) -> None:
        super().__init__()
        self.data, self.train_batches = data, train_batches

    def setup(self, stage: str) -> None:
        self.data.setup(stage)

    def train_dataloader(self) -> KeptBatches:
        return self.train_batches

    def val_dataloader(self):
        return self.data.val_dataloader()

    def test_dataloader(self):
        return self.data.test_dataloader()


# ---------------------------------------------------------------------------------------------------------------------
# The callback and its settings


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
        self.datamodule = _TrainBatchesData(datamodule, self.batches)
        self._trainer = None
        self.trained_batches = 0  # boss batches on this rank
        self.samples = 0  # samples the boss trained on, all ranks
        self.update_seconds = 0.0
        self._acc_sum, self._informative_sum, self._acc_count = 0.0, 0.0, 0  # over the current optimizer step
        self._acc_total, self._acc_total_count = 0.0, 0  # over the run
        self._last_step, self._last_seen, self._last_kept = 0, 0, 0

    def _position(self) -> int:
        """Batches of the current epoch already trained on (non-zero only when a run resumed mid-epoch)."""
        trainer = self._trainer
        if trainer is None:
            return 0
        accumulate = trainer.accumulate_grad_batches
        steps_per_epoch = math.ceil(self.batches.batches_per_epoch / accumulate)
        return (trainer.global_step - trainer.current_epoch * steps_per_epoch) * accumulate

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
        self._acc_sum += step.accuracy
        self._informative_sum += step.informative_frac
        self._acc_count += 1
        self._acc_total += step.accuracy
        self._acc_total_count += 1
        if trainer.global_step == self._last_step:
            return  # accumulating gradients: log once per optimizer step
        self._last_step = trainer.global_step
        values = {
            "train/samples": self.samples,
            "autoassist/seen": self.batches.seen,
            "autoassist/assistant_acc": self._acc_sum / self._acc_count,
            "autoassist/informative_frac": self._informative_sum / self._acc_count,
            "autoassist/threshold": step.threshold,
        }
        if self.batches.seen > self._last_seen:  # no raw batch is drawn while kept samples are left over
            values["autoassist/accept_rate"] = (self.batches.kept - self._last_kept) / (self.batches.seen
                                                                                        - self._last_seen)
        self._last_seen, self._last_kept = self.batches.seen, self.batches.kept
        self._acc_sum, self._informative_sum, self._acc_count = 0.0, 0.0, 0
        self.recorder.metrics(values, trainer.global_step - 1)

    def on_train_end(self, trainer, pl_module) -> None:
        self.recorder.metrics(self.summary(), trainer.global_step)

    def summary(self) -> dict[str, float]:
        """``summary/autoassist_*``: raw samples scored, share kept, mean assistant accuracy, seconds spent."""
        seen = self.batches.seen
        return {
            "summary/autoassist_seen": float(seen),
            "summary/autoassist_accept_rate": self.batches.kept / seen if seen else math.nan,
            "summary/autoassist_acc": self._acc_total / self._acc_total_count if self._acc_total_count else math.nan,
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
            "accuracy": (self._acc_total, self._acc_total_count),
        }

    def load_state_dict(self, state: dict) -> None:
        self.assistant.load_state_dict(state["assistant"])
        self.batches.restore(state["batches"])
        self.trained_batches, self.samples = state["trained_batches"], state["samples"]
        self.update_seconds = state["update_seconds"]
        self._acc_total, self._acc_total_count = state["accuracy"]
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


__all__ = ["Assistant", "AssistantStep", "AutoAssist", "AutoAssistCallback", "KeptBatches", "keep_probability"]
