"""K networks of one architecture as one vectorised model: stacked parameters and buffers, each copy's gradient and
loss on a shared batch (``torch.func``), and each copy's logits for evaluation."""

from __future__ import annotations

import copy
from typing import Any

from pipeline.config.checks import ConfigError

# Evaluation batches are split so that one vmapped forward sees at most this many (sample, copy) pairs: K copies of
# a 1,000-sample batch would otherwise hold K full sets of activations at once.
EVAL_PAIRS = 4096


class PackedNets:
    """K networks of one architecture as stacked tensors (parameters and buffers ``[K, ...]``) and one skeleton on
    the meta device that ``functional_call`` runs with each copy's tensors under ``vmap``."""

    def __init__(self, nets: list, device, dtype):
        import torch
        from torch.func import functional_call, grad_and_value, stack_module_state, vmap

        for net in nets:
            if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in net.modules()):
                raise ConfigError(f"model: a pack cannot train {type(net).__name__}: its dropout draws random masks "
                                  "that could not match separate runs")
        nets = [net.to(device=device, dtype=dtype) for net in nets]
        params, buffers = stack_module_state(nets)
        self.params = {name: value.detach() for name, value in params.items()}
        self.buffers = dict(buffers)
        self.copies = len(nets)
        self.skeleton = copy.deepcopy(nets[0]).to("meta")

        def loss(params, buffers, x, y):
            logits = functional_call(self.skeleton, (params, buffers), (x,))
            # The Lightning module's loss, to the operation: per-sample losses, then their mean.
            return torch.nn.functional.cross_entropy(logits, y, reduction="none").mean()

        self._grads_and_losses = vmap(grad_and_value(loss), in_dims=(0, 0, None, None))
        self._logits = vmap(lambda p, b, x: functional_call(self.skeleton, (p, b), (x,)), in_dims=(0, 0, None))

    def grads_and_losses(self, x, y) -> tuple[dict, Any]:
        """Every copy's gradient (``[K, ...]`` per parameter) and mean loss (``[K]``) on the same batch."""
        self.skeleton.train()
        return self._grads_and_losses(self.params, self.buffers, x, y)

    def logits(self, x, copies: list[int]):
        """Logits ``[len(copies), B, classes]`` of the chosen copies, in evaluation mode."""
        import torch

        self.skeleton.eval()
        params, buffers = self.params, self.buffers
        with torch.no_grad():
            if copies != list(range(self.copies)):
                index = torch.tensor(copies, device=x.device)
                params = {n: t.index_select(0, index) for n, t in params.items()}
                buffers = {n: t.index_select(0, index) for n, t in buffers.items()}
            chunk = max(1, EVAL_PAIRS // len(copies))
            return torch.cat([self._logits(params, buffers, part) for part in x.split(chunk)], dim=1)
