"""Packed policies: K copies trained as one vectorised model are the K separate runs (float64: to rounding), each
recorded as its own MLflow run; packs that cannot be exact are refused, naming the key."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, compose_job, run_cli, train_runs
from mlflow.tracking import MlflowClient

from pipeline.config.checks import ConfigError, check
from pipeline.packing.nets import PackedNets
from pipeline.packing.plan import group_jobs
from pipeline.packing.run import plan_sweep, resolved, run_packed
from pipeline.packing.sgd import PackedSGD, SGDRule
from pipeline.policies import Cos, Demon, Fix, Sin2, Triangle2
from pipeline.tracking.runs import summaries
from pipeline.training.data.synthetic import Synthetic
from pipeline.training.job import run_job
from pipeline.training.models import LeNet5, ResNet20
from pipeline.training.scheduler import PolicyScheduler

POLICIES = [Triangle2(k0=0.01, k1=0.06, l=5), Sin2(k0=0.01, k1=0.06, l=7), Cos(k0=0.001, k1=0.05, l=20)]
# One thread: on the shared 2-core machine two threads are slower, and much slower for float64 convolutions.
PACKED_TINY = [*TINY, "trainer.num_threads=1"]


def summary_of(run) -> dict[str, float]:
    """A run's end-of-run figures as the report reads them (params ``summary.*``)."""
    return summaries(run.data.metrics, run.data.params)


def _rule(**kwargs):
    return SGDRule(**{"momentum": 0.9, "dampening": 0.0, "weight_decay": 5e-4, "nesterov": False, "maximize": False,
                      **kwargs})


def _batches(steps, dtype, size=28, n=32):
    """The first ``steps`` training batches of the synthetic data set (learnable images, a fixed order)."""
    data = Synthetic(batch_size=n, image_size=size)
    data.setup("fit")
    batches = [(x.to(dtype), y) for x, y in data.train_dataloader()]
    assert len(batches) >= steps
    return batches[:steps]


def _lenet(dtype, seed=0):
    torch.manual_seed(seed)
    return LeNet5(in_channels=1, num_classes=10, image_size=28).to(dtype)


def _train_packed(nets, policies, rule, batches, momenta=None):
    """Per-step losses [steps][K] of ``nets`` trained as one pack, and the pack."""
    packed = PackedNets(nets, torch.device("cpu"), batches[0][0].dtype)
    sgd = PackedSGD(rule, len(nets), momentum_policies=momenta is not None)
    losses = []
    for t, (x, y) in enumerate(batches):
        grads, loss = packed.grads_and_losses(x, y)
        ms = [m(t) for m in momenta] if momenta else [rule.momentum] * len(nets)
        sgd.step(packed.params, grads, [p(t) for p in policies], ms, [True] * len(nets))
        losses.append(loss.tolist())
    return losses, packed


def _train_torch(net, policy, rule, batches, momentum=None):
    """The same training with torch.optim.SGD driven by the project's PolicyScheduler: the reference."""
    opt = torch.optim.SGD(net.parameters(), lr=policy(0), momentum=rule.momentum, dampening=rule.dampening,
                          weight_decay=rule.weight_decay, nesterov=rule.nesterov, maximize=rule.maximize)
    scheduler = PolicyScheduler(opt, policy, momentum=momentum)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y, reduction="none").mean()
        loss.backward()
        opt.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("rule", [_rule(), _rule(nesterov=True), _rule(momentum=0.0), _rule(dampening=0.1),
                                  _rule(maximize=True, weight_decay=0.0)], ids=str)
