"""The LCA of one optimizer step, from the paper's equations (Lan et al. 2019, arXiv 1909.01440).

Over one optimizer step ``θ_t → θ_{t+1}`` the change of a fixed loss ``L`` (:mod:`.loss`) is the integral of its
gradient along the straight segment between the two parameter vectors (``Δθ = θ_{t+1} − θ_t``)::

    L(θ_{t+1}) − L(θ_t) = ∫_0^1 ⟨∇L(θ_t + s·Δθ), Δθ⟩ ds  ≈  Σ_i A_i,   A_i = Δθ_i · k_i,
    k = Σ_{j=0..n} w_j ∇L(θ_t + (j/n)·Δθ),   w = [1, 4, 2, 4, …, 2, 4, 1] / (3n)   (composite Simpson).

``A_i`` is parameter ``i``'s share of the loss change on that step; ``A_i < 0`` means it *helped* (its motion
lowered the loss). ``n = 2`` is the paper's "RK4" rule (gradients at both ends and the midpoint). The conservation
error ``|Σ_i A_i − (L(θ_{t+1}) − L(θ_t))|`` measures the quadrature error; while it exceeds ``threshold`` (paper:
1e-3, loss units) ``n`` is doubled, reusing every gradient already computed, up to ``max_splits`` sub-intervals.

Cost per measured step: 3 gradient evaluations of the evaluation set at ``n = 2`` (2 when the previous step was
measured too and its end is reused), plus ``n/2`` more at each doubling. Memory: a few parameter-sized float64
buffers per step and, across steps, only per-layer sums (never per-parameter histories).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.methods.lca.loss import EvalLoss, Params


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
    sub-intervals used. ``end_grad`` is ``∇L(θ_{t+1})`` (float64), kept so the next step can start from it.
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
