"""Synthetic data: tiny, deterministic, learnable images made in memory, for tests and smoke runs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.arguments import check_int, check_number
from pipeline.training.data.base import RawData, TensorDataModule
from pipeline.training.data.batching import SYNTHETIC_STREAM, derive_seed


class Synthetic(TensorDataModule):
    """Tiny, deterministic, learnable images for tests and smoke runs: nothing is read from disk.

    Each class has a prototype, a random smooth image (Gaussian noise on a quarter-size grid, upsampled bilinearly,
    standardised); a sample is its class's prototype plus i.i.d. Gaussian pixel noise of standard deviation `noise`
    (in prototype standard deviations), scaled so that pixels have unit variance. Classes are balanced. The data
    depend only on `gen_seed`, `noise` and the sizes, never on `seed` or `split_seed`. `data_dir` is accepted for a
    uniform interface and ignored.

    Args (beyond the base class's):
        n_train: training samples generated (the validation set is carved from them).
        n_test: test samples generated.
        image_size: pixels per side.
        channels: image channels.
        num_classes: number of classes.
        noise: pixel-noise standard deviation relative to the prototypes'.
        gen_seed: seed of the generator that makes the data.
    """

    name = "synthetic"

    def __init__(
        self,
        *,
        data_dir: str = "data",
        batch_size: int = 128,
        val_size: int = 256,
        seed: int = 0,
        split_seed: int = 0,
        train_subset: int | None = None,
        test_subset: int | None = None,
        eval_batch_size: int = 256,
        n_train: int = 2048,
        n_test: int = 512,
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 10,
        noise: float = 3.0,
        gen_seed: int = 0,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            batch_size=batch_size,
            val_size=val_size,
            seed=seed,
            split_seed=split_seed,
            train_subset=train_subset,
            test_subset=test_subset,
            eval_batch_size=eval_batch_size,
        )
        check_int("n_train", n_train, 2)
        check_int("n_test", n_test, 1)
        check_int("image_size", image_size, 4)
        check_int("channels", channels, 1)
        check_int("num_classes", num_classes, 2)
        check_number("noise", noise, 0, high_open=True)
        check_int("gen_seed", gen_seed, 0)
        self.n_train, self.n_test, self.noise, self.gen_seed = n_train, n_test, float(noise), gen_seed
        self.in_channels, self.num_classes, self.image_size = channels, num_classes, image_size

    def _load(self) -> RawData:
        generator = torch.Generator().manual_seed(derive_seed(self.gen_seed, SYNTHETIC_STREAM))
        size, n, coarse_size = self.image_size, self.n_train + self.n_test, max(2, self.image_size // 4)
        coarse = torch.randn(self.num_classes, self.in_channels, coarse_size, coarse_size, generator=generator)
        protos = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        flat = protos.flatten(1)
        protos = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(protos)
        labels = torch.randperm(n, generator=generator) % self.num_classes  # balanced, in random order
        pixels_noise = torch.randn(n, self.in_channels, size, size, generator=generator)
        x = (protos[labels] + self.noise * pixels_noise) / math.sqrt(1.0 + self.noise**2)
        return RawData(x[: self.n_train], labels[: self.n_train], x[self.n_train :], labels[self.n_train :])
