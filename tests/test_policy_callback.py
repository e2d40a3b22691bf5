"""Any policy on a user's own loop or Lightning Trainer: the scheduler and the callback set lr = policy(t), and
relative mode keeps each parameter group's ratio to its base LR."""

import pytest
import torch


def test_relative_mode_keeps_each_groups_ratio_to_its_base_lr():
    from pipeline.policies import Triangle2
    from pipeline.training.scheduler import PolicyScheduler

    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": [net.weight], "lr": 0.1}, {"params": [net.bias], "lr": 0.01}])
    policy = Triangle2(k0=0.01, k1=0.06, l=10)
    scheduler = PolicyScheduler(optimizer, policy, relative=True)
    for t in range(25):
        head, backbone = (g["lr"] for g in optimizer.param_groups)
        assert head == pytest.approx(0.1 * policy(t) / policy(0)) and backbone == pytest.approx(head / 10)
        optimizer.step()
        scheduler.step()


def test_relative_mode_refuses_a_policy_that_starts_at_zero():
    from pipeline.policies import Fix, Warmup
    from pipeline.training.policy_callback import PolicyCallback

    with pytest.raises(ValueError, match="policy\\(0\\) is 0"):
        PolicyCallback(Warmup(Fix(k0=0.1), warmup_steps=5, start_lr=0.0), relative=True)


def test_the_policy_callback_sets_every_groups_lr_on_a_plain_lightning_trainer():
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from pipeline.policies import Step
    from pipeline.training.policy_callback import PolicyCallback

    seen = []

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            seen.append([g["lr"] for g in self.trainer.optimizers[0].param_groups])
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD([{"params": [self.net.weight], "lr": 1.0}, {"params": [self.net.bias], "lr": 0.5}])

    policy = Step(k0=0.1, gamma=0.5, l=3)
    loader = DataLoader(TensorDataset(torch.randn(40, 3)), batch_size=4)
    trainer = L.Trainer(max_steps=8, callbacks=[PolicyCallback(policy, relative=True)], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Module(), loader)
    assert [lrs[0] for lrs in seen] == pytest.approx([policy(t) / policy(0) for t in range(8)])
    assert [lrs[1] for lrs in seen] == pytest.approx([0.5 * policy(t) / policy(0) for t in range(8)])
