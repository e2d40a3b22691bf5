"""The checked job: what :func:`pipeline.config.checks.check` returns and everything downstream reads.

After ``check()`` nothing reads the raw Hydra config: the training stage, the sweep and the packing code take a
:class:`Job`. Its parts are typed values (settings) or factories that still need the data's shapes or the run's
recorder (model, data set, opt-in callbacks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Lightning's Trainer is built from this node (``hydra.utils.instantiate``), the lightning-hydra-template way.
LIGHTNING_TRAINER = "lightning.pytorch.Trainer"


@dataclass(frozen=True)
class RunSettings:
    """The project's own run settings (they sit in the ``trainer`` group for the command line, but Lightning's
    Trainer never sees them)."""

    targets: tuple[float, ...]     # objective values (classification: accuracies) whose first reach the summary records
    eval_every_steps: int          # optimizer steps between evaluations
    divergence_factor: float       # train loss above this x the first loss (or non-finite) = diverged
    checkpoint_every_steps: int    # 0 = no checkpoints (a killed run then starts over)
    checkpoint_dir: Path           # absolute; one folder per job key
    memory_format: str             # auto | channels_last | contiguous
    num_threads: int               # torch intra-op threads; 0 = torch's default
    pack: int | str                # jobs per pack (1 = off) or auto
    progress: bool                 # per-run progress bar


@dataclass(frozen=True)
class TrainerSettings:
    """Lightning's own Trainer arguments: ``node`` is instantiated as Lightning's Trainer (with the pipeline's
    callbacks); the fields below are the ones the pipeline itself needs to know."""

    node: dict                     # {"_target_": LIGHTNING_TRAINER, max_steps, max_epochs, accelerator, ...}
    max_steps: int                 # -1: budget in epochs
    max_epochs: int                # -1: budget in steps
    accumulate_grad_batches: int
    accelerator: str
    devices: int | str
    num_nodes: int
    strategy: str
    precision: str

    @property
    def devices_per_node(self) -> int:
        """Processes per machine (``auto`` counts as 1 until Lightning resolves it)."""
        return self.devices if isinstance(self.devices, int) else 1

    @property
    def world_size(self) -> int:
        return self.devices_per_node * self.num_nodes


@dataclass(frozen=True)
class TrackingSettings:
    uri: str                       # resolved, absolute for SQLite
    experiment: str
    flush_every: int               # buffered metric values per batched write


@dataclass(frozen=True)
class RangeTestSettings:
    """The LR range test's settings (``range_test`` node): Lightning's exponential sweep and the rule's two factors
    (:mod:`pipeline.range_test.rule`)."""

    min_lr: float                  # learning rate of the sweep's first optimizer step
    max_lr: float                  # learning rate the sweep reaches at its last step
    steps: int                     # optimizer steps per seed (Lightning's num_training)
    seeds: int                     # seeds 0 .. seeds-1: model init and data order; their curves are averaged
    early_stop: float              # a seed stops once its smoothed loss exceeds this x its best (Lightning's threshold)
    k1_div: float                  # k1 = LR of the lowest averaged smoothed loss / k1_div
    k0_div: float                  # k0 = k1 / k0_div

    def key_fields(self) -> dict:
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "steps": self.steps, "seeds": self.seeds,
                "early_stop": self.early_stop, "k1_div": self.k1_div, "k0_div": self.k0_div}


@dataclass(frozen=True)
class KOrigin:
    """Where a job's k values came from when ``policy.k_from=range_test``: the range-test run and its result."""

    run_id: str
    k0: float
    k1: float
    policy_node: dict              # the job's policy node with the range test's values in its k fields (recorded)


@dataclass(frozen=True)
class Job:
    """A checked job: settings as typed values, built parts, factories for what needs data or a recorder."""

    config: dict                   # the resolved job config (without Hydra's node): params, config artifact, run key
    # Per config group, the name the run is tagged with: Hydra's choice, or what actually ran when the option's target
    # was overridden (model, dataset, task: the class name, or the node's `name`); policy: "fix" without one.
    choices: dict[str, str]
    seed: int
    run_name: str | None           # null: <policy>-<model>-<dataset>-s<seed>
    study: str | None
    policy: Any                    # pipeline.policies.build.PolicyChain: fixed to the budget once it is known
    optimizer: Callable            # partial: params -> torch optimizer
    model: Callable                # partial: the data's shapes it takes -> nn.Module (pipeline.training.shapes)
    dataset: Any                   # a LightningDataModule, not yet set up
    trainer: TrainerSettings
    run: RunSettings
    tracking: TrackingSettings
    # Momentum policy t -> momentum (momentum=demon), None for the optimizer's constant momentum (momentum=none).
    # A Demon is unbound here: its T is the run's number of optimizer steps, bound by the job.
    momentum: Any = None
    # Opt-in Lightning callbacks (e.g. +analysis=lca), each a factory called with the run's recorder.
    callbacks: tuple = ()
    # Opt-in data policy (+sampler=autoassist): a factory called with the loaded data module and the run's recorder;
    # it returns a Lightning callback whose ``datamodule`` the job trains with.
    sampler: Any = None
    # A pruned study's rung (+search=rung, set by hydra/sweeper=halving): pipeline.search.rung.RungSettings; None
    # for a job that trains its whole budget.
    search: Any = None
    # The task (pipeline.tasks: loss, evaluation metrics, output check) and the objective a run is judged on.
    task: Any = None
    objective: Any = None
    # The user's own config folders the job was composed with (--config-dir, hydra.searchpath), absolute: a command
    # that re-creates the job (the report's "Run it") names them again.
    config_dirs: tuple[str, ...] = ()
    # Hydra's option of each group whose run name is not an option (a class name, a given name): model, dataset,
    # task; the report's "Run it" command starts from the option and sets the class that ran.
    options: dict = field(default_factory=dict)
    # Where the policy's k values come from: "config" (the policy node's own) or "range_test" (pipeline.range_test,
    # applied by pipeline.range_test.apply before the data are loaded for training); k_origin is then set.
    k_from: str = "config"
    range_test: RangeTestSettings | None = None
    k_origin: KOrigin | None = None

    @property
    def recorded_config(self) -> dict:
        """The config a run records as params: ``config``, with the policy's k values that actually ran when they
        came from a range test (the run key stays that of ``config``: the same command resumes the same run)."""
        if self.k_origin is None:
            return self.config
        return {**self.config, "policy": self.k_origin.policy_node}

    @property
    def policy_name(self) -> str:
        return self.choices["policy"]
