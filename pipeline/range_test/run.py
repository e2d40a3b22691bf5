"""One range test per (model, data, task, optimizer, batch size, settings): found in the store if a job already ran
it, else run and recorded under a file lock (parallel jobs of a sweep wait for the one that runs it); and
``policy.k_from=range_test``, which puts its k0/k1 into a job's policy.

Under DDP the launching process (rank 0) obtains the result before Lightning starts the other ranks; those (and every
rank under torchrun or SLURM, where all start at once) only read it from the store, waiting for rank 0 if need be.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from pipeline.config.base import ConfigError
from pipeline.config.schema import Job, KOrigin
from pipeline.range_test.rule import Curve, RangeResult, RangeTestError, k_from_curves
from pipeline.tracking import range_tests

# The groups whose resolved nodes make a range test's identity, with the trainer settings that change its loss.
KEY_GROUPS = ("model", "dataset", "task", "optimizer")
KEY_TRAINER = ("accumulate_grad_batches", "precision")
# dataset.seed is the job's training order; the range test draws its own order per seed, so it is not in the key.
PER_JOB_DATA_KEYS = ("seed",)
# Seconds a rank > 0 waits for rank 0's range test to appear in the store, and between two looks.
RANK_WAIT_S = 3600.0
POLL_S = 2.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    run_id: str
    k0: float
    k1: float
    reused: bool                         # read from the store, not run now
    result: RangeResult | None = None    # the full result, when run now
    curves: tuple[Curve, ...] = ()
    params: dict = dataclasses.field(default_factory=dict)  # the stored run's params, when reused


def test_key(job: Job) -> str:
    """The range test's identity: the job's model, data (batch size included), task and optimizer nodes, the trainer
    settings that change its loss (and the number of ranks, whose batches make one step), and the test's own
    settings; the job's seed and policy are not in it."""
    config = job.config
    payload = {group: config.get(group) for group in KEY_GROUPS}
    if isinstance(payload["dataset"], dict):
        payload["dataset"] = {k: v for k, v in payload["dataset"].items() if k not in PER_JOB_DATA_KEYS}
    payload["trainer"] = {**{k: job.trainer.node.get(k) for k in KEY_TRAINER}, "world_size": job.trainer.world_size}
    payload["range_test"] = job.range_test.key_fields()
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextmanager
def _waiting_lock(path: Path, say: Callable[[str], None]):
    """An exclusive lock on ``path``, waited for: a job that finds another running the same test waits for it. The
    kernel drops the lock of a process that dies, so a killed test never blocks the next."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for the range test another job is running (lock {path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_for_rank0(job: Job, key: str) -> Outcome:
    deadline = time.monotonic() + RANK_WAIT_S
    while True:
        found = range_tests.find_finished(job.tracking.uri, job.tracking.experiment, key)
        if found is not None:
            return Outcome(found.run_id, found.k0, found.k1, reused=True, params=found.params)
        if time.monotonic() > deadline:
            raise ConfigError(f"policy.k_from=range_test: rank 0's range test {key} did not appear in the store "
                              f"within {RANK_WAIT_S:.0f} s")
        time.sleep(POLL_S)


def obtain(job: Job, rank: int = 0, say: Callable[[str], None] = print) -> Outcome:
    """The job's range test: a FINISHED one with the same key from the store, else (rank 0) run and recorded now."""
    key = test_key(job)
    found = range_tests.find_finished(job.tracking.uri, job.tracking.experiment, key)
    if found is None and rank != 0:
        return _wait_for_rank0(job, key)
    if found is None:
        with _waiting_lock(job.run.checkpoint_dir / f"range_test-{key}.lock", say):
            found = range_tests.find_finished(job.tracking.uri, job.tracking.experiment, key)
            if found is None:
                for run_id in range_tests.end_abandoned(job.tracking.uri, job.tracking.experiment, key):
                    say(f"range test run {run_id} was left RUNNING by a process that died: ended KILLED")
                return run_and_record(job, key, say)
    return Outcome(found.run_id, found.k0, found.k1, reused=True, params=found.params)


def _curves_csv(curves, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "step", "lr", "smoothed_loss", "loss"])
        for c in curves:
            raw = c.raw or (float("nan"),) * len(c.loss)
            writer.writerows((c.seed, i, lr, loss, r) for i, (lr, loss, r) in enumerate(zip(c.lr, c.loss, raw)))


