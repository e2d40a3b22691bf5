"""Your own model and data, as the pipeline takes them: a plain ``torch.nn.Module`` and a map-style ``Dataset``.

Nothing here imports the pipeline. The model's constructor names the data's shapes it needs (the pipeline passes
those its signature takes: ``input_shape``, ``output_size``, and for images ``in_channels``, ``image_size``,
``num_classes``); the Dataset returns ``(x, y)`` pairs and says how many classes it has. Run the worked example
with ``bash examples/run.sh`` (README: "Bring your own model, data and loss").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class TinyCNN(nn.Module):
    """Two 3x3 convolutions and a linear head: about 6,000 parameters for 8x8 digits."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Digits(Dataset):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes; shipped inside scikit-learn, no download).

    ``train=True`` is the first 1,500 images, ``train=False`` the other 297: the pipeline builds it once for each,
    as it does with torchvision's data sets. Items are ``(image [1, 8, 8] float32 in [0, 1], label int)``, read one at
    a time by the pipeline's DataLoader.
    """

    num_classes = 10

    def __init__(self, train: bool = True) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.as_tensor(digits.target, dtype=torch.int64)
        part = slice(0, 1500) if train else slice(1500, None)
        self.images, self.labels = images[part], labels[part]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])
