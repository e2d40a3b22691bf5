"""scikit-learn's diabetes data, for the regression task: read from the copy that ships inside scikit-learn."""

from __future__ import annotations

import torch

from pipeline.arguments import check_int
from pipeline.training.data.base import DatasetNotFoundError, RawData, TensorDataModule
from pipeline.training.data.batching import derive_seed

# The held-out test split has its own random stream (keyed by split_seed), apart from the train/val split's.
TEST_STREAM = 4


class Diabetes(TensorDataModule):
    """Efron et al.'s diabetes data: 442 patients, 10 baseline variables (age, sex, BMI, blood pressure, six blood
    serum measurements), target a measure of disease progression one year later (25 ... 346).

    ``test_size`` patients (a permutation seeded by ``split_seed``) are the test set; ``val_size`` of the others are
    carved out for validation as in every data set. Inputs are standardised with the mean and standard deviation of
    the non-test patients; with ``standardize_targets`` so is the target, so RMSE and MAE are in standard deviations
    of disease progression (77.0 units) and an RMSE of 1.0 is no better than predicting the mean.
    """

    name = "diabetes"
    input_dtype = torch.float32
    target_shape = (1,)
    target_dtype = torch.float32
    n_features = 10

    def __init__(self, *, batch_size: int = 32, val_size: int = 66, test_size: int = 88, seed: int = 0,
                 split_seed: int = 0, train_subset: int | None = None, test_subset: int | None = None,
                 eval_batch_size: int = 256, standardize_targets: bool = True) -> None:
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, split_seed=split_seed,
                         train_subset=train_subset, test_subset=test_subset, eval_batch_size=eval_batch_size)
        check_int("test_size", test_size, 1, 441)
        if not isinstance(standardize_targets, bool):
            raise ValueError(f"standardize_targets must be true or false, got {standardize_targets!r}")
        self.test_size, self.standardize_targets = test_size, standardize_targets

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.n_features,)

    @property
    def output_size(self) -> int:
        return 1

    def _load(self) -> RawData:
        try:
            from sklearn.datasets import load_diabetes
        except ImportError as err:
            raise DatasetNotFoundError("the diabetes data ship with scikit-learn, which is not installed: "
                                       "pip install scikit-learn (make install does)") from err
        data = load_diabetes(scaled=False)
        x = torch.as_tensor(data.data, dtype=torch.float64)
        y = torch.as_tensor(data.target, dtype=torch.float64).unsqueeze(1)
        generator = torch.Generator().manual_seed(derive_seed(self.split_seed, TEST_STREAM))
        perm = torch.randperm(len(x), generator=generator)
        test, rest = perm[: self.test_size], perm[self.test_size :]
        mean, std = x[rest].mean(0), x[rest].std(0)
        x = (x - mean) / std
        if self.standardize_targets:
            y = (y - y[rest].mean()) / y[rest].std()
        x, y = x.float(), y.float()
        return RawData(x[rest], y[rest], x[test], y[test])
