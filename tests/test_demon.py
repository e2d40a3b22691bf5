"""Demon (decaying momentum) and the other momentum policies: the schedule, the optimizer update it drives
(SGD-momentum and Adam), resuming, the config checks and one tracked run."""

import math

import pytest
import torch
from conftest import TINY, compose_job
from mlflow.tracking import MlflowClient

from pipeline.config.checks import ConfigError, check
from pipeline.policies import CyclicMomentum, Demon, Fix
from pipeline.policies.momentum import for_run
from pipeline.training.scheduler import PolicyScheduler

FRACTIONS = (0, 0.25, 0.5, 0.75, 0.9, 0.95, 1)
# notes seeds_methods.md section A.1: beta_t at t/T, three decimals.
GOLDEN = {
    0.9: (0.900, 0.871, 0.818, 0.692, 0.474, 0.310, 0.0),
    0.95: (0.950, 0.934, 0.905, 0.826, 0.655, 0.487, 0.0),
}
GOLDEN_MULTIPLIER_09 = (10, 7.75, 5.5, 3.25, 1.9, 1.45, 1)  # 1/(1-beta_t) for beta_init 0.9


def formula(beta_init: float, t: int, total: int) -> float:
    p = 1 - t / total
    return beta_init * p / ((1 - beta_init) + beta_init * p)


# -- the schedule ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta_init", sorted(GOLDEN))
def test_demon_matches_the_golden_table(beta_init):
    demon = Demon(beta_init, total_steps=1000)
    values = [demon(round(f * 1000)) for f in FRACTIONS]
    assert values == pytest.approx(GOLDEN[beta_init], abs=5e-4)


def test_demon_step_multiplier_falls_linearly_from_ten_to_one():
    demon = Demon(0.9, total_steps=1000)
    multipliers = [1 / (1 - demon(round(f * 1000))) for f in FRACTIONS]
    assert multipliers == pytest.approx(GOLDEN_MULTIPLIER_09, rel=1e-9)


@pytest.mark.parametrize("beta_init, total", [(0.9, 37), (0.95, 860), (0.5, 3), (0.0, 10)])
def test_demon_follows_the_formula_at_every_step(beta_init, total):
    demon = Demon(beta_init, total_steps=total)
    for t in range(total + 1):
        assert demon(t) == pytest.approx(formula(beta_init, t, total), rel=1e-12, abs=1e-15)
        if beta_init:  # beta/(1-beta) = p * beta_init/(1-beta_init): a gradient's total contribution decays linearly
            ratio = demon(t) / (1 - demon(t))
            assert ratio == pytest.approx((1 - t / total) * beta_init / (1 - beta_init), rel=1e-12, abs=1e-15)


def test_demon_caps_t_at_total_steps_so_momentum_stays_zero_and_never_negative():
    demon = Demon(0.9, total_steps=100)
    assert demon(100) == 0.0
    assert [demon(t) for t in (101, 150, 10**9)] == [0.0, 0.0, 0.0]


def test_demon_with_start_frac_holds_beta_init_then_decays_to_zero_at_total_steps():
    demon = Demon(0.9, total_steps=100, start_frac=0.25)
    assert [demon(t) for t in (0, 10, 25)] == [0.9, 0.9, 0.9]
    assert demon(26) < 0.9
    # Halfway through the decay (t = 25 + 75/2) p = 0.5, as at t/T = 0.5 without a delay.
    assert Demon(0.9, total_steps=200, start_frac=0.25)(125) == pytest.approx(formula(0.9, 1, 2), rel=1e-12)
    assert demon(100) == 0.0


def test_unbound_demon_raises_and_says_how_to_bind_it():
    with pytest.raises(ValueError, match=r"total_steps is unset.*bound\(total_steps\)"):
        Demon(0.9)(0)


def test_bound_returns_a_bound_copy_and_leaves_the_original_unbound():
    demon = Demon(0.95, start_frac=0.1)
    bound = demon.bound(500)
    assert bound == Demon(0.95, total_steps=500, start_frac=0.1)
    assert demon.total_steps is None


