"""The networks the study trains: LRBench's Caffe LeNet-5 and CIFAR-10 "full" net, a CIFAR ResNet, an MLP, ResNet-18
for images; a feed-forward net for feature vectors (regression) and a character-level GRU (language modelling).

The image nets take ``in_channels``, ``num_classes`` and ``image_size`` (pixels per side, square images) from the
data set, the others ``input_shape``, ``output_size`` and ``vocab_size``, plus their own options;
``conf/model/<name>.yaml`` holds those options with ``_partial_: true`` and the job passes the data's shapes that
the constructor's signature takes (:mod:`pipeline.training.shapes`). Flattened feature sizes are computed from the
shapes, never hard-coded. Weights use PyTorch's default initialisation (Kaiming for the ResNets, as in He et al.),
not Caffe's Gaussian fillers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.arguments import check_int


def _check_shape_args(in_channels: object, num_classes: object, image_size: object) -> None:
    check_int("in_channels", in_channels, 1)
    check_int("image_size", image_size, 1)
    check_int("num_classes", num_classes, 2)


def _out_size(size: int, kernel: int, stride: int = 1, padding: int = 0, ceil_mode: bool = False) -> int:
    """Side length after a convolution or pooling layer, by PyTorch's (and Caffe's) rule.

    In ceil mode a last window that would start in the right padding is dropped, as both frameworks do.
    """
    span = size + 2 * padding - kernel
    if span < 0:
        return 0
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _check_feature_size(model: str, image_size: int, size: int) -> int:
    if size < 1:
        raise ValueError(f"image_size={image_size} is too small for {model}: its feature map shrinks to nothing")
    return size


class LeNet5(nn.Module):
    """Caffe's MNIST LeNet (``lenet_train_test.prototxt``), the net LRBench uses for MNIST.

    conv 20@5x5 -> maxpool 2/2 -> conv 50@5x5 -> maxpool 2/2 -> fc 500 -> ReLU -> fc num_classes.
    Faithful to Caffe: there is no activation after the convolutions (the only ReLU follows fc 500), and pooling
    rounds up (ceil mode). 431,080 parameters for 1x28x28 inputs and 10 classes.
    """

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        _check_shape_args(in_channels, num_classes, image_size)
        size = _out_size(_out_size(image_size, 5), 2, 2, ceil_mode=True)
        size = _out_size(_out_size(size, 5), 2, 2, ceil_mode=True)
        size = _check_feature_size("LeNet5", image_size, size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, kernel_size=5),
            nn.MaxPool2d(2, stride=2, ceil_mode=True),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.MaxPool2d(2, stride=2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(50 * size * size, 500),
            nn.ReLU(inplace=True),
            nn.Linear(500, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class WithinChannelLRN(nn.Module):
    """Caffe's LRN with ``norm_region: WITHIN_CHANNEL``: ``x / (1 + alpha * mean(x^2 over a k x k window))^beta``.

    Caffe builds it as square -> average pool (k x k, stride 1, zero padding (k-1)/2, padding counted in the mean)
    -> power; ``torch.nn.LocalResponseNorm`` normalises *across* channels instead, so it is not a substitute.
    """

    def __init__(self, local_size: int = 3, alpha: float = 5e-5, beta: float = 0.75) -> None:
        super().__init__()
        if check_int("local_size", local_size, 1) % 2 == 0:
            raise ValueError(f"local_size must be odd (Caffe requires it), got {local_size}")
        self.local_size, self.alpha, self.beta = local_size, alpha, beta

    def forward(self, x: Tensor) -> Tensor:
        mean_sq = F.avg_pool2d(
            x * x, self.local_size, stride=1, padding=(self.local_size - 1) // 2, count_include_pad=True
        )
        return x * (1.0 + self.alpha * mean_sq).pow(-self.beta)

    def extra_repr(self) -> str:
        return f"local_size={self.local_size}, alpha={self.alpha}, beta={self.beta}"


class CNN3(nn.Module):
    """Caffe's ``cifar10_full`` net, the three-convolution CNN LRBench uses for CIFAR-10.

    conv 32@5x5 pad 2 -> maxpool 3/2 -> ReLU -> LRN -> conv 32@5x5 pad 2 -> ReLU -> avgpool 3/2 -> LRN
    -> conv 64@5x5 pad 2 -> ReLU -> avgpool 3/2 -> fc num_classes. Pooling rounds up as Caffe's does (32 -> 16 -> 8
    -> 4); LRN is Caffe's within-channel kind, local_size 3, alpha 5e-5, beta 0.75.
    """

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        _check_shape_args(in_channels, num_classes, image_size)
        size = image_size
        for _ in range(3):  # each 5x5 pad-2 conv keeps the size; each 3/2 pool (ceil) about halves it
            size = _out_size(size, 3, 2, ceil_mode=True)
        size = _check_feature_size("CNN3", image_size, size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.ReLU(inplace=True),
            WithinChannelLRN(3, alpha=5e-5, beta=0.75),
            nn.Conv2d(32, 32, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(3, stride=2, ceil_mode=True),
            WithinChannelLRN(3, alpha=5e-5, beta=0.75),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(3, stride=2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * size * size, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut, or a 1x1 conv + BN projection where the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet of He et al. 2016 (section 4.2): depth = 6n + 2, default 20 (n = 3).

    3x3 conv 16 -> three stages of n basic blocks with 16, 32, 64 channels (stride 2 at the first block of stages 2
    and 3) -> global average pool -> fc. Shortcuts are option B (1x1 conv + BN projection where the shape changes,
    identity elsewhere) rather than the paper's option A (zero padding): a plain module, and only 2,752 extra
    parameters (269,722 -> 272,474 at depth 20, 10 classes).
    """

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, depth: int = 20) -> None:
        super().__init__()
        _check_shape_args(in_channels, num_classes, image_size)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}")
        blocks_per_stage = (depth - 2) // 6
        self.depth = depth
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        in_planes = 16
        for stage, planes in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.stages = nn.Sequential(*layers)
        # Global average pooling makes the head independent of image_size.
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)))


