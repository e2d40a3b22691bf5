"""A user's own model, data and LightningModule, as small as they come: the classes the bring-your-own tests name
with ``model._target_=own.<name>`` and ``dataset._target_=own.<name>`` (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset


class Blobs(Dataset):
    """A map-style Dataset of ``n`` samples: 8 features, 3 classes, each class a Gaussian blob (learnable in a few
    dozen steps). Items are read one at a time, never held as one tensor by the pipeline."""

    num_classes = 3

    def __init__(self, n: int = 240, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        self.centres = torch.randn(3, 8, generator=generator) * 2
        self.noise = torch.randn(n, 8, generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        y = int(self.labels[i])
        return self.centres[y] + self.noise[i], y


class Tokens(Dataset):
    """Integer token sequences (a repeating pattern mod 11) for embedding models: x [12] int64, y the next tokens."""

    vocab_size = 11
    output_size = 11

    def __len__(self) -> int:
        return 200

    def __getitem__(self, i: int):
        seq = (torch.arange(13) * 3 + i) % 11
        return seq[:-1], seq[1:]


class TinyNet(nn.Module):
    """Takes only what it needs: input_shape and output_size."""

    def __init__(self, input_shape, output_size, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), width), nn.ReLU(),
                                 nn.Linear(width, output_size))

    def forward(self, x):
        return self.net(x)


class Embedder(nn.Module):
    """An embedding layer first: crashes on float inputs, so it proves integer inputs stay integer."""

    def __init__(self, vocab_size, output_size) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 16)
        self.head = nn.Linear(16, output_size)

    def forward(self, x):
        return self.head(self.embed(x))


class OwnModule(L.LightningModule):
    """A LightningModule of the user's own: its own loss and optimizer, metrics logged as val/<name>."""

    def __init__(self, input_shape, output_size) -> None:
        super().__init__()
        self.net = TinyNet(input_shape, output_size)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class UnprefixedModule(OwnModule):
    """A common slip: its metrics logged as ``val_loss`` / ``val_acc``, so the objective ``val/acc`` never is."""

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())


class LinearData(Dataset):
    """Least squares with a known curvature: x ~ N(0, I_8), y = w·x + b + 0.01 noise. The mean squared error of a
    linear model has Hessian 2·I over (w, b), so plain gradient descent diverges above lr 2 / 2 = 1 (somewhat below
    on a batch of 64, whose sample Hessian is larger)."""

    output_size = 1

    def __init__(self, n: int = 1024, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=generator)
        w = torch.randn(8, generator=generator)
        self.y = self.x @ w + 0.5 + 0.01 * torch.randn(n, generator=generator)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class Linear(nn.Module):
    """One linear layer: with :class:`LinearData`, a model whose range test has a predictable answer."""

    def __init__(self, input_shape, output_size) -> None:
        super().__init__()
        self.layer = nn.Linear(int(torch.tensor(input_shape).prod()), output_size)

    def forward(self, x):
        return self.layer(x)