def test_packed_sgd_is_torch_sgd_per_copy_with_its_own_lr(rule):
    torch.manual_seed(0)
    params = {"w": torch.randn(3, 4, 5, dtype=torch.float64), "b": torch.randn(3, 5, dtype=torch.float64)}
    refs = [[torch.nn.Parameter(p[k].clone()) for p in params.values()] for k in range(3)]
    opts = [torch.optim.SGD(ps, lr=0.1, momentum=rule.momentum, dampening=rule.dampening,
                            weight_decay=rule.weight_decay, nesterov=rule.nesterov, maximize=rule.maximize)
            for ps in refs]
    sgd = PackedSGD(rule, 3, momentum_policies=False)
    for t in range(6):
        grads = {name: torch.randn_like(p) for name, p in params.items()}
        lrs = [0.1 * (k + 1) / (t + 1) for k in range(3)]
        sgd.step(params, grads, lrs, [rule.momentum] * 3, [True] * 3)
        for k, (opt, ps) in enumerate(zip(opts, refs)):
            opt.param_groups[0]["lr"] = lrs[k]
            for p, g in zip(ps, grads.values()):
                p.grad = g[k].clone()
            opt.step()
    for k, ps in enumerate(refs):
        for p, packed in zip(ps, params.values()):
            assert torch.allclose(p.detach(), packed[k], rtol=0, atol=1e-14)


def test_per_copy_momentum_including_zero_follows_torch_and_frozen_copies_stay_put():
    """Momentum 0 at a step leaves torch's buffer alone (and a copy's first step with momentum creates it); a copy
    marked inactive keeps its parameters exactly."""
    torch.manual_seed(1)
    rule = _rule(nesterov=True)
    params = {"w": torch.randn(3, 6, dtype=torch.float64)}
    refs = [torch.nn.Parameter(params["w"][k].clone()) for k in range(3)]
    lrs = [0.05, 0.1, 0.2]
    opts = [torch.optim.SGD([p], lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True) for p, lr in zip(refs, lrs)]
    sgd = PackedSGD(rule, 3, momentum_policies=True)
    schedule = [[0.0, 0.9, 0.5], [0.9, 0.0, 0.5], [0.8, 0.7, 0.0], [0.6, 0.6, 0.6]]
    for _t, momenta in enumerate(schedule):
        grads = {"w": torch.randn_like(params["w"])}
        sgd.step(params, grads, lrs, momenta, [True] * 3)
        for k, (opt, p) in enumerate(zip(opts, refs)):
            opt.param_groups[0]["momentum"] = momenta[k]
            p.grad = grads["w"][k].clone()
            opt.step()
    for k in range(3):
        assert torch.allclose(refs[k].detach(), params["w"][k], rtol=0, atol=1e-14)
    before = params["w"].clone()
    sgd.step(params, {"w": torch.full_like(before, float("nan"))}, [0.1] * 3, [0.9] * 3, [True, False, True])
    assert torch.equal(params["w"][1], before[1])


def test_packed_lenets_give_each_policy_the_losses_and_weights_of_its_separate_run_in_float64():
    torch.set_num_threads(1)
    rule, batches = _rule(), _batches(20, torch.float64)
    nets = [_lenet(torch.float64) for _ in POLICIES]  # same init seed, same data order, three policies
    losses, packed = _train_packed([copy.deepcopy(n) for n in nets], POLICIES, rule, batches)
    params = packed.params
    for k, (net, policy) in enumerate(zip(nets, POLICIES)):
        alone_losses, alone = _train_packed([copy.deepcopy(net)], [policy], rule, batches)
        assert max(abs(a[k] - b[0]) for a, b in zip(losses, alone_losses)) < 1e-10
        for name, value in alone.params.items():
            assert torch.allclose(params[name][k], value[0], rtol=0, atol=1e-10), name
    # And against torch.optim.SGD + PolicyScheduler for one copy: the pipeline's own training step.
    torch_losses = _train_torch(nets[2], POLICIES[2], rule, batches)
    assert max(abs(a[2] - b) for a, b in zip(losses, torch_losses)) < 1e-10
    for name, value in nets[2].named_parameters():
        assert torch.allclose(params[name][2], value.detach(), rtol=0, atol=1e-10), name
    assert losses[-1][0] != losses[-1][2]  # the policies did make the copies different


