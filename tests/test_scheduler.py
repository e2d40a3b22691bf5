"""The one adapter between a policy and a torch optimizer."""

import pytest
import torch

from pipeline.policies import Demon, NStep, Triangle2
from pipeline.training.scheduler import PolicyScheduler, rates_at


def _sgd():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=123.0, momentum=0.9)


def test_optimizer_uses_policy_value_at_every_step():
    policy = Triangle2(k0=0.01, k1=0.06, l=5)
    optimizer = _sgd()
    scheduler = PolicyScheduler(optimizer, policy)
    seen = []
    for _ in range(30):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([policy(t) for t in range(30)], rel=1e-12)


def test_resumed_scheduler_continues_the_policy_at_the_saved_step():
    policy = NStep(k0=0.1, gamma=0.5, l=[3, 6])
    optimizer = _sgd()
    scheduler = PolicyScheduler(optimizer, policy)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    saved_opt, saved_sched = optimizer.state_dict(), scheduler.state_dict()
    fresh_opt = _sgd()
    fresh = PolicyScheduler(fresh_opt, policy)
    fresh_opt.load_state_dict(saved_opt)
    fresh.load_state_dict(saved_sched)
    values = []
    for _ in range(4):
        values.append(fresh_opt.param_groups[0]["lr"])
        fresh_opt.step()
        fresh.step()
    assert values == pytest.approx([policy(t) for t in range(4, 8)])


def test_scheduler_rejects_a_non_callable_policy():
    with pytest.raises(TypeError, match="policy must be callable"):
        PolicyScheduler(_sgd(), 0.1)


def test_scheduler_sets_exactly_the_rates_of_rates_at_the_rule_packed_copies_share():
    policy, demon = Triangle2(k0=0.01, k1=0.06, l=5), Demon(beta_init=0.9, total_steps=12)
    optimizer = _sgd()
    scheduler = PolicyScheduler(optimizer, policy, momentum=demon)
    for t in range(12):
        group = optimizer.param_groups[0]
        assert (group["lr"], group["momentum"]) == rates_at(policy, demon, t)
        optimizer.step()
        scheduler.step()
    assert rates_at(policy, None, 3) == (policy(3), None)  # no momentum policy: the optimizer keeps its own
