"""Tasks own the loss, the metrics and the objective; the training stage works on the objective, never on val/acc by
name; a model, data and task that do not fit are one-line config errors, before any run exists."""

import math

import pytest
import torch
from conftest import TINY, compose_job

from pipeline.config.checks import ConfigError, check
from pipeline.tasks import Classification, LanguageModel, Objective, Regression
from pipeline.tasks.regression import RegressionStats
from pipeline.training.metrics import RunProgress, summarize

# -- the tasks' metrics ------------------------------------------------------------------------------------------


def test_regression_stats_match_rmse_mae_and_r2_on_a_hand_checked_batch():
    y = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    pred = torch.tensor([[1.5], [2.0], [2.0], [4.0]])
    stats = RegressionStats()
    stats.update(pred, y)
    out = stats.compute()
    sse = 0.25 + 0 + 1 + 0
    assert out["loss"] == pytest.approx(sse / 4) and out["rmse"] == pytest.approx(math.sqrt(sse / 4))
    assert out["mae"] == pytest.approx(1.5 / 4)
    assert out["r2"] == pytest.approx(1 - sse / 5.0)  # SST of 1..4 around 2.5 is 5


def test_regression_stats_accumulate_over_batches_like_one_batch_and_take_one_column_against_flat_targets():
    torch.manual_seed(0)
    pred, y = torch.randn(30, 1), torch.randn(30)
    whole, parts = RegressionStats(), RegressionStats()
    whole.update(pred, y)
    for i in range(0, 30, 7):
        parts.update(pred[i : i + 7], y[i : i + 7])
    assert parts.compute() == pytest.approx(whole.compute())


def test_language_model_perplexity_is_exp_of_the_mean_token_loss_and_padding_is_not_scored():
    task = LanguageModel(ignore_index=-1)
    logits = torch.randn(2, 5, 7)
    y = torch.randint(0, 7, (2, 5))
    padded = y.clone()
    padded[1, 3:] = -1
    stats = task.stats(7)
    stats.update(logits, padded)
    out = stats.compute()
    kept = padded != -1
    expected = torch.nn.functional.cross_entropy(logits[kept], y[kept]).item()
    assert out["loss"] == pytest.approx(expected, rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    losses = task.loss(logits, padded)
    assert losses.shape == (2,) and losses[0].item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[0], y[0]).item(), rel=1e-5)


def test_classification_loss_is_per_sample_cross_entropy():
    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    assert torch.equal(Classification().loss(logits, y), torch.nn.functional.cross_entropy(logits, y, reduction="none"))


@pytest.mark.parametrize(
    "task, output, target, key",
    [
        (Classification(), torch.randn(2, 10), torch.rand(2), "dataset:"),        # float targets
        (Classification(), torch.randn(2, 3), torch.tensor([0, 1]), "model:"),    # 3 logits, 10 classes
        (Regression(), torch.randn(2, 10), torch.randn(2, 1), "model:"),          # 10 values, 1 target
        (Regression(), torch.randn(2, 1), torch.tensor([3, 4]), "dataset:"),      # class labels
        (LanguageModel(), torch.randn(2, 10), torch.randint(0, 10, (2, 5)), "model:"),
        (LanguageModel(), torch.randn(2, 5, 10), torch.rand(2, 5), "dataset:"),
    ],
)
def test_a_model_output_or_targets_of_the_wrong_kind_are_named_by_key(task, output, target, key):
    with pytest.raises(ValueError) as err:
        task.check_batch(output, target, 10)
    assert str(err.value).startswith(key)


# -- the objective drives progress and summary -------------------------------------------------------------------


def test_a_min_objective_reaches_a_target_when_the_value_falls_to_it_and_keeps_the_lowest_as_best():
    progress = RunProgress.for_objective(Objective("rmse", "min", (0.8, 0.6)))
    for step, value in [(10, 0.9), (20, 0.7), (30, 0.55), (40, 0.65)]:
        progress.add_eval(step, step / 10, value)
    out = summarize(progress, steps=40, train_s=4.0, test={"loss": 0.4, "rmse": 0.63})
    assert out["summary/steps_to_rmse_0.8"] == 20 and out["summary/steps_to_rmse_0.6"] == 30
    assert out["summary/reached_rmse_0.6"] == 1.0 and out["summary/seconds_to_rmse_0.8"] == 2.0
    assert out["summary/best_val_rmse"] == 0.55 and out["summary/best_val_rmse_step"] == 30
    assert out["summary/final_val_rmse"] == 0.65 and "summary/val_rmse_last_std" in out
    assert not any("acc" in key for key in out)


def test_a_checkpoint_from_before_tasks_resumes_with_its_best_accuracy():
    from pipeline.training.callbacks import MetricsCallback

    class Recorder:
        def requeue(self, values):
            pass

    callback = MetricsCallback(Recorder(), Objective("acc", "max", (0.5,)))
    old = {"targets": [0.5], "evals": [[10, 1.0, 0.6]], "reached": {0.5: [10, 1.0]}, "best_acc": 0.6,
           "best_step": 10, "last_train_loss": 0.3, "diverged_at": None, "samples": 64, "reached_samples": {0.5: 64}}
    callback.load_state_dict({"progress": old, "first_loss": 2.0, "train_seconds": 1.0})
    assert callback.progress.best_value == 0.6 and callback.progress.metric == "acc"