def test_float32_packed_copies_agree_with_torch_sgd_over_the_first_ten_steps():
    """Float32 sums in another order, so agreement is to rounding (about 1e-7 per step here) and grows with
    training; a near-tie in a max-pool or ReLU can amplify it at any step (notes perf.md): exactness is a float64
    property."""
    torch.set_num_threads(1)
    rule, batches = _rule(nesterov=True), _batches(10, torch.float32, n=64)
    nets = [_lenet(torch.float32, seed=k) for k in range(3)]  # different init seeds are fine
    losses, _ = _train_packed([copy.deepcopy(n) for n in nets], POLICIES, rule, batches)
    for k, (net, policy) in enumerate(zip(nets, POLICIES)):
        reference = _train_torch(net, policy, rule, batches)
        assert max(abs(a[k] - b) for a, b in zip(losses, reference)) < 1e-5


def test_batchnorm_running_statistics_are_kept_per_copy():
    torch.set_num_threads(1)
    batches = _batches(4, torch.float64, size=8, n=16)
    policies, rule = [Fix(k0=0.05), Fix(k0=0.2)], _rule()
    nets = [ResNet20(in_channels=1, num_classes=10, image_size=8, depth=8).double() for _ in policies]
    losses, packed = _train_packed([copy.deepcopy(n) for n in nets], policies, rule, batches)
    for k, (net, policy) in enumerate(zip(nets, policies)):
        reference = _train_torch(net, policy, rule, batches)
        assert max(abs(a[k] - b) for a, b in zip(losses, reference)) < 1e-10
        net.eval()
        x = batches[0][0]
        assert torch.allclose(packed.logits(x, [k])[0], net(x), rtol=0, atol=1e-10)  # eval uses running stats


@pytest.mark.slow
def test_packed_runs_record_what_lightning_runs_record_in_float64(store_uri):
    """The whole pipeline: each packed copy's MLflow run holds the per-step losses, learning rates, momenta and
    evaluations of the same job trained alone by the Lightning Trainer."""
    common = [*PACKED_TINY, "trainer.precision=64-true", "momentum=demon"]
    results = run_packed([compose_job(*common, f"+policy={p}") for p in ("triangle2", "sin2", "cos")])
    alone = run_job(compose_job(*common, "+policy=sin2"))
    client = MlflowClient(store_uri)

    def history(run_id, key):
        return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]

    for key in ("train/loss", "lr", "momentum", "val/loss", "val/acc"):
        packed, reference = history(results[1].run_id, key), history(alone.run_id, key)
        assert len(packed) == len(reference) > 0, key
        assert max(abs(a - b) for a, b in zip(packed, reference)) < 1e-10, key
    packed, reference = (summary_of(client.get_run(r.run_id)) for r in (results[1], alone))
    assert abs(packed["summary/test_loss"] - reference["summary/test_loss"]) < 1e-10
    assert set(packed) == set(reference)  # the same summary, recorded the same way (params)
    assert {"summary.csv", "lr_objective.png"} <= {a.path for a in client.list_artifacts(results[1].run_id)}
    tags = client.get_run(results[1].run_id).data.tags
    assert tags["packed"] == "3" and tags["policy"] == "sin2" and tags["momentum"] == "demon"
    assert len({client.get_run(r.run_id).data.tags["pack_id"] for r in results}) == 1


