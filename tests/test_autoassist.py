"""AutoAssist: the acceptance rule, the assistant, the fixed-size kept batches, the callback in a real run, the study
table, and the config checks."""

import math

import pandas as pd
import pytest
import torch
from conftest import TINY, compose_job, train_runs
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader

from pipeline.config.checks import ConfigError, check
from pipeline.methods.autoassist.assistant import Assistant, keep_probability
from pipeline.methods.autoassist.batches import KeptBatches
from pipeline.methods.autoassist.summary import autoassist_comparison
from pipeline.tracking.runs import summaries
from pipeline.training.data.batching import EpochShuffleSampler, TensorBatchDataset, keep_batch
from pipeline.training.job import run_job

# -- the acceptance rule ------------------------------------------------------------------------------------------


def test_keep_probability_runs_from_base_prob_at_p_0_to_1_at_p_1():
    p = torch.linspace(0, 1, 11)
    keep = keep_probability(p, 0.3)
    assert keep[0] == pytest.approx(0.3) and keep[-1] == pytest.approx(1.0)
    assert torch.all(keep[1:] > keep[:-1]) and torch.all((keep >= 0.3) & (keep <= 1.0))
    assert keep_probability(0.5, 0.3) == pytest.approx(0.65)
    assert keep_probability(0.0, 1.0) == 1.0  # base_prob 1 keeps everything
    assert keep_probability(0.2, 0.0) == pytest.approx(0.2)  # base_prob 0: p itself


@pytest.mark.parametrize("base_prob", [-0.1, 1.5, math.nan, True])
def test_keep_probability_rejects_a_base_prob_outside_0_1_naming_it(base_prob):
    with pytest.raises(ValueError, match="base_prob must be a number in \\[0, 1\\]"):
        keep_probability(0.5, base_prob)


# -- the assistant ------------------------------------------------------------------------------------------------


def _two_clusters(generator, n=64):
    """Bright images (+1) and dark images (-1) with noise, random labels; bright ones are the hard ones."""
    hard = torch.rand(n, generator=generator) < 0.5
    x = torch.where(hard, 1.0, -1.0).view(n, 1, 1, 1) + 0.3 * torch.randn(n, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    losses = torch.where(hard, 2.5, 0.2) + 0.05 * torch.rand(n, generator=generator)
    return x, y, losses, hard


def test_assistant_learns_to_flag_the_samples_whose_loss_is_high():
    generator = torch.Generator().manual_seed(0)
    assistant = Assistant(in_channels=1, num_classes=10)
    assert torch.all(assistant.prob(assistant.features(torch.zeros(3, 1, 28, 28)), torch.zeros(3, dtype=torch.long))
                     == 0.5)  # no opinion before it has seen a loss
    for _ in range(200):
        x, y, losses, _ = _two_clusters(generator)
        step = assistant.update(assistant.features(x), y, losses)
    assert step.informative_frac == pytest.approx(0.5, abs=0.2)  # the running mean sits between the clusters
    assert step.accuracy > 0.95
    x, y, _, hard = _two_clusters(generator, n=500)
    p = assistant.prob(assistant.features(x), y)
    assert p[hard].min() > 0.8 and p[~hard].max() < 0.2


def test_assistant_class_bias_flags_a_class_that_is_always_hard():
    generator = torch.Generator().manual_seed(1)
    assistant = Assistant(in_channels=1, num_classes=4, lr=0.5)
    for _ in range(300):
        x = torch.randn(64, 1, 28, 28, generator=generator)  # pure noise: only the label tells hard from easy
        y = torch.randint(0, 4, (64,), generator=generator)
        assistant.update(assistant.features(x), y, torch.where(y == 2, 3.0, 0.1))
    p = assistant.prob(torch.zeros(4, 49), torch.arange(4))
    assert p[2] > 0.7 and max(p[0], p[1], p[3]) < 0.3


# -- the kept batches ---------------------------------------------------------------------------------------------


def _loader(n: int, batch_size: int, seed: int = 0) -> DataLoader:
    """Raw batches of n 8x8 images whose label is their id (so which samples were emitted can be told)."""
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    dataset = TensorBatchDataset(x, torch.arange(n), torch.arange(n))
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochShuffleSampler(n, seed), collate_fn=keep_batch)


def _random_assistant(n_classes: int) -> Assistant:
    assistant = Assistant(in_channels=1, num_classes=n_classes, pool_size=2)
    assistant.class_bias = torch.randn(n_classes, generator=torch.Generator().manual_seed(7)) * 3
    return assistant


