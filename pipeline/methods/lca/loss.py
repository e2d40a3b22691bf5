"""``L(θ)`` for LCA: the mean cross-entropy of the model over a fixed evaluation set, at any parameter vector.

``L`` is the training loss without weight decay or any other regulariser, over a seeded subset of the training data
(:func:`eval_subset`) processed in fixed chunks, evaluated with ``torch.func.functional_call``; the live parameters
are never touched. The passes run in float32/float64 with autocast disabled (AMP noise would exceed LCA's 1e-3
threshold), with these layer semantics (:func:`eval_semantics`):

- dropout off (eval mode), so ``L`` is deterministic;
- BatchNorm, ``bn_mode="batch"`` (default, the paper's choice): each evaluation chunk is normalised with its own
  batch statistics and the running buffers are neither read nor updated. ``L`` is then a function of ``θ`` alone:
  per-step LCA conserves, consecutive steps add up to the loss change over a window, and the gradient at ``θ_{t+1}``
  is reused as the next step's start. ``bn_mode="running"`` (plain eval mode): chunks are normalised with the running
  buffers as they are when the step is measured, the same buffers at every point of the step, so each step still
  conserves; but the buffers move between steps (``L`` is redefined every step, sums over steps do not telescope)
  and early in training they lag the weights. Running-buffer BN is what validation uses, not what training
  minimises, hence the default.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from pipeline.arguments import check_int

BN_MODES = ("batch", "running")

Params = dict[str, Tensor]


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


def eval_subset(dataset, size: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """``size`` samples of ``dataset`` (all if None or larger) drawn without replacement by a seeded permutation."""
    count = len(dataset) if size is None else min(size, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    x, y = torch.utils.data.default_collate([dataset[i] for i in order.tolist()])
    return x, y