@pytest.mark.slow
def test_packed_pool_sweep_records_three_finished_runs_with_every_step_of_each_policy(tmp_path, store_uri):
    proc = run_cli("+policy=triangle2,sin2,cos", "dataset=synthetic", "trainer.max_steps=20", "trainer.pack=3",
                   "trainer.progress=false", "hydra/launcher=pool", "hydra.launcher.threads_per_job=1", "multirun",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pack of 3" in proc.stdout + proc.stderr
    runs = train_runs(store_uri)
    assert sorted(r.data.tags["policy"] for r in runs) == ["cos", "sin2", "triangle2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["packed"] for r in runs} == {"3"} and len({r.data.tags["pack_id"] for r in runs}) == 1
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1
    client = MlflowClient(store_uri)
    for run in runs:
        policy = check(compose_job("dataset=synthetic", f"+policy={run.data.tags['policy']}")).policy.for_budget(20)
        lr = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "lr"))
        assert [s for s, _ in lr] == list(range(20))
        assert [v for _, v in lr] == pytest.approx([policy(t) for t in range(20)], rel=1e-12)
        loss_steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
        assert loss_steps == list(range(20))
        assert "summary/test_acc" in summary_of(run) and summary_of(run)["summary/steps"] == 20
        assert not any(key.startswith(("summary/", "test/")) for key in run.data.metrics)
        assert {"config.yaml", "lr_curve.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_diverging_copy_fails_and_freezes_while_the_others_finish(store_uri):
    cfgs = [compose_job(*PACKED_TINY, "+policy=fix", f"policy.k0={k0}", "trainer.max_steps=20") for k0 in
            (0.01, 500.0, 0.05)]
    results = run_packed(cfgs)
    assert [r.status for r in results] == ["FINISHED", "FAILED", "FINISHED"]
    client = MlflowClient(store_uri)
    failed = client.get_run(results[1].run_id)
    assert failed.info.status == "FAILED" and failed.data.tags["failure"] == "diverged"
    assert summary_of(failed)["summary/diverged"] == 1 and "summary/test_acc" not in summary_of(failed)
    diverged_step = summary_of(failed)["summary/diverged_step"]
    assert max(m.step for m in client.get_metric_history(results[1].run_id, "lr")) == diverged_step
    for result in (results[0], results[2]):
        run = client.get_run(result.run_id)
        assert summary_of(run)["summary/steps"] == 20 and summary_of(run)["summary/diverged"] == 0
        assert "summary/test_acc" in summary_of(run)


@pytest.mark.parametrize(
    "differing, key",
    [
        (["model=lenet5", "model=mlp"], "model._target_"),
        (["optimizer=momentum", "optimizer=nesterov"], "optimizer.nesterov"),
        (["seed=0", "seed=1"], "dataset.seed"),
        (["trainer.max_steps=20", "trainer.max_steps=30"], "trainer.max_steps"),
    ],
)
def test_a_pack_whose_jobs_differ_beyond_their_policies_is_refused_naming_the_key(store_uri, differing, key):
    cfgs = [compose_job(*PACKED_TINY, "+policy=cos", override) for override in differing]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        run_packed(cfgs)
    assert str(err.value).startswith(key)
    assert train_runs(store_uri) == []


@pytest.mark.parametrize("override, key", [("optimizer=adam", "optimizer"), ("trainer.devices=2", "trainer.devices"),
                                           ("trainer.precision=bf16-mixed", "trainer.precision")])
def test_jobs_a_pack_cannot_train_exactly_are_refused_before_any_run(store_uri, override, key):
    cfgs = [compose_job(*PACKED_TINY, f"+policy={p}", override) for p in ("cos", "sin2")]
    with pytest.raises(ConfigError) as err:
        run_packed(cfgs)
    assert str(err.value).startswith(key)
    assert train_runs(store_uri) == []


def test_different_init_seeds_share_a_pack_once_the_data_order_is_fixed(store_uri):
    cfgs = [compose_job(*PACKED_TINY, "+policy=cos", "dataset.seed=0", f"seed={s}", "trainer.max_steps=3")
            for s in (0, 1)]
    results = run_packed(cfgs)
    assert [r.status for r in results] == ["FINISHED", "FINISHED"]
    first_losses = [MlflowClient(store_uri).get_metric_history(r.run_id, "train/loss")[0].value for r in results]
    assert first_losses[0] != first_losses[1]  # different initial weights, same batches


def test_sweep_jobs_are_grouped_by_everything_but_their_policies_up_to_the_pack_size():
    policies = ("cos", "sin2", "triangle2")
    cfgs = [compose_job("dataset=synthetic", "trainer.pack=2", f"+policy={p}", f"seed={s}")
            for s in (0, 1) for p in policies]
    assert group_jobs(cfgs, resolved, lambda: False) == [[0, 1], [2], [3, 4], [5]]
    adam = [compose_job("dataset=synthetic", "trainer.pack=2", "optimizer=adam", f"+policy={p}") for p in policies]
    assert group_jobs(adam, resolved, lambda: False) == [[0], [1], [2]]  # not SGD: each trains alone


def test_a_sweep_packs_only_when_trainer_pack_asks_and_composes_no_job_config_otherwise():
    def never(overrides):
        raise AssertionError(f"composed {overrides} for a sweep that does not pack")

    base = compose_job("dataset=synthetic")
    assert plan_sweep(base, [["+policy=cos"], ["+policy=sin2"]], never) == [[0], [1]]
    asked = [["+policy=cos", "trainer.pack=2"], ["+policy=sin2", "trainer.pack=2"]]
    assert plan_sweep(base, asked, lambda overrides: compose_job("dataset=synthetic", *overrides)) == [[0, 1]]


def test_auto_packs_only_jobs_that_train_on_cuda():
    cpu = [compose_job("dataset=synthetic", "trainer.pack=auto", f"+policy={p}") for p in ("cos", "sin2")]
    assert group_jobs(cpu, resolved, lambda: True) == [[0], [1]]  # trainer.accelerator=cpu: packing would be slower
    gpu = [compose_job("dataset=synthetic", "trainer.pack=auto", "trainer.accelerator=auto", f"+policy={p}")
           for p in ("cos", "sin2")]
    assert group_jobs(gpu, resolved, lambda: False) == [[0], [1]]
    assert group_jobs(gpu, resolved, lambda: True) == [[0, 1]]


@pytest.mark.parametrize("value", ["0", "fast", "true"])
def test_a_bad_pack_size_is_rejected_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^trainer\.pack"):
        check(compose_job("dataset=synthetic", f"trainer.pack={value}"))


def test_demon_momentum_policy_drives_each_copy_like_the_scheduler_does():
    torch.set_num_threads(1)
    rule, batches = _rule(), _batches(8, torch.float64)
    demons = [Demon(beta_init=0.9, total_steps=8), Demon(beta_init=0.5, total_steps=8)]
    nets = [_lenet(torch.float64) for _ in demons]
    losses, _ = _train_packed([copy.deepcopy(n) for n in nets], POLICIES[:2], rule, batches, momenta=demons)
    for k, (net, policy, demon) in enumerate(zip(nets, POLICIES, demons)):
        reference = _train_torch(net, policy, rule, batches, momentum=demon)
        assert max(abs(a[k] - b) for a, b in zip(losses, reference)) < 1e-10


@pytest.mark.slow
def test_packed_jobs_with_range_test_k_values_read_one_range_test(store_uri):
    quick = ["policy.k_from=range_test", "range_test.seeds=1", "range_test.steps=10", "trainer.max_steps=10"]
    results = run_packed([compose_job(*PACKED_TINY, *quick, f"+policy={p}") for p in ("triangle2", "cos")])
    assert [r.status for r in results] == ["FINISHED", "FINISHED"]
    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("lrbench").experiment_id
    (test,) = [r for r in client.search_runs([experiment]) if r.data.tags.get("kind") == "range_test"]
    k1 = float(test.data.params["result.k1"])
    for result in results:
        run = client.get_run(result.run_id)
        assert run.data.tags["range_test_run"] == test.info.run_id and run.data.tags["packed"] == "2"
        assert max(m.value for m in client.get_metric_history(result.run_id, "lr")) == pytest.approx(k1)
