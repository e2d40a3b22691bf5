"""Every option of every config group composes, passes the checks and builds; bad values are named."""


import pytest
from conftest import CONF, TINY, compose_job
from omegaconf import OmegaConf

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


# Options that need a task other than classification (or data of their own) compose with it.
CONTEXT = {("model", "char_gru"): ["task=language_model"], ("dataset", "fortunes"): ["task=language_model"],
           ("dataset", "diabetes"): ["task=regression"],
           ("dataset", "custom"): ["dataset._target_=own.Blobs", "model=feedforward"]}


def _context(group: str, option: str) -> list[str]:
    if (group, option) in CONTEXT:
        return CONTEXT[group, option]
    text = (CONF / group / f"{option}.yaml").read_text()
    own_data = group in ("dataset", "task") or "override /task" in text or "override /dataset" in text
    return [] if own_data else ["dataset=synthetic"]


@pytest.mark.parametrize("group, option", list(_options()), ids=lambda v: str(v))
def test_every_option_of_every_group_composes_and_builds(group, option):
    from pipeline.training.shapes import build_model

    prefix = "+" if group in APPENDED else ""
    cfg = compose_job(f"{prefix}{group}={option}", *_context(group, option))
    job = check(cfg)
    assert max(job.policy.for_budget(2000)(t) for t in range(0, 2000, 100)) > 0  # a warm-up may start at 0
    net = build_model(job.model, job.dataset)
    assert sum(p.numel() for p in net.parameters()) > 0
    if group in ("model", "dataset", "optimizer", "policy", "task") and (group, option) != ("dataset", "custom"):
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
        ("optimizer.lr=nan", "optimizer.lr"),
        ("seed=4294967296", "seed"),
        ("run_name=[1,2]", "run_name"),
        ("trainer.checkpoint_dir=/proc/x", "trainer.checkpoint_dir"),
    ],
)
def test_bad_value_is_rejected_with_a_message_naming_the_key(override, key):
    cfg = compose_job("dataset=synthetic", *override.split())
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert str(err.value).startswith(key) or f"{key}" in str(err.value).split(":")[0]


@pytest.mark.parametrize(
    "override, message",
    [
        ("+polcy=triangle2", "polcy is not a setting or config group; did you mean policy?"),
        ("+trainer.max_stepz=10", "trainer.max_stepz is neither a run setting nor an argument of Lightning's Trainer; "
                                  "did you mean trainer.max_steps?"),
        ("+schedule.k_scal=2", "schedule.k_scal is not a setting; did you mean k_scale?"),
        ("+tracking.experimnt=x", "tracking.experimnt is not a setting; did you mean experiment?"),
        ("+trainer.logger=true", "trainer.logger is set by the pipeline"),
    ],
)
def test_unknown_keys_after_plus_are_refused_naming_the_nearest_valid_key(override, message):
    with pytest.raises(ConfigError) as err:
        check(compose_job("dataset=synthetic", override))
    assert str(err.value).startswith(message)


def test_any_lightning_trainer_argument_can_be_added_and_reaches_the_trainer():
    job = check(compose_job("dataset=synthetic", "+trainer.gradient_clip_val=0.5"))
    assert job.trainer.node["gradient_clip_val"] == 0.5
    assert job.trainer.node["_target_"] == "lightning.pytorch.Trainer"
    assert "targets" not in job.trainer.node and job.run.targets == (0.8, 0.85, 0.88)


def test_a_group_from_the_users_own_config_folder_is_not_an_unknown_key(tmp_path):
    from hydra import compose, initialize_config_dir

    (tmp_path / "mygroup").mkdir()
    (tmp_path / "mygroup" / "mine.yaml").write_text("width: 3\n")  # packaged as mygroup.width
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["dataset=synthetic", f"hydra.searchpath=[file://{tmp_path}]",
                                                      "+mygroup=mine"], return_hydra_config=True)
    assert cfg.mygroup.width == 3
    assert check(cfg).config["mygroup"] == {"width": 3}