def _record_curves(recorder, curves, result: RangeResult) -> None:
    """Per step of the sweep: its LR, each seed's smoothed loss and their mean (finite values only: the blow-up's
    infinities stay in curves.csv)."""
    import math

    for i, lr in enumerate(result.lr):
        recorder.metric("range_test/lr", lr, i)
        if math.isfinite(result.mean_loss[i]):
            recorder.metric("range_test/mean_loss", result.mean_loss[i], i)
    for c in curves:
        for i, loss in enumerate(c.loss):
            if math.isfinite(loss):
                recorder.metric(f"range_test/loss_seed{c.seed}", loss, i)


def run_and_record(job: Job, key: str, say: Callable[[str], None] = print) -> Outcome:
    """Run the range test on the job's model, data, task and optimizer and record it as a ``kind=range_test`` run:
    settings and result as params, curves as metrics, ``range_test.png`` and ``curves.csv`` as artifacts."""
    from pipeline.range_test.finder import sweep
    from pipeline.range_test.plot import range_test_png
    from pipeline.tracking.recorder import flatten
    from pipeline.training.assemble import load_data
    from pipeline.training.identity import git_commit

    settings = job.range_test
    datamodule = load_data(job)  # a missing or corrupt data set fails here, before the run exists
    choices = {g: job.choices[g] for g in (*KEY_GROUPS, "study") if job.choices.get(g)}
    name = f"range_test-{choices.get('model')}-{choices.get('dataset')}-{choices.get('optimizer')}"
    tags = {**choices, "git_commit": git_commit()}
    if job.study:
        tags["study"] = job.study
    say(f"range test {key}: {settings.seeds} seed(s) x {settings.steps} steps, LR {settings.min_lr:g} to "
        f"{settings.max_lr:g} (Lightning's Tuner.lr_find)")
    with range_tests.open_range_test(job.tracking.uri, job.tracking.experiment, name, key, tags,
                                     job.tracking.flush_every) as recorder:
        recorder.params({**flatten({"range_test": settings.key_fields()}),
                         **flatten({g: job.config[g] for g in KEY_GROUPS if g in job.config})})
        curves = sweep(job, datamodule, settings, say)
        try:
            result = k_from_curves(curves, settings.k1_div, settings.k0_div, settings.steps, settings.min_lr,
                                   settings.max_lr)
        except RangeTestError as exc:
            recorder.fail("range_test", str(exc))
            raise ConfigError(str(exc)) from None
        _record_curves(recorder, curves, result)
        recorder.params({"result.k0": repr(result.k0), "result.k1": repr(result.k1),
                         "result.lr_at_min": repr(result.lr_at_min), "result.min_loss": repr(result.min_loss),
                         "result.k1_per_seed": json.dumps([round(v, 8) for v in result.k1_per_seed]),
                         "result.steepest_lr_per_seed": json.dumps(result.steepest_per_seed)})
        if result.warning:
            recorder.tags({"range_test_warning": result.warning})
            print(f"warning: range test: {result.warning}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            title = f"LR range test: {choices.get('model')} / {choices.get('dataset')} / {choices.get('optimizer')}"
            range_test_png(curves, result, Path(tmp) / "range_test.png", title)
            _curves_csv(curves, Path(tmp) / "curves.csv")
            recorder.artifact(str(Path(tmp) / "range_test.png"))
            recorder.artifact(str(Path(tmp) / "curves.csv"))
        run_id = recorder.run_id
    return Outcome(run_id, result.k0, result.k1, reused=False, result=result, curves=tuple(curves))


def apply(job: Job, rank: int = 0, say: Callable[[str], None] = print) -> Job:
    """``policy.k_from=range_test``: the job with its policy's k values from its range test (run once, reused after)
    and ``k_origin`` saying which run they came from; any other job as it is."""
    if job.k_from != "range_test":
        return job
    from pipeline.policies.k_values import with_k
    from pipeline.policies.spec import to_spec

    outcome = obtain(job, rank, say)
    base = with_k(job.policy.base, outcome.k0, outcome.k1)
    node = {k: v for k, v in (job.config.get("policy") or {}).items() if k != "k_from"}
    recorded = with_k(node, outcome.k0, outcome.k1) if "_target_" in node else to_spec(base)
    say(f"k values from range test {outcome.run_id} ({'reused' if outcome.reused else 'run now'}): "
        f"k0={outcome.k0:.4g} k1={outcome.k1:.4g}")
    return dataclasses.replace(job, policy=dataclasses.replace(job.policy, base=base),
                               k_origin=KOrigin(outcome.run_id, outcome.k0, outcome.k1,
                                                {**recorded, "k_from": "range_test"}))