class FeedForward(nn.Module):
    """Flatten -> (fc -> ReLU) per hidden width -> fc output_size: for feature vectors of any shape (tabular data,
    regression); :class:`MLP` is the same net for images."""

    def __init__(self, *, input_shape: Sequence[int], output_size: int, hidden: Sequence[int] = (32,)) -> None:
        super().__init__()
        shape = list(input_shape)
        if not shape or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise ValueError(f"input_shape must be a list of sizes >= 1, got {input_shape!r}")
        check_int("output_size", output_size, 1)
        widths = list(hidden)  # Hydra passes a ListConfig
        for width in widths:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ValueError(f"hidden must be a list of integers >= 1, got {widths!r}")
        layers: list[nn.Module] = [nn.Flatten()]
        in_features = math.prod(shape)
        for width in widths:
            layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
            in_features = width
        layers.append(nn.Linear(in_features, output_size))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLP(FeedForward):
    """Flatten -> (fc -> ReLU) per hidden width -> fc num_classes, for images."""

    def __init__(
        self, *, in_channels: int, num_classes: int, image_size: int, hidden: Sequence[int] = (256, 128)
    ) -> None:
        _check_shape_args(in_channels, num_classes, image_size)
        super().__init__(input_shape=(in_channels, image_size, image_size), output_size=num_classes, hidden=hidden)


def resnet18(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """torchvision's ResNet-18, untrained, with the first conv taking ``in_channels``.

    For images of at most 64 pixels a side the ImageNet stem (7x7 stride-2 conv + max pool, 4x downsampling) would
    leave CIFAR's 32x32 at 1x1 before the last stage, so it gets the usual CIFAR stem instead: 3x3 stride-1 conv and
    no max pool.
    """
    from torchvision.models import resnet18 as tv_resnet18  # import here: torchvision costs ~3 s to import

    _check_shape_args(in_channels, num_classes, image_size)
    model = tv_resnet18(weights=None, num_classes=num_classes)
    if image_size <= 64:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision does
    return model


class CharGRU(nn.Module):
    """A character-level language model: embedding -> GRU -> fc to one logit per vocabulary entry at every position.

    Input ``[batch, seq_len]`` int64 token ids, output ``[batch, seq_len, output_size]``. 103,424 parameters at the
    defaults with a vocabulary of 256 (bytes).
    """

    def __init__(self, *, vocab_size: int, output_size: int, embed_dim: int = 32, hidden_size: int = 128,
                 num_layers: int = 1) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("output_size", output_size), ("embed_dim", embed_dim),
                            ("hidden_size", hidden_size), ("num_layers", num_layers)):
            check_int(name, value, 1)
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = nn.GRU(embed_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self.embed(x))
        return self.head(out)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["CNN3", "CharGRU", "FeedForward", "LeNet5", "MLP", "ResNet20", "WithinChannelLRN", "count_parameters",
           "resnet18"]
