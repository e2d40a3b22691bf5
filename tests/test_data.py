"""Data modules: deterministic in-memory data, a disjoint seeded split, a reproducible order, clear loading errors."""

import gzip
import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.overrides import TorchFunctionMode

from pipeline.training.data.base import DatasetNotFoundError, TensorDataModule
from pipeline.training.data.batching import EpochShuffleSampler, TensorBatchDataset, batches_done, keep_batch
from pipeline.training.data.cifar10 import CIFAR10
from pipeline.training.data.idx import MNIST, FashionMNIST, read_idx
from pipeline.training.data.synthetic import Synthetic
from pipeline.training.models import LeNet5

CONF = Path(__file__).resolve().parents[1] / "conf"
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """An IDX file as LeCun describes it: 0, 0, type code, ndim, big-endian int32 dims, big-endian data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C,
             np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_tiny_mnist(raw_dir: Path, n_train: int = 30, n_test: int = 8) -> None:
    rng = np.random.default_rng(0)
    write_idx(raw_dir / f"{IDX_STEMS[0]}.gz", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx(raw_dir / f"{IDX_STEMS[1]}.gz", (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(raw_dir / f"{IDX_STEMS[2]}.gz", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    write_idx(raw_dir / IDX_STEMS[3], (np.arange(n_test) % 10).astype(np.uint8), compress=False)


def epoch_labels(loader, epoch: int) -> torch.Tensor:
    loader.sampler.set_epoch(epoch)
    return torch.cat([y for _, y in loader])


class _TorchCalls(TorchFunctionMode):
    """Counts the calls into torch (functions, tensor methods and indexing) made while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def torch_calls(fn, *args):
    """``fn(*args)`` and how many calls into torch it made."""
    with _TorchCalls() as calls:
        result = fn(*args)
    return result, calls.count


@pytest.fixture(scope="module")
def synthetic() -> Synthetic:
    dm = Synthetic(val_size=256, batch_size=32)
    dm.setup()
    return dm


# --- Synthetic data ---------------------------------------------------------------------------------------------------


def test_synthetic_data_are_identical_across_instances_and_split_seeds():
    a, b = Synthetic(), Synthetic(seed=5, split_seed=7)
    a.setup(), b.setup()
    assert torch.equal(a.train_set.x, b.train_set.x) and torch.equal(a.train_set.y, b.train_set.y)
    assert torch.equal(a.test_set.x, b.test_set.x) and torch.equal(a.test_set.y, b.test_set.y)


def test_synthetic_gen_seed_changes_the_data():
    a, b = Synthetic(), Synthetic(gen_seed=1)
    a.setup(), b.setup()
    assert not torch.equal(a.train_set.x, b.train_set.x)


def test_synthetic_generation_is_vectorised_and_shaped_as_configured():
    # No work per sample: four times the samples take the same torch calls. How fast that is (well under 1 s for
    # these sizes) is a benchmark figure, `python benchmarks/suite.py --only data`, not a test: the machine is shared.
    def make(n_train, n_test):
        dm = Synthetic(n_train=n_train, n_test=n_test, val_size=100, image_size=32, channels=3, num_classes=4)
        dm.setup()
        return dm

    dm, calls = torch_calls(make, 600, 100)
    assert calls == torch_calls(make, 2400, 400)[1]
    assert (dm.in_channels, dm.image_size, dm.num_classes) == (3, 32, 4)
    assert dm.train_set.x.shape == (600, 3, 32, 32) and dm.train_set.x.dtype == torch.float32
    assert set(dm.train_set.y.tolist()) == {0, 1, 2, 3}


def test_split_sizes_follow_val_size_and_subsets():
    dm = Synthetic(n_train=2048, n_test=512, val_size=256, train_subset=100, test_subset=50)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (100, 256, 50)
    full = Synthetic(n_train=2048, n_test=512, val_size=256, batch_size=100)
    full.setup()
    assert (len(full.train_set), len(full.val_set), len(full.test_set)) == (2048 - 256, 256, 512)
    assert len(full.train_dataloader()) == 18  # ceil(1,792 / 100) batches


def test_val_is_carved_from_train_disjointly(synthetic):
    train, val = set(synthetic.train_set.index.tolist()), set(synthetic.val_set.index.tolist())
    assert not train & val
    assert train | val == set(range(2048))
    assert synthetic.val_set.x is synthetic.train_set.x  # same training tensor, different rows