def test_kept_batches_are_full_and_every_rank_emits_the_same_number_per_epoch():
    n, batch = 500, 32
    counts, kept_shares = [], []
    for rank in range(3):
        batches = KeptBatches(_loader(n, batch), _random_assistant(n), base_prob=0.3, batch_size=batch, seed=0)
        batches.shard(rank, 3)
        epochs = [list(batches) for _ in range(2)]
        counts.append([len(e) for e in epochs])
        assert all(len(y) == batch and len(x) == batch for e in epochs for x, y in e)
        kept_shares.append(batches.kept / batches.seen)
    assert counts == [[math.ceil(n / (batch * 3))] * 2] * 3  # 6 batches per epoch on every rank
    assert len(set(kept_shares)) == 3 and all(0.3 < s < 1 for s in kept_shares)  # acceptance differs per rank


def test_ranks_take_disjoint_shards_of_each_pass():
    n, batch = 192, 32
    ids = []
    for rank in range(3):
        batches = KeptBatches(_loader(n, batch), _random_assistant(n), base_prob=1.0, batch_size=batch, seed=0)
        batches.shard(rank, 3)
        ids.append(torch.cat([y for _, y in batches]))  # one epoch: exactly this rank's third of one pass
    assert sorted(torch.cat(ids).tolist()) == list(range(n))


def test_kept_batches_are_reproducible_and_depend_on_the_seed():
    def first_batches(seed):
        batches = KeptBatches(_loader(300, 20), _random_assistant(300), base_prob=0.3, batch_size=20, seed=seed)
        return [y.tolist() for _, y in batches]

    assert first_batches(0) == first_batches(0)
    assert first_batches(0) != first_batches(1)


def test_a_restored_stream_goes_on_with_the_batch_after_the_last_one_trained_on():
    def fresh():
        return KeptBatches(_loader(300, 20), _random_assistant(300), base_prob=0.3, batch_size=20, seed=0)

    batches = fresh()
    produced = [batches.next_batch()[1] for _ in range(23)]  # more than one pass through the data
    state = batches.snapshot(trained_batches=21)  # batches 22 and 23 were only prefetched
    restored = fresh()
    restored.restore(state)
    assert torch.equal(restored.next_batch()[1], produced[21])
    assert torch.equal(restored.next_batch()[1], produced[22])
    assert restored.seen > 0 and restored.kept <= restored.seen


# -- in a real run ------------------------------------------------------------------------------------------------

SMALL = [*TINY, "dataset.train_subset=1000"]  # 1,000 samples: 16 batches of 64 per epoch, the last one of 40


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_autoassist_run_is_reproducible_and_logs_what_it_did(store_uri):
    cfg = compose_job(*SMALL, "+policy=fix", "+sampler=autoassist")
    first, second = run_job(cfg), run_job(cfg)
    client = MlflowClient(store_uri)
    assert first.status == second.status == "FINISHED"
    loss = _history(client, first.run_id, "train/loss")
    assert len(loss) == 30 and loss == _history(client, second.run_id, "train/loss")
    run = client.get_run(first.run_id)
    assert run.data.tags["sampler"] == "autoassist"
    # Fixed-size batches of kept samples: 64 per step, across the epoch boundary at 16 batches.
    assert _history(client, first.run_id, "train/samples") == [(t, 64.0 * (t + 1)) for t in range(30)]
    seen = _history(client, first.run_id, "autoassist/seen")
    assert len(seen) == 30 and seen[-1][1] > 30 * 64  # more raw samples scored than trained on
    accept = [v for _, v in _history(client, first.run_id, "autoassist/accept_rate")]
    assert accept and all(0 < v <= 1 for v in accept)
    assert len(_history(client, first.run_id, "autoassist/assistant_acc")) == 30
    metrics = summaries(run.data.metrics, run.data.params)
    assert metrics["summary/samples"] == 30 * 64
    assert metrics["summary/samples_to_acc_0.8"] == 64 * metrics["summary/steps_to_acc_0.8"]
    assert 0.3 <= metrics["summary/autoassist_accept_rate"] < 1
    assert metrics["summary/autoassist_s"] < 0.2 * metrics["summary/train_s"]  # cheap next to training
    assert not any(key.startswith("summary/") for key in run.data.metrics)  # params, not single-point charts


def test_plain_run_counts_the_samples_it_trained_on(store_uri):
    result = run_job(compose_job(*SMALL, "+policy=fix"))
    run = MlflowClient(store_uri).get_run(result.run_id)
    metrics = summaries(run.data.metrics, run.data.params)
    assert metrics["summary/samples"] == 1000 + 14 * 64  # one epoch (16 batches) and 14 batches of the next
    steps = metrics["summary/steps_to_acc_0.8"]
    assert metrics["summary/samples_to_acc_0.8"] == (64 * steps if steps < 16 else 1000 + 64 * (steps - 16))
    assert not any(key.startswith("summary/autoassist") for key in metrics)


