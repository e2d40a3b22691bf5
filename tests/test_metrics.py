"""Evaluation statistics and the run summary, on hand-checkable cases."""

import math

import pytest
import torch

from pipeline.training.metrics import (
    EvalStats,
    RunProgress,
    divergence,
    divergence_error,
    first_finite,
    summarize,
)


def _logits_for(probs):
    """Logits whose softmax is exactly ``probs`` (log-probabilities)."""
    return torch.tensor(probs, dtype=torch.float64).log().float()


def test_eval_stats_match_lrbench_definitions_on_a_hand_checked_batch():
    # 4 samples, 3 classes. Correct: sample 0 (class 0, conf .7), 1 (class 1, conf .6), 3 (class 0, conf .5).
    probs = [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.8, 0.1, 0.1], [0.5, 0.3, 0.2]]
    target = torch.tensor([0, 1, 2, 0])
    stats = EvalStats(num_classes=3)
    stats.update(_logits_for(probs), target)
    out = stats.compute()
    assert out["acc"] == pytest.approx(0.75)
    assert out["acc_top5"] == pytest.approx(1.0)  # top-5 of 3 classes always holds the label
    correct_conf = [0.7, 0.6, 0.5]
    assert out["conf_mean"] == pytest.approx(0.6, rel=1e-5)
    assert out["conf_std"] == pytest.approx(float(torch.tensor(correct_conf).std(unbiased=False)), rel=1e-4)
    # Per-class means of correct samples: class 0 -> (.7+.5)/2 = .6, class 1 -> .6, class 2 has none (skipped).
    assert out["conf_class_std"] == pytest.approx(0.0, abs=1e-6)
    expected_loss = -sum(math.log(probs[i][int(target[i])]) for i in range(4)) / 4
    assert out["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_eval_stats_accumulate_over_batches_like_one_batch():
    torch.manual_seed(0)
    logits, target = torch.randn(50, 10), torch.randint(0, 10, (50,))
    whole, parts = EvalStats(10), EvalStats(10)
    whole.update(logits, target)
    for chunk in range(0, 50, 7):
        parts.update(logits[chunk : chunk + 7], target[chunk : chunk + 7])
    for key, value in whole.compute().items():
        assert parts.compute()[key] == pytest.approx(value, rel=1e-6, abs=1e-9)  # float32 batch sums


def test_eval_stats_without_samples_refuses_to_compute():
    with pytest.raises(ValueError, match="no evaluation samples"):
        EvalStats(10).compute()


def test_summary_records_first_step_and_seconds_each_target_is_reached():
    progress = RunProgress(targets=(0.5, 0.8, 0.99))
    for step, seconds, acc in [(10, 1.0, 0.4), (20, 2.0, 0.6), (30, 3.0, 0.85), (40, 4.0, 0.82)]:
        progress.add_eval(step, seconds, acc)
    progress.last_train_loss = 0.3
    out = summarize(progress, steps=40, train_s=4.5, test={"loss": 0.5, "acc": 0.8})
    assert out["summary/steps_to_acc_0.5"] == 20 and out["summary/seconds_to_acc_0.5"] == 2.0
    assert out["summary/steps_to_acc_0.8"] == 30
    assert out["summary/reached_acc_0.99"] == 0.0 and "summary/steps_to_acc_0.99" not in out
    assert out["summary/best_val_acc"] == 0.85 and out["summary/best_val_acc_step"] == 30
    assert out["summary/final_val_acc"] == 0.82
    assert out["summary/loss_gap"] == pytest.approx(0.3 - 0.5)
    assert out["summary/diverged"] == 0.0
    assert out["summary/test_acc"] == 0.8


def test_summary_of_a_diverged_run_says_where():
    progress = RunProgress(targets=(0.5,))
    progress.diverged_at = 7
    out = summarize(progress, steps=8, train_s=0.1, test=None)
    assert out["summary/diverged"] == 1.0 and out["summary/diverged_step"] == 7
    assert "summary/best_val_acc" not in out


def test_divergence_is_measured_against_the_first_finite_loss():
    first = None
    for loss in (math.nan, 2.0, 5.0):
        first = first_finite(first, loss)
    assert first == 2.0
    assert divergence(math.inf, first, 10.0) == "non-finite"
    assert divergence(19.0, first, 10.0) is None
    reason = divergence(21.0, first, 10.0)
    assert divergence_error(21.0, 7, reason) == "training loss 21 at step 7 is above 10x the first loss"