def test_split_depends_on_split_seed_only():
    base, other_seed, other_split = Synthetic(), Synthetic(seed=9), Synthetic(split_seed=1)
    for dm in (base, other_seed, other_split):
        dm.setup()
    assert torch.equal(base.val_set.index, other_seed.val_set.index)
    assert not torch.equal(base.val_set.index, other_split.val_set.index)


def test_train_order_is_reproducible_for_a_seed_and_differs_across_seeds_and_epochs():
    def order(seed, epoch):
        dm = Synthetic(seed=seed, batch_size=64)
        dm.setup()
        rows = dm.train_set.index[EpochShuffleSampler(1792, seed).order(epoch)]
        return epoch_labels(dm.train_dataloader(), epoch), rows

    labels_a, rows_a = order(seed=1, epoch=0)
    labels_b, rows_b = order(seed=1, epoch=0)
    assert torch.equal(labels_a, labels_b) and torch.equal(rows_a, rows_b)
    assert not torch.equal(rows_a, order(seed=2, epoch=0)[1])
    assert not torch.equal(rows_a, order(seed=1, epoch=1)[1])


def test_sampler_order_is_a_function_of_seed_and_epoch_only():
    used = EpochShuffleSampler(100, seed=3)
    for epoch in range(4):  # iterate through earlier epochs first: no hidden state may leak into epoch 3
        used.set_epoch(epoch)
        list(used)
    fresh = EpochShuffleSampler(100, seed=3)
    fresh.set_epoch(3)
    assert list(used) == list(fresh) == fresh.order(3).tolist()
    assert sorted(fresh) == list(range(100))


@pytest.mark.parametrize("rank, world", [(-1, 1), (2, 2), (1.0, 2)])
def test_sampler_rank_outside_the_world_raises_value_error_naming_the_range(rank, world):
    with pytest.raises(ValueError, match=rf"^rank must be an integer in \[0, {world - 1}\]"):
        EpochShuffleSampler(100, seed=0, rank=rank, world=world)


def test_resume_position_counts_batches_of_this_process_under_ddp_and_accumulation():
    # 1,000 samples, 2 processes, batch 10: 50 batches each per epoch; 4 batches a step: 13 steps (the last partial).
    args = dict(num_samples=1000, batch_size=10, world_size=2, accumulate=4)
    assert batches_done(global_step=0, epoch=0, **args) == 0
    assert batches_done(global_step=5, epoch=0, **args) == 20
    assert batches_done(global_step=13, epoch=1, **args) == 0  # epoch 1 starts after 13 steps, not 100 or 50
    assert batches_done(global_step=18, epoch=1, **args) == 20
    assert batches_done(global_step=26, epoch=1, **args) == 50  # the partial last step ends the epoch
    assert batches_done(global_step=3, epoch=0, num_samples=1000, batch_size=10) == 3


def test_train_loader_yields_whole_batches_by_tensor_indexing_and_covers_each_sample_once(synthetic, monkeypatch):
    fetches = {"__getitem__": 0, "__getitems__": 0}

    def counting(name, original):
        def counted(self, key):
            fetches[name] += 1
            return original(self, key)
        return counted

    for name in fetches:
        if (original := getattr(TensorBatchDataset, name, None)) is not None:  # never add the method under test
            monkeypatch.setattr(TensorBatchDataset, name, counting(name, original))
    loader = synthetic.train_dataloader()
    assert loader.collate_fn is keep_batch and loader.num_workers == 0
    loader.sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == len(loader) == 56  # 1,792 / 32
    assert fetches == {"__getitem__": 0, "__getitems__": 56}  # one indexing call a batch, none a sample
    x, y = batches[0]
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    rows = synthetic.train_set.index[loader.sampler.order(0)[:32]]
    assert torch.equal(x, synthetic.train_set.x[rows]) and torch.equal(y, synthetic.train_set.y[rows])
    assert torch.cat([b[1] for b in batches]).bincount().tolist() == synthetic.train_set.y[
        synthetic.train_set.index].bincount().tolist()


def test_a_training_batch_takes_the_same_torch_calls_at_any_batch_size():
    # One fancy-indexing op a batch (x[index[rows]]), no op a sample: what keeps a batch at ~0.2 ms (benchmarks).
    calls = {}
    for batch_size in (8, 256):
        dm = Synthetic(batch_size=batch_size)
        dm.setup()
        loader = dm.train_dataloader()
        (x, _), calls[batch_size] = torch_calls(lambda: next(iter(loader)))
        assert len(x) == batch_size
    assert calls[8] == calls[256]


