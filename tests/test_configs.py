"""Every option of every config group composes, passes the checks and builds; bad values are named."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import CONF, TINY, compose_job
from pipeline.config.checks import ConfigError, check

# Every config group is a folder of conf/ (Hydra's own settings under conf/hydra are not job groups).
GROUPS = sorted(d.name for d in CONF.iterdir() if d.is_dir() and d.name != "hydra")
# Groups outside the defaults list of conf/config.yaml are appended with +group=.
DEFAULTS = {next(iter(entry)) for entry in OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml").defaults)
            if isinstance(entry, dict)}
APPENDED = set(GROUPS) - DEFAULTS


def test_groups_are_found_in_conf():
    assert {"model", "dataset", "optimizer", "policy", "trainer", "tracking"} <= set(GROUPS)
    assert "policy" in APPENDED and "model" not in APPENDED


def _options():
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            yield group, path.stem


@pytest.mark.parametrize("group, option", list(_options()), ids=lambda v: str(v))
def test_every_option_of_every_group_composes_and_builds(group, option):
    prefix = "+" if group in APPENDED else ""
    cfg = compose_job(f"{prefix}{group}={option}", *([] if group == "dataset" else ["dataset=synthetic"]))
    job = check(cfg)
    assert max(job.policy.for_budget(2000)(t) for t in range(0, 2000, 100)) > 0  # a warm-up may start at 0
    net = job.model(in_channels=job.dataset.in_channels, num_classes=job.dataset.num_classes,
                    image_size=job.dataset.image_size)
    assert sum(p.numel() for p in net.parameters()) > 0
    if group in ("model", "dataset", "optimizer", "policy"):
        assert job.choices[group] == option


def test_without_a_policy_the_optimizer_lr_is_recorded_as_fix():
    job = check(compose_job(*TINY, "optimizer.lr=0.03"))
    assert job.policy_name == "fix" and job.policy.base(0) == job.policy.base(999) == 0.03


@pytest.mark.parametrize(
    "override, key",
    [
        ("+policy=triangle2 policy.l=0", "policy.l"),
        ("+policy=triangle2 policy.k1=0.001", "policy.k1"),
        ("+policy=nstep policy.l=[7500,5000]", "policy.l"),
        ("+policy=exp policy.gamma=1.5", "policy.gamma"),
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("trainer.eval_every_steps=-3", "trainer.eval_every_steps"),
        ("trainer.targets=[0.5,1.5]", "trainer.targets[1]"),
        ("trainer.accelerator=tpu9", "trainer.accelerator"),
        ("trainer.memory_format=nhwc", "trainer.memory_format"),
        ("seed=-1", "seed"),
        ("optimizer.lr=-0.1", "optimizer"),
        ("schedule.k_scale=0", "schedule.k_scale"),
        ("tracking.experiment=''", "tracking.experiment"),
        ("+warmup=linear warmup.warmup_steps=0", "warmup.warmup_steps"),
        ("dataset.batch_size=0", "dataset"),
    ],
)
def test_bad_value_is_rejected_with_a_message_naming_the_key(override, key):
    cfg = compose_job("dataset=synthetic", *override.split())
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert str(err.value).startswith(key) or f"{key}" in str(err.value).split(":")[0]
