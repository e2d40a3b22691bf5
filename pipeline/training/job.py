"""One run, top to bottom: check the config, load the data, open the MLflow run, fit, test, summarise.

Everything that can be wrong with the input (config values, a missing or corrupt data set, an unusable tracking
store) fails before the MLflow run is created, so a bad command leaves no trace in the store.
"""

from __future__ import annotations

import shutil
import sys
from contextlib import nullcontext
from dataclasses import dataclass

from omegaconf import DictConfig

from pipeline.config.checks import check
from pipeline.policies.fit import policy_fit
from pipeline.range_test.run import apply as apply_range_test
from pipeline.search import rung
from pipeline.tracking import interrupts, resume, store, sweeps
from pipeline.tracking.recorder import open_run
from pipeline.training.artifacts import record_curves, record_setup, record_summary
from pipeline.training.assemble import build_training
from pipeline.training.checkpoints import checkpoint_folder, job_lock, last_checkpoint, set_aside, unreadable
from pipeline.training.distributed import NullRecorder, process_group_scope, process_rank, relaunch_only_this_job
from pipeline.training.identity import run_key, run_name, run_tags
from pipeline.training.trainer import build_trainer, quiet_frameworks


@dataclass(frozen=True)
class JobResult:
    run_id: str
    status: str  # FINISHED | FAILED
    failure: str | None = None
    score: float | None = None     # a pruned study's job: its rung score, or its final val accuracy
    paused_at: int | None = None   # a pruned study's rung: trained to this step, its run left open to go on


def run_job(cfg: DictConfig) -> JobResult:
    """Train and record one job; raises ConfigError (before any run exists) or the training error (run FAILED)."""
    quiet_frameworks()
    from pipeline.training.callbacks import MetricsCallback
    from pipeline.training.metrics import summarize

    # 1. Config stage: every check that needs no data, then the store (rank 0 only: see distributed.py).
    job = check(cfg)
    rank = process_rank(job.trainer.devices_per_node)
    experiment_id = store.prepare(job.tracking.uri, job.tracking.experiment) if rank == 0 else ""
    # policy.k_from=range_test: the policy's k values from the job's range test (run once by rank 0, reused after).
    job = apply_range_test(job, rank)

    # 2. Data, model, and the policy fixed to this run's budget.
    training = build_training(job)
    datamodule = training.datamodule

    # 3. The run: from here on everything is recorded, and the run ends with a status whatever happens. A job
    #    killed mid-run resumes when the same command runs again: same config, same key, same MLflow run.
    key = run_key(job.config)
    name = run_name(job.choices, job.seed, job.run_name)
    checkpoint_dir = checkpoint_folder(job.run.checkpoint_dir, key)
    checkpoint = last_checkpoint(checkpoint_dir)
    stop = job.search.stop_step(training.total_steps) if job.search else None  # a pruned study's rung, before the end
    job = rung.stopping_at(job, stop, checkpoint)  # Lightning stops and checkpoints there; the policy keeps the budget
    if job.trainer.strategy.startswith("ddp"):
        relaunch_only_this_job()
    with process_group_scope():
        lock = job_lock(checkpoint_dir.with_suffix(".lock")) if rank == 0 else nullcontext()
        with lock, interrupts.signals_as_interrupt():
            if rank == 0:
                # An unfinished run of this job (killed, even before its first checkpoint; interrupted; crashed)
                # is continued, never left RUNNING beside a new one.
                resume_id = resume.find_resumable_run(job.tracking.uri, experiment_id, key)
                if resume_id is None:
                    checkpoint.unlink(missing_ok=True)  # left by a run that has since finished or been deleted
                elif checkpoint.exists() and (why := unreadable(checkpoint)):
                    kept = set_aside(checkpoint)
                    print(f"warning: checkpoint {checkpoint} cannot be resumed from ({why}); set aside as {kept.name}; "
                          f"run {resume_id} restarts from step 0", file=sys.stderr, flush=True)
                fit = policy_fit(training.policy, training.total_steps)
                if fit.reason:
                    print(f"warning: {fit.reason}", file=sys.stderr, flush=True)
                tags = run_tags(job, training.policy, training.momentum, key, fit.verdict)
                run = open_run(job.tracking.uri, experiment_id, name, tags, job.tracking.flush_every, resume_id,
                               parent_run_id=sweeps.current_parent())
            else:  # rank 0 decided, before it started this process, whether the job resumes
                resume_id, run = None, nullcontext(NullRecorder())
            resuming = checkpoint.exists()
            with run as recorder:
                if resume_id:
                    print(f"resuming run {resume_id} " + (f"from {checkpoint}" if resuming else "from step 0 (no "
                          "checkpoint): steps already recorded are not written again"), flush=True)
                    recorder.resume_from_store(["lr", "momentum", "train/loss",
                                                *(f"val/{k}" for k in job.task.eval_keys)])
                if rank == 0 and not resuming:
                    record_setup(recorder, job.recorded_config, training.policy, training.total_steps,
                                 f"{job.policy_name}: {name}")

                metrics = MetricsCallback(recorder, job.objective, job.run.divergence_factor)
                callbacks = [metrics, *(extra(recorder=recorder) for extra in job.callbacks)]
                if job.sampler is not None:  # +sampler=autoassist: train on the batches it emits (val/test unchanged)
                    sampler = job.sampler(datamodule=datamodule, recorder=recorder)
                    callbacks.append(sampler)
                    datamodule = sampler.datamodule
                trainer = build_trainer(job, callbacks, checkpoint_dir)
                trainer.fit(training.module, datamodule=datamodule, ckpt_path=str(checkpoint) if resuming else None)
                paused = stop is not None and metrics.progress.diverged_at is None
                score = rung.end_rung(job.search, trainer, training, recorder) if paused else None
                test = None
                if metrics.progress.diverged_at is None and not paused:
                    evals = metrics.progress.evals
                    if not evals or evals[-1][0] != trainer.global_step:  # unless the last scheduled one was at the end
                        trainer.validate(training.module, datamodule=datamodule, verbose=False)  # end-of-budget eval
                    trainer.test(training.module, datamodule=datamodule, verbose=False)
                    test = training.module.last_eval
                    if job.search is not None:  # a study's last rung: the candidate's score is its final value
                        score = metrics.progress.evals[-1][2]
                if not paused:
                    summary = summarize(metrics.progress, trainer.global_step, metrics.train_seconds, test)
                    for callback in callbacks[1:]:  # an opt-in method's own figures (summary/lca_*, autoassist_*)
                        summary.update(getattr(callback, "summary", dict)())
                    record_summary(recorder, summary, trainer.global_step)
                    record_curves(recorder, training.policy, trainer.global_step, metrics.progress.evals,
                                  f"{job.policy_name}: {name}",
                                  f"val/{job.objective.metric}" if job.objective is not None else "val/acc")
            if not paused:  # the run is over (finished, or failed for good): its checkpoint is no longer needed
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return JobResult(recorder.run_id, "FAILED" if recorder.failure else "FINISHED", recorder.failure, score,
                     stop if paused else None)