def test_for_run_binds_an_unbound_demon_and_keeps_an_explicit_total_steps():
    assert for_run(Demon(0.9), 300).total_steps == 300
    assert for_run(Demon(0.9, total_steps=1000), 300).total_steps == 1000  # an override, e.g. a resumed run
    cyclic = CyclicMomentum(0.85, 0.95, 10)
    assert for_run(cyclic, 300) is cyclic
    assert for_run(None, 300) is None


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"beta_init": 1.0}, "beta_init"),
        ({"beta_init": -0.1}, "beta_init"),
        ({"beta_init": "0.9"}, "beta_init"),
        ({"beta_init": True}, "beta_init"),
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 10.5}, "total_steps"),
        ({"start_frac": 1.0}, "start_frac"),
        ({"start_frac": -0.5}, "start_frac"),
        ({"first_moment": "sum"}, "first_moment"),
    ],
)
def test_demon_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError) as err:
        Demon(**kwargs)
    assert str(err.value).startswith(field)


def test_describe_names_every_field_for_the_run_tag():
    assert Demon(0.9, total_steps=860).describe() == (
        "momPolicy_DEMON+beta_init_0.9+total_steps_860+start_frac_0.0+first_moment_ema"
    )
    assert CyclicMomentum(0.85, 0.95, 5).describe() == "momPolicy_CYCLIC+m0_0.85+m1_0.95+l_5"


def test_cyclic_momentum_is_high_where_a_triangle_lr_of_the_same_l_is_low():
    cyclic = CyclicMomentum(m0=0.85, m1=0.95, l=10)
    assert cyclic(0) == cyclic(20) == cyclic(40) == pytest.approx(0.95)
    assert cyclic(10) == cyclic(30) == pytest.approx(0.85)
    assert cyclic(5) == pytest.approx(0.90)
    with pytest.raises(ValueError, match="^m1 must be >= m0"):
        CyclicMomentum(m0=0.95, m1=0.85, l=10)


# -- the optimizer update --------------------------------------------------------------------------------------


