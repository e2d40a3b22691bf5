"""Packed policies: K jobs of a sweep that differ only in their policies (and init seed) trained together as one
vectorised model, each copy recorded as its own MLflow run (GitHub issue #11, item 3).

How. Each job is checked and built exactly as :func:`run_job <pipeline.training.job.run_job>` does it (``check``,
then ``build_training`` with its own seed, so copy k starts from the weights its own run would start from). The K
networks are stacked (``torch.func.stack_module_state``: every parameter and buffer becomes one ``[K, ...]``
tensor) and trained with ``functional_call`` under ``vmap(grad_and_value(...))`` on the *same* batch: copy k's loss
is its own mean cross-entropy and its gradient its own. The update is ``torch.optim.SGD``'s formula (weight decay,
heavy-ball or Nesterov momentum, dampening, maximize) applied to the stacked tensors with a per-copy learning rate
``lr_k = policy_k(t)`` and per-copy momentum (``momentum_k(t)`` under a momentum policy), in a plain PyTorch loop
(no Lightning Trainer). BatchNorm works: its running statistics are stacked buffers, updated per copy.

Rules of a pack (each broken rule is a :class:`ConfigError` that names the key):

- The jobs' resolved configs are equal except in :data:`PACK_FREE_KEYS` (policy, warm-up, schedule, momentum
  policy, seed, run name). Everything else (model, data, optimizer, budget, evaluation, tracking) is shared.
- **One data order.** The copies train on the same batches, so ``dataset.seed`` (the training order; it follows
  ``seed`` by default) must be equal. ``seed`` may differ: it seeds each copy's initial weights. To pack jobs of
  different seeds, fix the order: ``dataset.seed=0 seed=0,1,2``. A sweep over ``seed`` alone is packed per seed.
- SGD only (``optimizer=sgd``, ``momentum``, ``nesterov``); no dropout (its random masks could not match separate
  runs); one process on one device; no ``+analysis`` or ``+sampler``; no gradient accumulation; precision
  ``32-true`` or ``64-true``.

What a copy's run holds is what its own run would hold: ``lr``, ``momentum`` and ``train/loss`` at every optimizer
step, ``val/*`` every ``trainer.eval_every_steps`` steps and at the end, ``test/*``, ``summary/*``, the config and
LR-curve artifacts, and the usual tags plus ``packed`` (K) and ``pack_id``. Differences: ``summary/train_s`` and
``seconds_to_*`` are the pack's wall-clock (K models trained in that time), and a pack keeps no checkpoints (a
killed pack ends KILLED and starts over when run again). A copy that diverges ends FAILED (diverged) and is frozen
(its updates are masked out) while the others go on.

Equivalence: in float64 (``trainer.precision=64-true``) a packed copy reproduces its separate run to rounding
(tests/test_packed.py); in float32 the summation order differs and the curves drift apart after tens of steps, as
separate float32 runs on different hardware do (notes perf.md). Speed: on CPU packing is slower than running the
jobs one after another (perf.md, ``benchmarks/packed.py``), so ``trainer.pack=auto`` packs only on CUDA.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import sys
import time
import traceback
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from pipeline.config.checks import ConfigError, check
from pipeline.tracking import interrupts, store
from pipeline.tracking.recorder import open_run
from pipeline.training.job import (
    JobResult,
    build_training,
    job_checkpoint_dir,
    job_config,
    job_lock,
    record_setup,
    run_key,
    run_name,
    run_tags,
)

log = logging.getLogger(__name__)

# Top-level config keys in which the jobs of a pack may differ: what each copy's policies and initial weights are
# made of. Everything else must be equal, ``dataset.seed`` (the shared data order) included.
PACK_FREE_KEYS = ("policy", "warmup", "schedule", "momentum", "seed", "run_name")
# trainer.pack=auto on CUDA: copies per pack (the target is measured at 16 LeNets).
AUTO_PACK = 16
# trainer.precision -> the dtype the copies train in.
PRECISION_DTYPES = {"32-true": "float32", "32": "float32", "64-true": "float64"}
# Evaluation batches are split so that one vmapped forward sees at most this many (sample, copy) pairs: K copies of
# a 1,000-sample batch would otherwise hold K full sets of activations at once.
EVAL_PAIRS = 4096


# ---------------------------------------------------------------------------------------------------------------------
# Which jobs can share a pack (pure: configs in, answers out)


def pack_refusal(cfg: DictConfig) -> str | None:
    """Why this job cannot train in a pack, judged from its config alone (no torch); None when it can."""
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


def on_cuda(cfg: DictConfig, cuda_available: Callable[[], bool]) -> bool:
    accelerator = cfg.trainer.accelerator
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda_available())


def pack_size(cfg: DictConfig, cuda_available: Callable[[], bool]) -> int:
    """How many jobs this job may share a pack with (itself included): ``trainer.pack``, where ``auto`` is
    :data:`AUTO_PACK` for a job that trains on CUDA and 1 (no packing: slower on CPU) otherwise."""
    value = OmegaConf.select(cfg, "trainer.pack", default=1)
    if value == "auto":
        return AUTO_PACK if on_cuda(cfg, cuda_available) else 1
    return int(value)


def first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key (in sorted order) where two nested configs differ, with both values; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{prefix}{key}", a.get(key, "<absent>"), b.get(key, "<absent>")
            found = first_difference(a[key], b[key], f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else (prefix.rstrip("."), a, b)


def shared_part(config: dict) -> dict:
    """The part of a resolved job config that every job of a pack must have alike."""
    return {key: value for key, value in config.items() if key not in PACK_FREE_KEYS}


def pack_key(config: dict) -> str:
    return json.dumps(shared_part(config), sort_keys=True, default=str)


def check_same_but_policies(configs: list[dict]) -> None:
    """Refuse a pack whose jobs differ in anything but :data:`PACK_FREE_KEYS`, naming the first differing key."""
    for i, config in enumerate(configs[1:], start=1):
        found = first_difference(shared_part(configs[0]), shared_part(config))
        if found:
            key, first, other = found
            hint = ""
            if key == "dataset.seed":
                hint = ("; packed copies train on one data order: give dataset.seed one value (e.g. dataset.seed=0) "
                        "to pack jobs of different seeds")
            raise ConfigError(f"{key}: the jobs of a pack may differ only in {', '.join(PACK_FREE_KEYS)}; job 0 has "
                              f"{first!r}, job {i} has {other!r}{hint}")


def plan_packs(configs: list[DictConfig], cuda_available: Callable[[], bool]) -> list[list[int]]:
    """Group a sweep's jobs (indices, in sweep order) into packs: jobs whose configs differ only in
    :data:`PACK_FREE_KEYS`, at most ``trainer.pack`` to a pack. A job that cannot be packed is a pack of one (the
    reason is logged)."""
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
        with hydra_config_of(cfg):
            key = f"{size}:{pack_key(job_config(cfg))}"
        pack = filling.get(key)
        if pack is None or len(pack) >= size:
            pack = filling[key] = []
            packs.append(pack)
        pack.append(i)
    return packs


@contextmanager
def hydra_config_of(cfg: DictConfig):
    """Point Hydra's global runtime config at this job's own while it is read: ``group_choices`` (the tags) and
    ``${hydra:...}`` interpolations read it, and a pack holds several jobs at once. Restored on exit."""
    from hydra.core.hydra_config import HydraConfig

    instance = HydraConfig.instance()
    previous = instance.cfg
    if "hydra" in cfg:
        instance.set_config(cfg)
    try:
        yield
    finally:
        instance.cfg = previous


# ---------------------------------------------------------------------------------------------------------------------
# The vectorised model and its update


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
    def of(cls, optimizer) -> "SGDRule":
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


# ---------------------------------------------------------------------------------------------------------------------
# The training loop


@dataclass
class Copy:
    """One job of a pack while it trains: its policies, its run, and what its summary needs."""

    recorder: Any
    policy: Callable[[int], float]
    momentum: Callable[[int], float] | None
    progress: Any
    first_loss: float | None = None
    active: bool = True
    steps: int = 0
    train_s: float = 0.0
    test: dict | None = None


class Clock:
    """Training seconds: wall-clock minus the time spent evaluating."""

    def __init__(self):
        self.start, self.paused = time.perf_counter(), 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.paused

    @contextmanager
    def pause(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.paused += time.perf_counter() - began


def evaluate(nets: PackedNets, loader, copies: list[int], num_classes: int, device, dtype) -> dict[int, dict]:
    """Evaluation metrics (:class:`EvalStats`) of the chosen copies on one split."""
    from pipeline.training.metrics import EvalStats

    stats = {k: EvalStats(num_classes) for k in copies}
    for x, y in loader:
        x, y = x.to(device=device, dtype=dtype), y.to(device)
        for logits, k in zip(nets.logits(x, copies), copies):
            stats[k].update(logits, y)
    return {k: s.compute() for k, s in stats.items()}


def train_pack(nets: PackedNets, sgd: PackedSGD, copies: list[Copy], datamodule, trainer_cfg, total_steps: int,
               device, dtype, num_classes: int) -> None:
    """Train every copy for ``total_steps`` optimizer steps on the same batches, recording as the metrics callback
    does; evaluate every ``eval_every_steps`` and at the end, then test. Leaves ``steps`` and ``train_s`` per copy."""
    from pipeline.training.metrics import divergence

    loader = datamodule.train_dataloader()
    val_loader, test_loader = datamodule.val_dataloader(), datamodule.test_dataloader()
    every, factor = trainer_cfg.eval_every_steps, trainer_cfg.divergence_factor
    clock = Clock()

    def validate(step: int) -> None:
        ks = [k for k, c in enumerate(copies) if c.active and (not c.progress.evals or c.progress.evals[-1][0] != step)]
        if not ks:
            return
        seconds = clock.seconds()
        with clock.pause():
            results = evaluate(nets, val_loader, ks, num_classes, device, dtype)
            for k, values in results.items():
                copies[k].recorder.metrics({f"val/{key}": v for key, v in values.items()}, step)
                copies[k].progress.add_eval(step, seconds, values["acc"])
                copies[k].recorder.flush()

    step, epoch = 0, 0
    while step < total_steps and any(c.active for c in copies):
        loader.sampler.set_epoch(epoch)  # the data module's shuffle is a pure function of (seed, epoch)
        for x, y in loader:
            x, y = x.to(device=device, dtype=dtype), y.to(device)
            active = [c.active for c in copies]
            lrs = [float(c.policy(step)) if c.active else 0.0 for c in copies]
            momenta = [float(c.momentum(step)) if c.momentum is not None else sgd.rule.momentum for c in copies]
            for c, lr, m in zip(copies, lrs, momenta):
                if c.active:
                    c.recorder.metric("lr", lr, step)
                    c.recorder.metric("momentum", m, step)
            grads, losses = nets.grads_and_losses(x, y)
            sgd.step(nets.params, grads, lrs, momenta, active)
            for c, loss in zip(copies, losses.tolist()):
                if not c.active:
                    continue
                c.recorder.metric("train/loss", loss, step)
                c.progress.last_train_loss = loss
                c.progress.samples += len(y)
                if c.first_loss is None and math.isfinite(loss):
                    c.first_loss = loss
                reason = divergence(loss, c.first_loss, factor)
                if reason:
                    c.active, c.steps, c.train_s = False, step + 1, clock.seconds()
                    c.progress.diverged_at = step
                    c.recorder.fail("diverged", f"training loss {loss:.4g} at step {step} is {reason}")
            step += 1
            if step % every == 0:
                validate(step)
            if step >= total_steps or not any(c.active for c in copies):
                break
        epoch += 1
    for c in copies:
        if c.active:
            c.steps, c.train_s = step, clock.seconds()
    validate(step)  # end-of-budget evaluation, unless the last scheduled one was at this step
    tested = [k for k, c in enumerate(copies) if c.active]
    if tested:
        for k, values in evaluate(nets, test_loader, tested, num_classes, device, dtype).items():
            copies[k].recorder.metrics({f"test/{key}": v for key, v in values.items()}, step)
            copies[k].test = values


# ---------------------------------------------------------------------------------------------------------------------
# Entry points


def device_and_dtype(cfg: DictConfig):
    import torch

    accelerator = cfg.trainer.accelerator
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but CUDA is not available on this machine")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device({"gpu": "cuda"}.get(accelerator, accelerator))
    return device, getattr(torch, PRECISION_DTYPES[str(cfg.trainer.precision)])


def run_packed(cfgs: list[DictConfig]) -> list[JobResult]:
    """Train K jobs as one vectorised model, each recorded as its own MLflow run; one result per job, in order.

    Raises :class:`ConfigError` before any run exists when a job's config is bad or the jobs cannot share a pack
    (the message names the key); a training error ends every run of the pack FAILED and rises.
    """
    import torch

    from pipeline.training.metrics import RunProgress, summarize

    if not cfgs:
        raise ConfigError("a pack needs at least one job")
    # 1. Config stage: every job checked as run_job checks it, then the rules of a pack.
    jobs, configs = [], []
    for cfg in cfgs:
        with hydra_config_of(cfg):
            jobs.append(check(cfg))
            configs.append(job_config(cfg))
    for cfg in cfgs:
        reason = pack_refusal(cfg)
        if reason:
            raise ConfigError(reason)
    check_same_but_policies(configs)
    cfg0 = cfgs[0]
    rule = SGDRule.of(jobs[0].optimizer([torch.nn.Parameter(torch.zeros(1))]))
    device, dtype = device_and_dtype(cfg0)
    uri = store.resolve_uri(cfg0.tracking.uri)
    experiment_id = store.prepare(uri, cfg0.tracking.experiment)

    # 2. Data (loaded once, shared), each copy's network from its own seed, policies fixed to the budget.
    if cfg0.trainer.deterministic:
        torch.use_deterministic_algorithms(True)
    datamodule = jobs[0].dataset
    trainings = [build_training(cfg, dataclasses.replace(job, dataset=datamodule)) for cfg, job in zip(cfgs, jobs)]
    total_steps = trainings[0].total_steps
    nets = PackedNets([t.module.net for t in trainings], device, dtype)
    sgd = PackedSGD(rule, len(cfgs), momentum_policies=any(t.momentum is not None for t in trainings))

    # 3. The runs: one per job, all ending with a status whatever happens.
    pack_id = uuid.uuid4().hex[:12]
    with ExitStack() as stack:
        for config, cfg in zip(configs, cfgs):  # the same job cannot run twice at once, packed or not
            stack.enter_context(job_lock(job_checkpoint_dir(cfg, run_key(config)).with_suffix(".lock")))
        stack.enter_context(interrupts.signals_as_interrupt())
        client = store.client(uri)
        copies = []
        for cfg, job, training, config in zip(cfgs, jobs, trainings, configs):
            tags = {**run_tags(cfg, job, training, run_key(config)), "packed": str(len(cfgs)), "pack_id": pack_id}
            name = run_name(cfg, job)
            recorder = stack.enter_context(open_run(client, experiment_id, name, tags, cfg.tracking.flush_every))
            record_setup(recorder, config, training, f"{job.choices['policy']}: {name}")
            progress = RunProgress(targets=tuple(sorted(cfg.trainer.targets)))
            copies.append(Copy(recorder, training.policy, training.momentum, progress))
        print(f"pack {pack_id}: {len(copies)} jobs as one vectorised model on {device} ({dtype})", flush=True)
        train_pack(nets, sgd, copies, datamodule, cfg0.trainer, total_steps, device, dtype, datamodule.num_classes)
        for c in copies:
            c.recorder.metrics(summarize(c.progress, c.steps, c.train_s, c.test), c.steps)
    return [JobResult(c.recorder.run_id, "FAILED" if c.recorder.failure else "FINISHED", c.recorder.failure)
            for c in copies]


def train_sweep_pack(cfgs: list[DictConfig]) -> list:
    """The pool launcher's entry for one pack of sweep jobs: per job, its :class:`JobResult`, the training error
    (its run is already recorded FAILED), or None: train this job on its own (it failed its own checks, which the
    normal path records, or the jobs could not share a pack)."""
    ok = []
    for i, cfg in enumerate(cfgs):
        try:
            with hydra_config_of(cfg):
                check(cfg)
            ok.append(i)
        except ConfigError:
            pass
    outcomes: list = [None] * len(cfgs)
    if len(ok) < 2:
        return outcomes
    try:
        results = run_packed([cfgs[i] for i in ok])
    except ConfigError as exc:
        print(f"warning: these {len(ok)} jobs train one at a time: {exc}", file=sys.stderr, flush=True)
        return outcomes
    except Exception as exc:  # noqa: BLE001 - every run of the pack is recorded FAILED with it
        traceback.print_exc()
        results = [exc] * len(ok)
    for i, result in zip(ok, results):
        outcomes[i] = result
    return outcomes


def replay(outcome):
    """The Hydra task function of a job whose pack has trained: it says and returns what the pack recorded for it,
    as the CLI's task does for a job that trained alone."""

    def task(cfg: DictConfig):
        if isinstance(outcome, BaseException):
            print(f"error: {type(outcome).__name__}: {outcome}", file=sys.stderr)
            return None
        print(f"run {outcome.run_id} {outcome.status} (packed)")
        return outcome

    return task