# -- config stage: bad input is one line naming the key ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["task.objective.metric=f1"], "task.objective.metric"),                 # never logged by classification
        (["task.objective.metric=loss"], "task.objective.mode"),                 # loss is better when lower
        (["task=regression", "trainer.targets=[0.8,-1]"], "trainer.targets[1]"),  # an RMSE is > 0
        (["task=language_model", "trainer.targets=[0.5]"], "trainer.targets[0]"),  # a perplexity is >= 1
        (["trainer.targets=[0.5,1.5]"], "trainer.targets[1]"),                   # an accuracy is <= 1
        (["task=regression", "dataset=synthetic"], "dataset:"),                 # class labels are not regressed
        (["task=regression", "model=lenet5"], "model:"),                        # a conv net on 10 features
        (["model=feedforward", "+model.output_size=3"], "model:"),               # 3 logits for 10 classes
        (["task=language_model", "model=feedforward"], "model:"),                # no logit per position
        (["model._target_=own.Embedder"], "model:"),                            # no vocab_size for images
        (["task=language_model", "model._target_=own.Embedder"], "model.embed_dim"),  # char_gru's setting stays
        (["dataset=custom"], "dataset._target_"),                               # your data, not named
        (["dataset=custom", "dataset._target_=own.Blobs", "+dataset.colour=red"], "dataset.colour"),
        (["task=regression", "+sampler=autoassist"], "sampler"),
    ],
)
def test_what_does_not_fit_the_task_is_refused_at_config_stage_naming_the_key(overrides, key):
    context = [] if any(o.startswith(("task=", "dataset=")) for o in overrides) else ["dataset=synthetic"]
    with pytest.raises(ConfigError) as err:
        check(compose_job(*context, *overrides))
    assert str(err.value).startswith(key), str(err.value)
    assert "\n" not in str(err.value)


def test_classification_records_no_task_node_but_other_tasks_record_theirs():
    assert "task" not in check(compose_job(*TINY)).config
    job = check(compose_job("task=regression"))
    assert job.config["task"]["objective"] == {"metric": "rmse", "mode": "min"}
    assert job.objective == Objective("rmse", "min", (0.85, 0.8, 0.75))


# -- identity: what ran, not the group's default option ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, model, dataset",
    [
        ([], "lenet5", "synthetic"),
        (["model._target_=own.TinyNet"], "TinyNet", "synthetic"),
        (["model._target_=own.TinyNet", "+model.name=tiny"], "tiny", "synthetic"),
        (["model=mlp"], "mlp", "synthetic"),
        (["model._target_=own.TinyNet", "dataset=custom", "dataset._target_=own.Blobs"], "TinyNet", "Blobs"),
    ],
)
def test_run_names_and_tags_come_from_what_actually_ran(overrides, model, dataset):
    from pipeline.training.identity import base_tags, run_name

    job = check(compose_job("dataset=synthetic", *overrides))
    assert (job.choices["model"], job.choices["dataset"]) == (model, dataset)
    assert base_tags(job.choices, job.seed)["model"] == model
    assert run_name(job.choices, job.seed) == f"fix-{model}-{dataset}-s0"


def test_an_option_from_the_users_own_config_folder_is_tagged_with_its_option_name(tmp_path):
    from conftest import CONF
    from hydra import compose, initialize_config_dir

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tiny.yaml").write_text("_target_: own.TinyNet\n_partial_: true\nwidth: 8\n")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["dataset=synthetic", f"hydra.searchpath=[file://{tmp_path}]",
                                                      "model=tiny"], return_hydra_config=True)
    job = check(cfg)
    assert job.choices["model"] == "tiny"
    assert job.config_dirs == (str(tmp_path.resolve()),)  # the report's Run-it command puts it on the search path
    assert check(compose_job("dataset=synthetic")).config_dirs == ()  # the project's conf/ is not the user's


# -- data: integer inputs stay integer, a Dataset is read lazily --------------------------------------------------


def test_integer_inputs_stay_integer_so_an_embedding_model_trains_on_them():
    from own import Embedder

    from pipeline.training.data.wrapped import build_data
    from pipeline.training.shapes import build_model, check_fit, first_batch

    data = build_data({"_target_": "own.Tokens", "batch_size": 8, "val_frac": 0.1, "test_frac": 0.1})
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))
    assert x.dtype == torch.int64 and x.shape == (8, 12)
    net = build_model(Embedder, data)
    check_fit(net, LanguageModel(), data, first_batch(data))


def test_a_tensor_data_module_keeps_integer_inputs_and_normalises_uint8_images():
    from pipeline.training.data.base import TensorDataModule

    module = TensorDataModule()
    assert module._normalise(torch.tensor([[1, 2, 3]])).dtype == torch.int64
    assert module._normalise(torch.zeros(1, 1, 2, 2, dtype=torch.uint8)).dtype == torch.float32


def test_a_map_style_dataset_is_split_by_fractions_and_read_item_by_item():
    from torch.utils.data import Subset

    from pipeline.training.data.wrapped import DatasetModule, build_data

    data = build_data({"_target_": "own.Blobs", "n": 200, "batch_size": 16, "val_frac": 0.1, "test_frac": 0.2,
                       "seed": 3})
    assert isinstance(data, DatasetModule) and data.seed == 3 and data.pool.noise.shape == (200, 8)
    data.setup()
    sizes = [len(s) for s in (data.train_set, data.val_set, data.test_set)]
    assert sizes == [140, 20, 40] and all(isinstance(s, Subset) for s in (data.train_set, data.val_set))
    seen = sorted(i for s in (data.train_set, data.val_set, data.test_set) for i in s.indices)
    assert seen == list(range(200))
    assert data.output_size == 3 and data.input_shape == (8,)


def test_a_dataset_with_a_train_argument_is_built_for_training_and_for_test():
    from pipeline.training.data.wrapped import build_data

    data = build_data({"_target_": "torchvision.datasets.FakeData", "size": 40, "image_size": [1, 8, 8],
                       "num_classes": 4, "batch_size": 8}, "dataset")
    assert data.test_pool is None  # FakeData takes neither train nor split: one pool
