"""Models: every config builds for every data set shape, and the LRBench nets match their Caffe originals."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from pipeline.training.models import (
    CNN3,
    MLP,
    CharGRU,
    FeedForward,
    LeNet5,
    ResNet20,
    WithinChannelLRN,
    count_parameters,
    resnet18,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
# The image classifiers; feedforward (feature vectors) and char_gru (text) are built for their own data below.
OTHER_MODELS = {"feedforward", "char_gru"}
MODEL_CONFIGS = sorted(p for p in (CONF / "model").glob("*.yaml") if p.stem not in OTHER_MODELS)
SHAPES = {  # Fashion-MNIST / MNIST and CIFAR-10
    "grey28": dict(in_channels=1, image_size=28, num_classes=10),
    "rgb32": dict(in_channels=3, image_size=32, num_classes=10),
}


def test_the_model_group_holds_the_five_image_models_and_one_each_for_vectors_and_text():
    assert {p.stem for p in MODEL_CONFIGS} == {"lenet5", "cnn3", "resnet20", "mlp", "resnet18"}
    assert {p.stem for p in (CONF / "model").glob("*.yaml")} - {p.stem for p in MODEL_CONFIGS} == OTHER_MODELS


def test_feedforward_flattens_any_input_shape_to_output_size_values():
    net = FeedForward(input_shape=(3, 4), output_size=2, hidden=[5])
    assert net(torch.randn(7, 3, 4)).shape == (7, 2)
    assert count_parameters(net) == 12 * 5 + 5 + 5 * 2 + 2


def test_char_gru_outputs_one_logit_per_vocabulary_entry_at_every_position_of_integer_tokens():
    net = CharGRU(vocab_size=256, output_size=256, hidden_size=16)
    assert net(torch.randint(0, 256, (2, 9))).shape == (2, 9, 256)
    with pytest.raises(RuntimeError):
        net(torch.rand(2, 9))  # an embedding takes integer ids only: the data must not turn them into floats


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_every_model_config_builds_for_the_data_set_shape_and_outputs_one_logit_per_class(config, shape):
    factory = instantiate(OmegaConf.load(config))
    net = factory(**shape).eval()
    with torch.no_grad():
        logits = net(torch.randn(2, shape["in_channels"], shape["image_size"], shape["image_size"]))
    assert logits.shape == (2, shape["num_classes"])
    assert torch.isfinite(logits).all()


def test_lenet5_has_the_caffe_lenet_parameter_count():
    # By hand, 1x28x28 input: conv1 20*(1*5*5) + 20 = 520; 28 -> 24 -> pool 12; conv2 50*(20*5*5) + 50 = 25,050;
    # 12 -> 8 -> pool 4; ip1 (50*4*4)*500 + 500 = 400,500; ip2 500*10 + 10 = 5,010. Total 431,080.
    net = LeNet5(in_channels=1, num_classes=10, image_size=28)
    assert count_parameters(net) == 520 + 25_050 + 400_500 + 5_010 == 431_080


def test_lenet5_has_no_activation_after_its_convolutions_as_in_caffe():
    net = LeNet5(in_channels=1, num_classes=10, image_size=28)
    assert not any(isinstance(m, nn.ReLU) for m in net.features)
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == 1


def test_lenet5_feature_size_follows_image_size():
    # 32 -> 28 -> 14 -> 10 -> 5: ip1 takes 50*5*5 inputs (no hard-coded 28).
    net = LeNet5(in_channels=3, num_classes=10, image_size=32)
    assert net.classifier[1].in_features == 50 * 5 * 5


def test_cnn3_pools_like_caffe_cifar10_full_down_to_4x4():
    # Caffe rounds pooled sizes up: 32 -> 16 -> 8 -> 4, so ip1 takes 64*4*4 = 1,024 inputs as in cifar10_full.
    net = CNN3(in_channels=3, num_classes=10, image_size=32)
    assert net.classifier[1].in_features == 64 * 4 * 4
    assert net.features(torch.zeros(1, 3, 32, 32)).shape == (1, 64, 4, 4)


def test_within_channel_lrn_matches_caffe_formula():
    # Caffe WITHIN_CHANNEL: scale = 1 + alpha / n^2 * (sum of x^2 over the zero-padded n x n window);
    # y = x * scale^-beta.
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5) * 30
    lrn = WithinChannelLRN(3, alpha=5e-5, beta=0.75)
    padded = nn.functional.pad(x * x, (1, 1, 1, 1))
    expected = torch.empty_like(x)
    for c in range(2):
        for i in range(4):
            for j in range(5):
                window_sum = padded[0, c, i : i + 3, j : j + 3].sum()
                expected[0, c, i, j] = x[0, c, i, j] * (1 + 5e-5 / 9 * window_sum) ** -0.75
    torch.testing.assert_close(lrn(x), expected)


def test_resnet20_has_about_0_27m_parameters():
    net = ResNet20(in_channels=3, num_classes=10, image_size=32)
    # He et al. report 0.27M (option A, 269,722); option B's two projections add 576 + 2,176.
    assert count_parameters(net) == 269_722 + 576 + 2_176 == 272_474


def test_resnet20_depth_sets_blocks_per_stage():
    net = ResNet20(in_channels=3, num_classes=10, image_size=32, depth=32)
    assert len(net.stages) == 3 * 5  # (32 - 2) / 6 = 5 blocks in each of 3 stages


def test_resnet20_uses_projection_shortcuts_only_where_the_shape_changes():
    net = ResNet20(in_channels=3, num_classes=10, image_size=32)
    projections = [i for i, block in enumerate(net.stages) if not isinstance(block.shortcut, nn.Identity)]
    assert projections == [3, 6]  # first block of stages 2 and 3


def test_resnet18_gets_the_cifar_stem_for_small_images_and_the_imagenet_stem_for_large():
    small = resnet18(in_channels=1, num_classes=10, image_size=32)
    assert small.conv1.in_channels == 1 and small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    large = resnet18(in_channels=3, num_classes=100, image_size=224)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d) and large.fc.out_features == 100


def test_mlp_hidden_widths_set_its_layers():
    net = MLP(in_channels=3, num_classes=5, image_size=8, hidden=[7])
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3 * 8 * 8, 7), (7, 5)]


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: LeNet5(in_channels=0, num_classes=10, image_size=28), "in_channels"),
        (lambda: LeNet5(in_channels=1, num_classes=1, image_size=28), "num_classes"),
        (lambda: LeNet5(in_channels=1, num_classes=10, image_size=8), "image_size"),
        (lambda: CNN3(in_channels=3, num_classes=10, image_size=True), "image_size"),
        (lambda: ResNet20(in_channels=3, num_classes=10, image_size=32, depth=21), "depth"),
        (lambda: MLP(in_channels=1, num_classes=10, image_size=28, hidden=[256, 0]), "hidden"),
        (lambda: resnet18(in_channels=3, num_classes=10, image_size=0), "image_size"),
    ],
    ids=["in_channels", "num_classes", "image_size_too_small", "image_size_bool", "depth", "hidden", "resnet18"],
)
def test_bad_model_argument_raises_value_error_naming_it(build, name):
    with pytest.raises(ValueError, match=name):
        build()