# -- config -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, key", [
    ("sampler.base_prob=1.5", "sampler.base_prob"),
    ("sampler.lr=0", "sampler.lr"),
    ("sampler.l2=-1", "sampler.l2"),
    ("sampler.pool_size=0", "sampler.pool_size"),
    ("sampler.loss_ema=1.0", "sampler.loss_ema"),
])
def test_bad_autoassist_setting_is_rejected_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        check(compose_job("dataset=synthetic", "+sampler=autoassist", override))
    assert str(err.value).startswith(key)


def test_study_switches_autoassist_on_and_off_with_the_assist_group():
    on = check(compose_job("+experiment=autoassist_fashion_lenet", "+assist=autoassist", "dataset=synthetic"))
    off = check(compose_job("+experiment=autoassist_fashion_lenet", "+assist=none", "dataset=synthetic"))
    assert on.choices["sampler"] == "autoassist" and on.sampler is not None
    assert "sampler" not in off.choices and off.sampler is None
    assert on.policy == off.policy and on.policy_name == "triangle2"


# -- the study table ----------------------------------------------------------------------------------------------


def _study_run(sampler, seed, samples, steps, seconds):
    reached = 0.0 if math.isnan(steps) else 1.0
    return {"policy": "triangle2", "sampler": sampler, "seed": seed, "summary/reached_acc_0.85": reached,
            "summary/samples_to_acc_0.85": samples, "summary/steps_to_acc_0.85": steps,
            "summary/seconds_to_acc_0.85": seconds}


def test_comparison_gives_per_sampler_costs_over_reached_runs_and_ratios_to_no_sampler():
    nan = math.nan
    runs = pd.DataFrame([
        _study_run(None, 0, 1280.0, 10.0, 1.0), _study_run(None, 1, 2560.0, 20.0, 3.0),
        _study_run("autoassist", 0, 1024.0, 8.0, 1.5), _study_run("autoassist", 1, nan, nan, nan),
    ])
    table = autoassist_comparison(runs, 0.85).set_index("sampler")
    assert list(table.index) == ["none", "autoassist"]
    none, auto = table.loc["none"], table.loc["autoassist"]
    assert (none["n_runs"], none["n_reached"], auto["n_reached"], auto["share_reached"]) == (2, 2, 1, 0.5)
    assert none["samples_mean"] == 1920 and none["samples_std"] == pytest.approx(905.0967, rel=1e-5)
    assert none["seconds_mean"] == 2.0 and math.isnan(auto["steps_std"])  # one reached run: no std
    assert auto["samples_vs_none"] == pytest.approx(1024 / 1920) and auto["seconds_vs_none"] == 0.75
    assert none["steps_vs_none"] == 1.0 and auto["seeds"] == [0, 1]


def test_comparison_treats_a_missing_sampler_column_as_none():
    runs = pd.DataFrame([_study_run(None, 0, 1280.0, 10.0, 1.0)]).drop(columns="sampler")
    table = autoassist_comparison(runs, 0.85)
    assert table["sampler"].tolist() == ["none"] and math.isnan(table.loc[0, "samples_std"])


@pytest.mark.slow
def test_a_crashed_autoassist_run_resumes_from_its_checkpoint_and_finishes(store_uri, tmp_path, monkeypatch):
    from pipeline.methods.autoassist.callback import AutoAssistCallback

    cfg = compose_job(*SMALL, "+policy=fix", "+sampler=autoassist", "trainer.checkpoint_every_steps=10",
                      f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}")
    train_batch_end = AutoAssistCallback.on_train_batch_end

    def crash_at_step_25(self, trainer, *args):
        train_batch_end(self, trainer, *args)
        if trainer.global_step == 25:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(AutoAssistCallback, "on_train_batch_end", crash_at_step_25)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_job(cfg)
    monkeypatch.setattr(AutoAssistCallback, "on_train_batch_end", train_batch_end)
    result = run_job(cfg)  # the same job again: resumes the same run from the checkpoint at step 20
    client = MlflowClient(store_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and [r.info.run_id for r in train_runs(store_uri)] == [result.run_id]
    samples = _history(client, result.run_id, "train/samples")
    assert samples == [(t, 64.0 * (t + 1)) for t in range(30)]  # each step once, the count carried over
    summary = summaries(run.data.metrics, run.data.params)
    assert summary["summary/samples"] == 30 * 64
    assert summary["summary/autoassist_seen"] > 30 * 64  # counts from before the crash were restored