def test_eval_loaders_keep_order_and_cover_the_split(synthetic):
    x, y = next(iter(synthetic.val_dataloader()))
    assert len(x) == 256 and torch.equal(y, synthetic.train_set.y[synthetic.val_set.index])
    assert sum(len(b[1]) for b in synthetic.test_dataloader()) == 512


class _EpochRecorder(L.LightningModule):
    """Records the labels of every training batch, per epoch, under a real Trainer."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: dict[int, list[torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).append(batch[1])
        return self.layer(batch[0][:, :1, 0, 0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_sets_the_sampler_epoch_so_each_epoch_has_its_own_reproducible_order():
    def fit():
        dm = Synthetic(n_train=160, n_test=10, val_size=32, batch_size=32, seed=4)
        module = _EpochRecorder()
        trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0, accelerator="cpu", devices=1)
        trainer.fit(module, datamodule=dm)
        return dm, {epoch: torch.cat(ys) for epoch, ys in module.seen.items()}

    dm, first = fit()
    _, second = fit()
    sampler = EpochShuffleSampler(128, seed=4)
    for epoch in (0, 1):
        assert torch.equal(first[epoch], second[epoch])
        assert torch.equal(first[epoch], dm.train_set.y[dm.train_set.index[sampler.order(epoch)]])
    assert not torch.equal(first[0], first[1])


def test_lenet_learns_synthetic_data_to_over_90_percent_in_100_sgd_steps(synthetic):
    torch.manual_seed(0)
    net = LeNet5(in_channels=1, num_classes=10, image_size=28)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loader, step = synthetic.train_dataloader(), 0  # batch 32
    for epoch in range(4):
        loader.sampler.set_epoch(epoch)
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == 100:
                break
        if step == 100:
            break
    with torch.no_grad():
        x, y = next(iter(synthetic.val_dataloader()))
        accuracy = (net(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9


# --- IDX files --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_file_round_trips(tmp_path, compress, dtype):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = write_idx(tmp_path / "tiny-idx3-ubyte", array, compress)
    loaded = read_idx(path)
    assert loaded.dtype == array.dtype and loaded.shape == array.shape and np.array_equal(loaded, array)
    assert loaded.flags.writeable


def test_truncated_idx_gz_raises_value_error_naming_the_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((5, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        read_idx(path)


def test_short_idx_payload_raises_value_error_naming_the_file(tmp_path):
    path = write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(100, dtype=np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="labels-idx1-ubyte.*truncated"):
        read_idx(path)


def test_non_idx_file_raises_value_error_naming_the_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt.*magic"):
        read_idx(path)


# --- Real data sets ---------------------------------------------------------------------------------------------------


def _fashion_mnist_available() -> bool:
    dm = FashionMNIST(data_dir="data")
    return any(all((d / s).is_file() or (d / f"{s}.gz").is_file() for s in IDX_STEMS) for d in dm.search_dirs())


@pytest.mark.skipif(
    not _fashion_mnist_available(),
    reason="no Fashion-MNIST: apt-get install dataset-fashion-mnist, or put the files in data/FashionMNIST/raw",
)
def test_fashion_mnist_loads_60000_minus_val_train_and_10000_test_images():
    dm = FashionMNIST(data_dir="data", val_size=5000)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55_000, 5_000, 10_000)
    x, y = dm.train_set.x, dm.train_set.y
    assert x.shape == (60_000, 1, 28, 28) and x.dtype == torch.float32 and dm.test_set.x.shape == (10_000, 1, 28, 28)
    assert int(y.min()) == 0 and int(y.max()) == 9 and int(dm.test_set.y.max()) == 9
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01  # normalised by the data set's mean/std


def test_fashion_mnist_reads_data_dir_before_the_system_copy(tmp_path):
    write_tiny_mnist(tmp_path / "FashionMNIST" / "raw", n_train=30, n_test=8)
    dm = FashionMNIST(data_dir=str(tmp_path), val_size=10)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (20, 10, 8)


def test_missing_fashion_mnist_raises_one_error_naming_the_paths_and_how_to_get_it(tmp_path, monkeypatch):
    def offline(self):
        raise RuntimeError("network is unreachable")

    monkeypatch.setattr(FashionMNIST, "system_dir", tmp_path / "usr-share-datasets-fashion-mnist")
    monkeypatch.setattr(FashionMNIST, "_download", offline)
    dm = FashionMNIST(data_dir=str(tmp_path / "data"))
    with pytest.raises(DatasetNotFoundError) as err:
        dm.setup()
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for part in ("Fashion-MNIST", str(tmp_path / "data" / "FashionMNIST" / "raw"),
                 str(tmp_path / "usr-share-datasets-fashion-mnist"), "apt-get install dataset-fashion-mnist",
                 "network is unreachable", "torchvision"):
        assert part in message


def test_missing_mnist_and_cifar10_raise_the_same_kind_of_error(tmp_path, monkeypatch):
    def offline(self):
        raise RuntimeError("network is unreachable")

    for cls in (MNIST, CIFAR10):
        monkeypatch.setattr(cls, "_download", offline)
        with pytest.raises(DatasetNotFoundError, match="network is unreachable"):
            cls(data_dir=str(tmp_path)).setup()


def test_corrupt_local_file_is_reported_not_silently_replaced(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    write_tiny_mnist(raw)
    labels = raw / f"{IDX_STEMS[1]}.gz"
    labels.write_bytes(labels.read_bytes()[:-8])
    with pytest.raises(ValueError, match=str(labels)):
        FashionMNIST(data_dir=str(tmp_path), val_size=10).setup()


def test_cifar10_reads_torchvision_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", 4) for i in range(1, 6)), ("test_batch", 3)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    dm = CIFAR10(data_dir=str(tmp_path), val_size=5)
    dm.setup()
    assert dm.train_set.x.shape == (20, 3, 32, 32) and dm.test_set.x.shape == (3, 3, 32, 32)
    assert (len(dm.train_set), len(dm.val_set)) == (15, 5)
    first = torch.from_numpy(pickle.loads((folder / "data_batch_1").read_bytes())[b"data"][0].reshape(3, 32, 32))
    mean, std = torch.tensor(CIFAR10.mean).view(3, 1, 1), torch.tensor(CIFAR10.std).view(3, 1, 1)
    expected = (first.float() / 255 - mean) / std
    torch.testing.assert_close(dm.train_set.x[0], expected)


# --- Configs and argument checks --------------------------------------------------------------------------------------


# custom is the template for data of the user's own (tests/test_tasks.py builds it with a Dataset of its own).
@pytest.mark.parametrize("config", sorted(p for p in (CONF / "dataset").glob("*.yaml") if p.stem != "custom"),
                         ids=lambda p: p.stem)
def test_every_dataset_config_builds_its_module_without_touching_disk(config, tmp_path, monkeypatch):
    monkeypatch.setenv("LRBENCH_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("LRBENCH_FORTUNES_DIR", str(tmp_path / "nowhere"))
    cfg = OmegaConf.merge({"seed": 3}, {"dataset": OmegaConf.load(config)})
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, TensorDataModule) and dm.name == config.stem
    assert dm.seed == 3 and dm.split_seed == 0  # the job's seed drives the order; the split is fixed
    if "data_dir" in cfg.dataset:
        assert dm.data_dir == tmp_path / "nowhere"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(data_dir=""), "data_dir"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=True), "batch_size"),
        (dict(val_size=0), "val_size"),
        (dict(seed=-1), "seed"),
        (dict(split_seed=1.5), "split_seed"),
        (dict(train_subset=0), "train_subset"),
        (dict(test_subset=-3), "test_subset"),
        (dict(eval_batch_size=0), "eval_batch_size"),
        (dict(n_train=1), "n_train"),
        (dict(n_test=0), "n_test"),
        (dict(image_size=2), "image_size"),
        (dict(channels=0), "channels"),
        (dict(num_classes=1), "num_classes"),
        (dict(noise=-0.5), "noise"),
        (dict(noise=float("nan")), "noise"),
        (dict(noise=float("inf")), "noise"),
        (dict(noise=True), "noise"),
        (dict(gen_seed=-1), "gen_seed"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_argument_raises_value_error_naming_it_and_the_range(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must be .*(>=|\[|finite|non-empty)"):
        Synthetic(**kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(val_size=2048), "val_size"),
        (dict(train_subset=2000), "train_subset"),
        (dict(test_subset=513), "test_subset"),
    ],
)
def test_sizes_larger_than_the_data_set_are_rejected_at_setup_naming_the_argument(kwargs, name):
    dm = Synthetic(**kwargs)  # the size of a real data set is only known once it is loaded
    with pytest.raises(ValueError, match=rf"^{name} must be an integer in \[1, \d+\]"):
        dm.setup()


def test_data_is_unavailable_before_setup():
    with pytest.raises(RuntimeError, match="setup"):
        Synthetic().train_dataloader()
