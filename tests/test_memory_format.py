"""trainer.memory_format: conv nets train channels-last by default (oneDNN's fast layout on CPU), with the same
maths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, compose_job

from pipeline.config.checks import check
from pipeline.training.assemble import build_training, use_channels_last
from pipeline.training.models import MLP, LeNet5
from pipeline.training.module import PolicyClassifier


def conv_weights(net: torch.nn.Module) -> list[torch.Tensor]:
    """4-d weights with more than one input channel (with one, both layouts have the same strides)."""
    return [p for p in net.parameters() if p.dim() == 4 and p.shape[1] > 1]


@pytest.mark.parametrize(
    ("memory_format", "model", "expected"),
    [("auto", "lenet5", True), ("auto", "mlp", False), ("contiguous", "lenet5", False),
     ("channels_last", "lenet5", True)],
)
def test_the_job_lays_out_its_net_as_trainer_memory_format_says(memory_format, model, expected):
    cfg = compose_job(*TINY, "+policy=fix", f"model={model}", f"trainer.memory_format={memory_format}")
    training = build_training(check(cfg))
    assert training.module.channels_last is expected
    weights = conv_weights(training.module.net)
    assert weights or model == "mlp"
    for weight in weights:
        assert weight.is_contiguous(memory_format=torch.channels_last) is expected


def test_auto_picks_channels_last_only_for_nets_with_2d_convolutions():
    assert use_channels_last("auto", LeNet5(in_channels=1, num_classes=10, image_size=28))
    assert not use_channels_last("auto", MLP(in_channels=1, num_classes=10, image_size=28))


def test_channels_last_and_contiguous_give_the_same_losses_and_gradients_in_float64():
    torch.manual_seed(0)
    net = LeNet5(in_channels=3, num_classes=10, image_size=32).double()
    twin = LeNet5(in_channels=3, num_classes=10, image_size=32).double()
    twin.load_state_dict(net.state_dict())
    x, y = torch.randn(16, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (16,))
    results = []
    for module in (PolicyClassifier(net, torch.optim.SGD, lambda t: 0.01, 10),
                   PolicyClassifier(twin, torch.optim.SGD, lambda t: 0.01, 10, channels_last=True)):
        loss = F.cross_entropy(module(x), y)
        loss.backward()
        results.append((loss.detach(), [p.grad.contiguous() for p in module.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert conv_weights(twin)[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
