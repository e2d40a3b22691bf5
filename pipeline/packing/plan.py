"""Which jobs may train together as one pack, and which jobs must train alone: the rules of a pack, pure (configs in,
answers out: no torch, no Hydra state, no tracking store)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.config.checks import ConfigError

log = logging.getLogger(__name__)

# Top-level config keys in which the jobs of a pack may differ: what each copy's policies and initial weights are
# made of. Everything else must be equal, ``dataset.seed`` (the shared data order) included.
PACK_FREE_KEYS = ("policy", "warmup", "schedule", "momentum", "seed", "run_name")
# trainer.pack=auto on CUDA: copies per pack (the target is measured at 16 LeNets).
AUTO_PACK = 16
# trainer.precision -> the dtype the copies train in.
PRECISION_DTYPES = {"32-true": "float32", "32": "float32", "64-true": "float64"}


def asks_to_pack(config: DictConfig, job_overrides: Sequence[Sequence[str]]) -> bool:
    """Whether a sweep may pack at all: ``trainer.pack`` is overridden by a job or is not 1 in the sweep's config.
    Answered from the overrides, so a sweep that does not pack never composes its jobs' configs to find out."""
    asked = any(o.startswith("trainer.pack=") for overrides in job_overrides for o in overrides)
    return asked or OmegaConf.select(config, "trainer.pack", default=1) != 1


def pack_refusal(cfg: DictConfig) -> str | None:
    """Why this job cannot train in a pack, judged from its config alone (no torch); None when it can."""
    task = OmegaConf.select(cfg, "task._target_", default=None)
    if task not in (None, "pipeline.tasks.classification.Classification"):
        return f"task: a pack trains classification only (cross-entropy on class labels), not {task}"
    target = OmegaConf.select(cfg, "optimizer._target_")
    if target != "torch.optim.SGD":
        return f"optimizer: a pack trains with SGD only (optimizer=sgd, momentum or nesterov), not {target}"
    for group in ("analysis", "sampler"):
        if cfg.get(group) is not None:
            return f"{group}: +{group} needs a run of its own (it hooks into one Lightning Trainer)"
    trainer = cfg.trainer
    if trainer.accumulate_grad_batches != 1:
        return f"trainer.accumulate_grad_batches must be 1 to pack, got {trainer.accumulate_grad_batches}"
    for key in ("devices", "num_nodes"):
        if trainer[key] != 1:
            return f"trainer.{key} must be 1 to pack (a pack trains in one process on one device), got {trainer[key]}"
    if trainer.strategy != "auto":
        return f"trainer.strategy must be auto to pack, got {trainer.strategy}"
    if str(trainer.precision) not in PRECISION_DTYPES:
        return f"trainer.precision must be one of {', '.join(PRECISION_DTYPES)} to pack, got {trainer.precision}"
    return None


def _on_cuda(cfg: DictConfig, cuda_available: Callable[[], bool]) -> bool:
    accelerator = cfg.trainer.accelerator
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda_available())


def pack_size(cfg: DictConfig, cuda_available: Callable[[], bool]) -> int:
    """How many jobs this job may share a pack with (itself included): ``trainer.pack``, where ``auto`` is
    :data:`AUTO_PACK` for a job that trains on CUDA and 1 (no packing: slower on CPU) otherwise."""
    value = OmegaConf.select(cfg, "trainer.pack", default=1)
    if value == "auto":
        return AUTO_PACK if _on_cuda(cfg, cuda_available) else 1
    return int(value)


def _first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key (in sorted order) where two nested configs differ, with both values; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{prefix}{key}", a.get(key, "<absent>"), b.get(key, "<absent>")
            found = _first_difference(a[key], b[key], f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else (prefix.rstrip("."), a, b)


def _shared_part(config: dict) -> dict:
    """The part of a resolved job config that every job of a pack must have alike."""
    return {key: value for key, value in config.items() if key not in PACK_FREE_KEYS}


def check_same_but_policies(configs: list[dict]) -> None:
    """Refuse a pack whose jobs (resolved configs) differ in anything but :data:`PACK_FREE_KEYS`, naming the first
    differing key."""
    for i, config in enumerate(configs[1:], start=1):
        found = _first_difference(_shared_part(configs[0]), _shared_part(config))
        if found:
            key, first, other = found
            hint = ""
            if key == "dataset.seed":
                hint = ("; packed copies train on one data order: give dataset.seed one value (e.g. dataset.seed=0) "
                        "to pack jobs of different seeds")
            raise ConfigError(f"{key}: the jobs of a pack may differ only in {', '.join(PACK_FREE_KEYS)}; job 0 has "
                              f"{first!r}, job {i} has {other!r}{hint}")


def group_jobs(configs: Sequence[DictConfig], resolve: Callable[[DictConfig], dict],
               cuda_available: Callable[[], bool]) -> list[list[int]]:
    """Group a sweep's jobs (indices, in sweep order) into packs: jobs whose resolved configs (``resolve``) differ
    only in :data:`PACK_FREE_KEYS`, at most ``trainer.pack`` to a pack. A job that cannot be packed is a pack of one
    (the reason is logged); only jobs that may pack are resolved."""
    packs: list[list[int]] = []
    filling: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        size = pack_size(cfg, cuda_available)
        reason = pack_refusal(cfg) if size > 1 else None
        if size <= 1 or reason:
            if reason:
                log.warning(f"job #{i} trains alone: {reason}")
            packs.append([i])
            continue
        key = f"{size}:{json.dumps(_shared_part(resolve(cfg)), sort_keys=True, default=str)}"
        pack = filling.get(key)
        if pack is None or len(pack) >= size:
            pack = filling[key] = []
            packs.append(pack)
        pack.append(i)
    return packs
