"""LCA: the quadrature conserves the loss change, splits when it must, aggregates exactly, and runs inside a job."""

import csv
import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, compose_job
from mlflow.tracking import MlflowClient
from torch import nn
from torch.utils.data import TensorDataset

from pipeline.methods.lca.callback import LCACallback, is_measured
from pipeline.methods.lca.loss import EvalLoss, eval_semantics
from pipeline.methods.lca.quadrature import StepLCA, helping_fraction, layer_of, layer_sums, lca_step
from pipeline.tracking.runs import summaries
from pipeline.training.job import run_job


def _data(n=256, features=20, classes=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 5))


def _sgd_step(model, x, y, lr):
    """One SGD step on (x, y) in train mode; returns (θ_t, θ_{t+1}) as detached copies."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    return before, {n: p.detach().clone() for n, p in model.named_parameters()}


def _segment(theta0, theta1):
    """(θ_t, Δθ) in float64 and the parameters' dtypes, as EvalLoss.gradients takes them."""
    origin = {n: v.to(torch.float64) for n, v in theta0.items()}
    return origin, {n: theta1[n].to(torch.float64) - origin[n] for n in origin}, {n: v.dtype for n, v in theta0.items()}


def _first_order_lca(loss, theta0, theta1):
    """One-point LCA, ``A = Δθ ⊙ ∇L(θ_t)``: the first-order Taylor term, the biased baseline Simpson is compared to."""
    origin, delta, dtypes = _segment(theta0, theta1)
    grads, losses = loss.gradients(origin, delta, [0.0, 1.0], dtypes)
    lca = {name: delta[name] * grads[name][0] for name in origin}
    return StepLCA(lca, float(losses[0]), float(losses[1]), 0, {name: g[1] for name, g in grads.items()})


@pytest.mark.parametrize("n", [2, 8])
def test_simpson_weights_sum_to_one_and_follow_the_1_4_2_4_1_pattern(n):
    model = _mlp()
    x, y = _data()
    theta0, theta1 = _sgd_step(model, x, y, lr=20.0)
    loss = EvalLoss(model, [(x, y)])
    w = torch.tensor([1.0] + [4.0 if j % 2 else 2.0 for j in range(1, n)] + [1.0], dtype=torch.float64) / (3 * n)
    assert float(w.sum()) == pytest.approx(1.0) and w[0] / w[1] == pytest.approx(0.25)
    if n > 2:
        assert w[1] / w[2] == pytest.approx(2.0)
    with eval_semantics(model):
        result = lca_step(loss, theta0, theta1, threshold=0.0, max_splits=n)  # split until n sub-intervals
        origin, delta, dtypes = _segment(theta0, theta1)
        grads, _ = loss.gradients(origin, delta, [j / n for j in range(n + 1)], dtypes)
    assert result.splits == n
    for name in result.lca:  # A = Δθ ⊙ Σ_j w_j ∇L(θ_t + (j/n)·Δθ)
        expected = delta[name] * torch.tensordot(w, grads[name], dims=1)
        torch.testing.assert_close(result.lca[name], expected, rtol=1e-9, atol=1e-12)


def test_simpson_lca_conserves_a_small_step_far_better_than_first_order():
    model = _mlp()
    x, y = _data()
    theta0, theta1 = _sgd_step(model, x, y, lr=5.0)
    loss = EvalLoss(model, [(x[:100], y[:100]), (x[100:], y[100:])])  # uneven chunks: weighted by size
    with eval_semantics(model):
        simpson = lca_step(loss, theta0, theta1, threshold=1e-3, max_splits=2)
        first = _first_order_lca(loss, theta0, theta1)
    assert simpson.loss_change == pytest.approx(first.loss_change)
    assert simpson.loss_change < -0.05  # the step lowered the loss clearly
    assert simpson.conservation_error < 1e-3
    assert first.conservation_error > 100 * simpson.conservation_error
    assert simpson.splits == 2 and first.splits == 0