def _quadratic():
    """f(x) = 0.5 x^T A x - b^T x in float64, ill-conditioned enough that momentum matters."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor([10.0, 3.0, 1.0, 0.1], dtype=torch.float64)) @ q.T
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    x0 = torch.randn(4, generator=gen, dtype=torch.float64)
    return a, b, x0


def _demon_sgd(lr: float, demon: Demon, steps: int, x0: torch.Tensor, a, b, optimizer=None, scheduler=None):
    param = torch.nn.Parameter(x0.clone()) if optimizer is None else optimizer.param_groups[0]["params"][0]
    if optimizer is None:
        # The optimizer's own momentum (0.9) is replaced by the policy before every step.
        optimizer = torch.optim.SGD([param], lr=lr, momentum=0.9, dampening=0, nesterov=False)
        scheduler = PolicyScheduler(optimizer, Fix(lr), momentum=demon)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * param @ a @ param - b @ param).backward()
        optimizer.step()
        scheduler.step()
    return param.detach().clone(), optimizer, scheduler


def test_demon_sgdm_through_the_scheduler_is_the_papers_algorithm_1():
    a, b, x0 = _quadratic()
    lr, steps = 0.05, 50
    demon = Demon(0.9, total_steps=steps)
    # Algorithm 1: theta_{t+1} = theta_t - eta g_t + beta_t v_t;  v_{t+1} = beta_t v_t - eta g_t;  v_0 = 0.
    theta, v = x0.clone(), torch.zeros_like(x0)
    param = torch.nn.Parameter(x0.clone())
    optimizer = torch.optim.SGD([param], lr=lr, momentum=0.9)
    scheduler = PolicyScheduler(optimizer, Fix(lr), momentum=demon)
    for t in range(steps):
        g = a @ theta - b
        theta, v = theta - lr * g + demon(t) * v, demon(t) * v - lr * g
        optimizer.zero_grad()
        (0.5 * param @ a @ param - b @ param).backward()
        optimizer.step()
        scheduler.step()
        assert torch.max(torch.abs(param.detach() - theta)).item() < 1e-9, t
    assert torch.max(torch.abs(theta - x0)).item() > 0.1  # it moved: the comparison is not vacuous


def test_adam_beta1_follows_demon_as_an_ema_with_bias_correction_and_beta2_is_kept():
    a, b, x0 = _quadratic()
    lr, steps, beta2, eps = 0.01, 40, 0.999, 1e-8
    demon = Demon(0.9, total_steps=steps)
    param = torch.nn.Parameter(x0.clone())
    optimizer = torch.optim.Adam([param], lr=lr, betas=(0.9, beta2), eps=eps)
    scheduler = PolicyScheduler(optimizer, Fix(lr), momentum=demon)
    theta, m, s = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    for t in range(steps):
        assert optimizer.param_groups[0]["betas"] == (pytest.approx(demon(t), rel=1e-15), beta2)
        # first_moment=ema: m = beta_t m + (1 - beta_t) g, corrected by 1 - beta_t**(t+1) (torch's Adam, every
        # third-party Demon Adam).
        g = a @ theta - b
        beta = demon(t)
        m = beta * m + (1 - beta) * g
        s = beta2 * s + (1 - beta2) * g * g
        m_hat, s_hat = m / (1 - beta ** (t + 1)), s / (1 - beta2 ** (t + 1))
        theta = theta - lr * m_hat / (s_hat.sqrt() + eps)
        optimizer.zero_grad()
        (0.5 * param @ a @ param - b @ param).backward()
        optimizer.step()
        scheduler.step()
        assert torch.max(torch.abs(param.detach() - theta)).item() < 1e-9, t


def test_scheduler_refuses_a_momentum_policy_for_an_optimizer_without_momentum():
    optimizer = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(2))], lr=0.01)
    with pytest.raises(ValueError, match="Adagrad has neither"):
        PolicyScheduler(optimizer, Fix(0.01), momentum=Demon(0.9, total_steps=10))


def test_without_a_momentum_policy_the_optimizers_momentum_is_untouched():
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.7)
    scheduler = PolicyScheduler(optimizer, Fix(0.1))
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["momentum"] == 0.7


# -- resume ----------------------------------------------------------------------------------------------------


def test_resumed_scheduler_continues_demon_at_the_saved_step_and_matches_an_uninterrupted_run():
    a, b, x0 = _quadratic()
    lr, total, k = 0.05, 30, 11
    demon = Demon(0.9, total_steps=total)
    straight, _, _ = _demon_sgd(lr, demon, total, x0, a, b)

    _, optimizer, scheduler = _demon_sgd(lr, demon, k, x0, a, b)
    saved_param = optimizer.param_groups[0]["params"][0].detach().clone()
    saved_opt, saved_sched = optimizer.state_dict(), scheduler.state_dict()

    param = torch.nn.Parameter(saved_param)
    fresh_opt = torch.optim.SGD([param], lr=lr, momentum=0.9)
    fresh = PolicyScheduler(fresh_opt, Fix(lr), momentum=demon)
    fresh_opt.load_state_dict(saved_opt)
    fresh.load_state_dict(saved_sched)
    assert fresh.last_epoch == k and fresh.momentum == demon
    assert fresh_opt.param_groups[0]["momentum"] == demon(k)
    seen = []
    for _ in range(total - k):
        seen.append(fresh_opt.param_groups[0]["momentum"])
        fresh_opt.zero_grad()
        (0.5 * param @ a @ param - b @ param).backward()
        fresh_opt.step()
        fresh.step()
    assert seen == [demon(t) for t in range(k, total)]
    assert torch.equal(param.detach(), straight)


def test_loading_only_the_scheduler_state_writes_the_momentum_of_the_restored_step():
    demon = Demon(0.9, total_steps=20)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    scheduler = PolicyScheduler(optimizer, Fix(0.1), momentum=demon)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    fresh_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    fresh = PolicyScheduler(fresh_opt, Fix(0.1), momentum=demon)
    assert fresh_opt.param_groups[0]["momentum"] == demon(0)
    fresh.load_state_dict(scheduler.state_dict())
    assert fresh_opt.param_groups[0]["momentum"] == demon(7)


def test_scheduler_past_total_steps_keeps_momentum_at_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    scheduler = PolicyScheduler(optimizer, Fix(0.1), momentum=Demon(0.9, total_steps=5))
    seen = []
    for _ in range(8):
        seen.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    assert seen[5:] == [0.0, 0.0, 0.0] and min(seen) >= 0


# -- config and one tracked run --------------------------------------------------------------------------------


def test_momentum_none_builds_no_policy_and_demon_builds_an_unbound_one():
    assert check(compose_job(*TINY)).momentum is None
    job = check(compose_job(*TINY, "momentum=demon", "momentum.beta_init=0.95"))
    assert job.momentum == Demon(0.95) and job.choices["momentum"] == "demon"


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["optimizer=adagrad", "momentum=demon"], "momentum: momentum=demon"),
        (["optimizer=adadelta", "momentum=cyclic"], "momentum: momentum=cyclic"),
        (["momentum=demon", "momentum.beta_init=1.5"], "momentum.beta_init"),
        (["momentum=demon", "momentum.start_frac=1"], "momentum.start_frac"),
        (["momentum=demon", "momentum.first_moment=sum"], "momentum.first_moment"),
        (["momentum=demon", "momentum.total_steps=0"], "momentum.total_steps"),
    ],
)
def test_bad_momentum_config_is_a_config_error_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        check(compose_job(*TINY, *overrides))
    assert str(err.value).startswith(key)


def test_adagrad_error_says_which_optimizers_have_momentum():
    with pytest.raises(ConfigError, match=r"optimizer=adagrad \(Adagrad\) has neither.*momentum=none"):
        check(compose_job(*TINY, "optimizer=adagrad", "momentum=demon"))


@pytest.mark.parametrize("method, optimizer", [("demon_sgdm", "momentum"), ("demon_adam", "adam")])
def test_demon_methods_compose_to_a_constant_lr_with_demon_momentum(method, optimizer):
    job = check(compose_job(*TINY, f"+method={method}"))
    assert job.choices["optimizer"] == optimizer and job.choices["momentum"] == "demon"
    assert job.policy_name == "fix" and job.policy.base(0) == job.policy.base(999)
    assert isinstance(job.momentum, Demon)


def test_tracked_run_logs_demon_momentum_at_every_step_with_t_equal_to_the_runs_steps(store_uri):
    from pipeline.training.job import run_job

    result = run_job(compose_job(*TINY, "momentum=demon", "+policy=fix"))
    assert result.status == "FINISHED", result.failure
    client = MlflowClient(store_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags["momentum"] == "demon"
    assert "total_steps_30" in run.data.tags["momentum_spec"]
    history = sorted((m.step, m.value) for m in client.get_metric_history(result.run_id, "momentum"))
    assert [s for s, _ in history] == list(range(30))
    demon = Demon(0.9, total_steps=30)
    assert [v for _, v in history] == pytest.approx([demon(t) for t in range(30)], rel=1e-6)
    assert history[-1][1] == pytest.approx(formula(0.9, 29, 30)) and not math.isclose(history[-1][1], 0.9)


def test_lightning_resume_from_a_checkpoint_continues_demon_at_the_saved_step(tmp_path):
    import functools

    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from pipeline.training.module import PolicyClassifier

    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 1, 4, 4, generator=gen), torch.randint(0, 3, (64,), generator=gen))
    loader = DataLoader(data, batch_size=8)  # 8 optimizer steps per epoch, so the resume lands mid-epoch
    demon = Demon(0.9, total_steps=20)

    class Seen(L.Callback):
        def __init__(self):
            self.momentum = {}

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.momentum[trainer.global_step] = optimizer.param_groups[0]["momentum"]

    def fit(max_steps, ckpt_path=None):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        optimizer = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)
        module = PolicyClassifier(net, optimizer, Fix(0.05), 3, momentum=demon)
        seen = Seen()
        trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[seen])
        trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
        return trainer, seen.momentum

    trainer, first = fit(11)
    trainer.save_checkpoint(tmp_path / "k11.ckpt")  # policies are not pickled: the checkpoint loads weights-only
    _, resumed = fit(20, str(tmp_path / "k11.ckpt"))
    assert sorted(first) == list(range(11)) and sorted(resumed) == list(range(11, 20))
    assert [resumed[t] for t in range(11, 20)] == [demon(t) for t in range(11, 20)]
