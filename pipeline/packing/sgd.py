"""The stacked SGD update of a pack: ``torch.optim.SGD``'s formula applied to ``[K, ...]`` tensors, copy k with its
own learning rate and momentum. Pure tensor maths: no model, no loop, no tracking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config.checks import ConfigError


@dataclass(frozen=True)
class SGDRule:
    """``torch.optim.SGD``'s hyper-parameters other than the learning rate (and momentum: a momentum policy may set
    it per copy and per step; ``momentum`` here is the optimizer's constant)."""

    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    maximize: bool

    @classmethod
    def of(cls, optimizer) -> SGDRule:
        import torch

        if type(optimizer) is not torch.optim.SGD:
            raise ConfigError(f"optimizer: a pack trains with torch.optim.SGD only (optimizer=sgd, momentum or "
                              f"nesterov), got {type(optimizer).__name__}")
        d = optimizer.defaults
        return cls(float(d["momentum"]), float(d["dampening"]), float(d["weight_decay"]), bool(d["nesterov"]),
                   bool(d.get("maximize", False)))


class PackedSGD:
    """SGD over stacked ``[K, ...]`` parameters, copy k with its own ``lr_k`` and momentum ``m_k``.

    Per copy it is ``torch.optim.SGD``'s single-tensor update, step for step: ``g = -g`` if maximize;
    ``g += weight_decay * p``; where ``m_k != 0``: the buffer starts as ``g`` (at the copy's first step with momentum)
    and is ``b = m_k b + (1 - dampening) g`` after, and ``g = g + m_k b`` (Nesterov) or ``g = b``; then
    ``p -= lr_k g``. A copy with ``m_k = 0`` leaves its buffer alone, as torch does. Frozen copies (``active`` false)
    keep their parameters and buffers.
    """

    def __init__(self, rule: SGDRule, copies: int, momentum_policies: bool):
        self.rule = rule
        self.use_momentum = rule.momentum != 0 or momentum_policies
        self.started = [False] * copies  # per copy: has a momentum buffer yet
        self.buffers: dict[str, Any] = {}

    def step(self, params: dict, grads: dict, lrs: list[float], momenta: list[float], active: list[bool]) -> None:
        import torch

        like = next(iter(params.values()))

        def vector(values, dtype=None):  # per-copy values as a [K] tensor beside the parameters
            return torch.tensor(values, dtype=dtype or like.dtype, device=like.device)

        all_active = all(active)
        on = [m != 0 for m in momenta]
        plain = all(on) and all(self.started) and all_active  # the common step: no masks needed
        lr, m = vector(lrs), vector(momenta)
        on_t = started_t = active_t = None
        if not plain:
            on_t, started_t = vector(on, torch.bool), vector(self.started, torch.bool)
            active_t = vector(active, torch.bool)
        r = self.rule
        with torch.no_grad():
            for name, p in params.items():
                shape = (-1,) + (1,) * (p.dim() - 1)
                g = grads[name]
                if r.maximize:
                    g = -g
                if r.weight_decay != 0:
                    g = g.add(p, alpha=r.weight_decay)
                if self.use_momentum:
                    masks = None if plain else (on_t.view(shape), started_t.view(shape),
                                                None if all_active else active_t.view(shape))
                    g = self._momentum(name, g, m.view(shape), masks)
                if all_active:
                    p.addcmul_(lr.view(shape), g, value=-1)  # p - lr g in one kernel, rounded as torch's p - lr*g
                else:
                    p.copy_(torch.where(active_t.view(shape), p - lr.view(shape) * g, p))
        self.started = [s or (o and a) for s, o, a in zip(self.started, on, active)]

    def _momentum(self, name, g, m, masks):
        """The update direction of one stacked parameter, and its new momentum buffer. ``masks`` (momentum on,
        buffer started, copy active; each ``[K, 1, ...]``, active None for all) is None when all are true."""
        import torch

        r = self.rule
        buf = self.buffers.get(name)
        if masks is None:
            buf.mul_(m).add_(g, alpha=1 - r.dampening)
            new = buf
        else:
            on, started, active = masks
            old = buf if buf is not None else torch.zeros_like(g)
            new = torch.where(started, torch.add(old * m, g, alpha=1 - r.dampening), g)
            new = torch.where(on, new, old)  # momentum 0 this step: torch leaves the buffer as it is
            if active is not None:
                new = torch.where(active, new, old)
            self.buffers[name] = new
        direction = g + m * new if r.nesterov else new
        return direction if masks is None else torch.where(masks[0], direction, g)