def test_large_step_is_split_until_the_conservation_error_is_below_the_threshold():
    model = _mlp()
    x, y = _data()
    theta0, theta1 = _sgd_step(model, x, y, lr=20.0)  # a big step: the 3-point rule alone misses by ~7e-3
    loss = EvalLoss(model, [(x, y)])
    with eval_semantics(model):
        coarse = lca_step(loss, theta0, theta1, threshold=1e-3, max_splits=2)
        adaptive = lca_step(loss, theta0, theta1, threshold=1e-3, max_splits=32)
        capped = lca_step(loss, theta0, theta1, threshold=1e-12, max_splits=8)
    assert coarse.conservation_error > 1e-3
    assert adaptive.splits > 2 and adaptive.conservation_error <= 1e-3
    assert capped.splits == 8  # the cap stops the doubling even when the threshold is out of reach
    # Splitting refines the same integral: the loss change is the same, only the allocation gets closer to it.
    assert adaptive.loss_change == coarse.loss_change


def test_vmapped_points_give_the_same_lca_as_one_point_at_a_time():
    model = _mlp()
    x, y = _data()
    theta0, theta1 = _sgd_step(model, x, y, lr=20.0)
    with eval_semantics(model):
        one = lca_step(EvalLoss(model, [(x, y)], points_per_pass=1), theta0, theta1, threshold=1e-4)
        many = lca_step(EvalLoss(model, [(x, y)], points_per_pass=3), theta0, theta1, threshold=1e-4)
    assert one.splits == many.splits
    for name in one.lca:
        torch.testing.assert_close(one.lca[name], many.lca[name], rtol=1e-5, atol=1e-10)


def test_per_layer_sums_equal_the_per_parameter_total():
    model = _mlp()
    x, y = _data()
    theta0, theta1 = _sgd_step(model, x, y, lr=1.0)
    with eval_semantics(model):
        result = lca_step(EvalLoss(model, [(x, y)]), theta0, theta1)
    sums = result.layer_sums()
    assert list(sums) == ["0", "2"]  # the two Linear layers, weight and bias together
    assert sum(sums.values()) == pytest.approx(result.total, rel=1e-12, abs=1e-15)
    assert sums["0"] == pytest.approx(float(result.lca["0.weight"].sum() + result.lca["0.bias"].sum()), rel=1e-12)
    assert layer_of("net.features.0.weight") == "net.features.0" and layer_of("scale") == "scale"


def test_helping_fraction_counts_negative_entries_over_all_entries():
    lca = {"a.weight": torch.tensor([-1.0, 0.0, 2.0, -3.0]), "a.bias": torch.tensor([0.0, -0.5])}
    assert helping_fraction(lca) == pytest.approx(3 / 6)
    assert layer_sums(lca) == {"a": pytest.approx(-2.5)}


class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(20, 32)
        self.bn = nn.BatchNorm1d(32)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


@pytest.mark.parametrize("bn_mode", ["batch", "running"])
def test_batchnorm_and_dropout_lca_is_deterministic_conserves_and_leaves_the_model_as_it_was(bn_mode):
    model = _BNNet()
    x, y = _data()
    for _ in range(3):  # move the running statistics away from their initial 0 / 1
        _sgd_step(model, x, y, lr=0.5)
    theta0, theta1 = _sgd_step(model, x, y, lr=2.0)
    model.train()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    loss = EvalLoss(model, [(x[:128], y[:128]), (x[128:], y[128:])])
    with eval_semantics(model, bn_mode):
        first = lca_step(loss, theta0, theta1, threshold=1e-4)
        again = lca_step(loss, theta0, theta1, threshold=1e-4)
    assert first.conservation_error <= 1e-4
    assert first.total == again.total and first.loss_before == again.loss_before  # dropout is off: deterministic
    for name, value in model.named_buffers():  # running stats neither updated nor counted
        assert torch.equal(value, buffers[name]), name
    assert model.training and model.bn.training and model.drop.training and model.bn.track_running_stats
    # The two modes are two different losses: batch statistics vs the running buffers.
    other = "running" if bn_mode == "batch" else "batch"
    with eval_semantics(model, other):
        assert lca_step(loss, theta0, theta1).loss_before != pytest.approx(first.loss_before, abs=1e-6)


