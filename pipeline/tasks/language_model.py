"""Language modelling: next-token cross-entropy over integer token sequences; loss (nats per token), perplexity and
next-token accuracy.

A sample is ``x`` = tokens ``[seq_len]`` and ``y`` = the same sequence shifted by one (``y[i]`` is the token after
``x[i]``); the model outputs one logit per vocabulary entry at every position, ``[batch, seq_len, vocab]``. Targets
equal to ``ignore_index`` (padding) count neither in the loss nor in the metrics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.tasks.base import Metric, Task, floating, integer, shape


class LanguageModelStats:
    """Sums of token losses and correct next-token guesses over a whole split (perplexity = exp(mean loss))."""

    _N, _LOSS, _CORRECT = range(3)

    def __init__(self, ignore_index: int = -100) -> None:
        self.ignore_index = ignore_index
        self.state = torch.zeros(3, dtype=torch.float64)

    def reset(self) -> None:
        self.state.zero_()

    @torch.no_grad()
    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        logits = output.detach().float().reshape(-1, output.shape[-1])
        y = target.detach().reshape(-1)
        kept = y != self.ignore_index
        s = self.state
        s[self._N] += kept.sum().cpu()
        s[self._LOSS] += F.cross_entropy(logits, y, ignore_index=self.ignore_index, reduction="sum").double().cpu()
        s[self._CORRECT] += (logits.argmax(dim=1).eq(y) & kept).sum().cpu()

    def compute(self) -> dict[str, float]:
        n, loss, correct = (v.item() for v in self.state)
        if n == 0:
            raise ValueError("no evaluation samples were seen")
        mean = loss / n
        return {"loss": mean, "perplexity": math.exp(min(mean, 700.0)), "acc": correct / n}


class LanguageModel(Task):
    """Next-token prediction on integer token ids; the mean cross-entropy per (non-ignored) token."""

    name = "language_model"
    metrics = (
        Metric("loss", "a cross-entropy in nats per token", 0.0, low_open=True, better="min"),
        Metric("perplexity", "a perplexity", 1.0, better="min"),
        Metric("acc", "a next-token accuracy", 0.0, 1.0, low_open=True, better="max"),
    )

    def __init__(self, ignore_index: int = -100) -> None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"ignore_index must be an integer (the target id that pads sequences), got "
                             f"{ignore_index!r}")
        self.ignore_index = ignore_index

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tokens = F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1),
                                 ignore_index=self.ignore_index, reduction="none").view(target.shape)
        kept = (target != self.ignore_index).reshape(len(target), -1)
        return tokens.reshape(len(target), -1).sum(dim=1) / kept.sum(dim=1).clamp(min=1)

    def stats(self, output_size: int) -> LanguageModelStats:
        return LanguageModelStats(self.ignore_index)

    def check_batch(self, output: torch.Tensor, target: torch.Tensor, output_size: int | None) -> None:
        if not integer(target) or target.ndim < 2:
            raise ValueError(f"dataset: task=language_model needs integer next-token targets [batch, seq_len]; the "
                             f"data gives targets {shape(target)}")
        vocab = output_size or output.shape[-1]
        if not floating(output) or tuple(output.shape) != (*target.shape, vocab):
            raise ValueError(f"model: task=language_model needs one logit per vocabulary entry at every position, "
                             f"output [{', '.join(str(d) for d in target.shape)}, {vocab}] float; the model gives "
                             f"{shape(output)}")
        kept = target[target != self.ignore_index]
        if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= vocab):
            raise ValueError(f"dataset: token ids must lie in [0, {vocab - 1}] (the vocabulary); the data gives ids "
                             f"in [{int(kept.min())}, {int(kept.max())}]")

    def __repr__(self) -> str:
        return f"LanguageModel(ignore_index={self.ignore_index})"