def test_measured_steps_are_every_kth_step_of_the_window():
    measured = [t for t in range(30) if is_measured(t, start_step=4, every_k_steps=3, window_steps=10)]
    assert measured == [4, 7, 10, 13]
    assert [t for t in range(12) if is_measured(t, start_step=0, every_k_steps=5, window_steps=None)] == [0, 5, 10]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"every_k_steps": 0}, "every_k_steps"),
        ({"start_step": -1}, "start_step"),
        ({"window_steps": 0}, "window_steps"),
        ({"subset_size": 0}, "subset_size"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"max_splits": 12}, "max_splits"),
        ({"max_splits": 1}, "max_splits"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"points_per_pass": 0}, "points_per_pass"),
        ({"bn_mode": "eval"}, "bn_mode"),
        ({"seed": -2}, "seed"),
        ({"every_k_steps": 2.5}, "every_k_steps"),
    ],
)
def test_bad_callback_argument_is_rejected_naming_it(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        LCACallback(recorder=None, **kwargs)


def test_checkpointed_state_carries_the_measured_steps_into_a_resumed_run():
    x, y = _data()
    net, trainer = _Net(), _trainer(x, y)
    first = LCACallback(_Recorder(), every_k_steps=2, subset_size=100)
    first.on_train_start(trainer, net)
    _train(first, trainer, net, x, y, steps=5)
    state = first.state_dict()
    resumed = LCACallback(_Recorder(), every_k_steps=2, subset_size=100)
    resumed.load_state_dict(state)
    resumed.on_train_start(trainer, net)
    _train(resumed, trainer, net, x, y, steps=2)
    assert [int(r["step"]) for r in resumed.rows] == [0, 2, 4, 6]
    assert resumed.cumulative["body.0"] == pytest.approx(sum(r["body.0"] for r in resumed.rows))
    assert "lca/body.0" in resumed.recorder.resumed_keys and "lca/helping_frac" in resumed.recorder.resumed_keys


def _artifact_csv(client, run_id):
    path = client.download_artifacts(run_id, "lca/lca_layers.csv")
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_lca_callback_in_a_job_logs_layer_series_summaries_csv_and_heatmap(store_uri):
    cfg = compose_job(*TINY, "+analysis=lca", "analysis.every_k_steps=5", "analysis.subset_size=200",
                      "analysis.eval_batch_size=100")
    result = run_job(cfg)
    assert result.status == "FINISHED", result.failure
    client = MlflowClient(store_uri)
    run = client.get_run(result.run_id)
    layers = ["net.features.0", "net.features.2", "net.classifier.1", "net.classifier.3"]  # LeNet-5's 4 layers
    for key in ("lca/total", "lca/loss_change", "lca/conservation_error", "lca/helping_frac", "lca/splits",
                *(f"lca/{layer}" for layer in layers)):
        assert sorted(m.step for m in client.get_metric_history(result.run_id, key)) == [0, 5, 10, 15, 20, 25], key
    for m in client.get_metric_history(result.run_id, "lca/conservation_error"):
        assert m.value <= 1e-3
    metrics = summaries(run.data.metrics, run.data.params)  # params summary.lca_*, not single-point charts
    assert not any(key.startswith("summary/") for key in run.data.metrics)
    assert 0 < metrics["summary/lca_helping_frac"] < 1
    assert metrics["summary/lca_steps"] == 6 and metrics["summary/lca_s"] > 0
    cumulative = [metrics[f"summary/lca_cum/{layer}"] for layer in layers]
    with open(client.download_artifacts(result.run_id, "summary.json")) as handle:  # one table: the run's and LCA's
        assert {"lca_steps", "best_val_acc", *(f"lca_cum/{layer}" for layer in layers)} <= set(json.load(handle))
    rows = _artifact_csv(client, result.run_id)
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20, 25]
    for row in rows:  # the per-layer columns add up to the step's total
        assert sum(float(row[layer]) for layer in layers) == pytest.approx(float(row["total"]), abs=1e-9)
    assert sum(cumulative) == pytest.approx(sum(float(r["total"]) for r in rows), abs=1e-9)
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "lca")}
    assert artifacts == {"lca/lca_layers.csv", "lca/lca_heatmap.png"}
    with open(client.download_artifacts(result.run_id, "lca/lca_heatmap.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


class _Recorder:
    """Collects what the callback logs, without MLflow."""

    def __init__(self):
        self.logged = []

    def metrics(self, values, step):
        self.logged.extend((key, step, value) for key, value in values.items())

    def resume_from_store(self, keys):
        self.resumed_keys = list(keys)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _mlp()

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, x):
        return self.body(x)


def _trainer(x, y):
    return SimpleNamespace(is_global_zero=True, world_size=1, global_step=0,
                           datamodule=SimpleNamespace(train_set=TensorDataset(x, y)))


def _train(callback, trainer, net, x, y, steps):
    """A bare training loop that calls the callback's hooks where Lightning does."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(net(x[:64]), y[:64]).backward()
        callback.on_before_optimizer_step(trainer, net, optimizer)
        optimizer.step()
        trainer.global_step += 1
        callback.on_train_batch_end(trainer, net, None, None, trainer.global_step - 1)


def test_every_step_in_a_window_reuses_the_end_gradient_and_the_losses_telescope(monkeypatch):
    x, y = _data()
    net, recorder, trainer = _Net(), _Recorder(), _trainer(x, y)
    callback = LCACallback(recorder, every_k_steps=1, start_step=2, window_steps=4, subset_size=200)
    points = []
    gradients = EvalLoss.gradients
    monkeypatch.setattr(EvalLoss, "gradients", lambda self, o, d, fractions, *a, **k: (
        points.append(len(fractions)), gradients(self, o, d, fractions, *a, **k))[1])
    callback.on_train_start(trainer, net)
    _train(callback, trainer, net, x, y, steps=8)
    assert [int(r["step"]) for r in callback.rows] == [2, 3, 4, 5]
    assert points == [3, 2, 2, 2]  # θ_t's gradient comes from the previous step after the first
    # L depends on θ only: one step's end is the next one's start.
    for before, after in zip(callback.rows, callback.rows[1:]):
        assert before["loss_before"] + before["loss_change"] == pytest.approx(after["loss_before"], abs=1e-12)
    assert {key for key, _, _ in recorder.logged} == {
        "lca/body.0", "lca/body.2", "lca/total", "lca/loss_change", "lca/conservation_error", "lca/helping_frac",
        "lca/splits"}
    assert net.training


def test_lca_summary_names_the_layers_that_helped_and_hurt_per_policy():
    import pandas as pd

    from pipeline.methods.lca.summary import lca_by_policy, lca_layers

    runs = pd.DataFrame({
        "policy": ["fix", "fix", "triangle2", "cos"],
        "seed": [0, 1, 0, 0],
        "summary/lca_cum/net.a": [-0.5, -0.3, -0.2, math.nan],
        "summary/lca_cum/net.b": [0.1, 0.3, -0.4, math.nan],
        "summary/lca_cum/net.c": [-0.9, -1.1, 0.05, math.nan],
        "summary/lca_helping_frac": [0.52, 0.54, 0.51, math.nan],  # "cos" has no LCA data: left out
    })
    table = lca_by_policy(runs).set_index("policy")
    assert list(table.index) == ["fix", "triangle2"]
    assert table.loc["fix", "helped"] == ("net.c", "net.a") and table.loc["fix", "hurt"] == ("net.b",)
    assert table.loc["triangle2", "helped"] == ("net.b", "net.a") and table.loc["triangle2", "hurt"] == ("net.c",)
    assert table.loc["fix", "helping_frac"] == pytest.approx(0.53) and table.loc["fix", "seeds"] == 2
    assert table.loc["fix", "lca_total"] == pytest.approx(-1.2)
    layers = lca_layers(runs)
    assert len(layers) == 6 and set(layers["verdict"]) == {"helped", "hurt"}
    assert lca_by_policy(runs.drop(columns=[c for c in runs if c.startswith("summary/")])).empty
