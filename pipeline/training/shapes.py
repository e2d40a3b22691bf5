"""The contract between data, model and task: what the pipeline tells a model about the data, and the one check that
the three fit, before any run is created.

A model factory (``model._target_``, with ``_partial_: true``) is called with the data module's shapes that its
signature takes (all of them if it takes ``**kwargs``):

- ``input_shape``: one sample's input, e.g. ``(1, 28, 28)``, ``(10,)`` or ``(64,)`` (64 token ids);
- ``output_size``: what the model outputs per sample (per position for sequences): classes, values, vocabulary;
- for images ``in_channels``, ``image_size``, ``num_classes``; for tokens ``vocab_size``.

A data module states them as attributes (:class:`~pipeline.training.data.base.TensorDataModule` does); one that
knows its shapes only after loading may leave ``input_shape`` out, and it is read from the first training batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

SHAPE_ARGUMENTS = ("input_shape", "output_size", "in_channels", "image_size", "num_classes", "vocab_size")


def model_arguments(datamodule, batch: tuple | None = None) -> dict[str, Any]:
    """The data's shapes a model may take: the data module's attributes that are set, ``input_shape`` from the
    first batch's inputs when the module does not state it."""
    args = {}
    for name in SHAPE_ARGUMENTS:
        try:
            value = getattr(datamodule, name, None)
        except (TypeError, AttributeError, RuntimeError):  # a property of values known only after setup
            value = None
        if value is not None and not (isinstance(value, tuple) and None in value):
            args[name] = tuple(value) if name == "input_shape" else value
    if "input_shape" not in args and batch is not None:
        args["input_shape"] = tuple(batch[0].shape[1:])
    return args


def _signature(factory: Callable):
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: pass nothing, let it raise if it needs more
        return None


def takes(factory: Callable, args: dict) -> dict:
    """The arguments of ``args`` that ``factory``'s signature takes (all with ``**kwargs``), except those the config
    already sets (``+model.output_size=3`` wins over the data's); ValueError naming a required shape argument the
    data do not give."""
    import functools

    if isinstance(factory, functools.partial):
        args = {k: v for k, v in args.items() if k not in factory.keywords}
    signature = _signature(factory)
    if signature is None:
        return {}
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(args)
    for name, p in params.items():
        needed = p.default is inspect.Parameter.empty and p.kind in (
            inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if needed and name in SHAPE_ARGUMENTS and name not in args:
            given = ", ".join(f"{k}={v}" for k, v in args.items()) or "none"
            raise ValueError(f"{name} is needed by the model but the data module does not state it (it gives: "
                             f"{given}); give the data module an attribute {name}, or set it with +model.{name}=...")
    return {name: value for name, value in args.items() if name in params}


def build_model(factory: Callable, datamodule, batch: tuple | None = None):
    """Build the model for this data: ``factory(**shapes it takes)``."""
    return factory(**takes(factory, model_arguments(datamodule, batch)))


def declared_batch(datamodule, n: int = 2) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A batch of zeros of the shapes and dtypes the data module states before it is loaded; None if it does not
    state them all (``input_shape``, ``input_dtype``, ``target_shape``, ``target_dtype``)."""
    args = model_arguments(datamodule)
    parts = [args.get("input_shape"), getattr(datamodule, "input_dtype", None),
             getattr(datamodule, "target_shape", None), getattr(datamodule, "target_dtype", None)]
    if any(p is None for p in parts):
        return None
    x_shape, x_dtype, y_shape, y_dtype = parts
    return torch.zeros(n, *x_shape, dtype=x_dtype), torch.zeros(n, *y_shape, dtype=y_dtype)


def first_batch(datamodule, n: int = 2) -> tuple:
    """The first ``n`` training samples of a loaded data module, as a batch, read without touching the training
    order (an in-memory split is indexed directly; otherwise the first batch of a fresh training loader)."""
    from torch.utils.data import default_collate

    from pipeline.training.data.batching import TensorBatchDataset

    train = getattr(datamodule, "train_set", None)
    if isinstance(train, TensorBatchDataset):
        return train.__getitems__(list(range(min(n, len(train)))))
    if train is not None and hasattr(train, "__getitem__") and hasattr(train, "__len__"):
        return tuple(default_collate([train[i] for i in range(min(n, len(train)))]))
    with torch.random.fork_rng(devices=[]):  # a loader's sampler may draw from torch's generator: leave it as it was
        batch = next(iter(datamodule.train_dataloader()))
    return tuple(part[:n] for part in batch) if isinstance(batch, (tuple, list)) else batch


def check_fit(net, task, datamodule, batch) -> None:
    """One forward pass of ``batch`` (x, y) through ``net`` and the task's check of output and targets; ValueError
    starting with the key at fault (``model:``, ``dataset:``). The net's state, its mode and torch's random state are
    left as they were (eval mode: batch-norm statistics do not move; dropout draws nothing)."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(f"dataset: batches must be (inputs, targets) pairs; the data give a "
                         f"{type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    x, y = batch
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"dataset: inputs and targets must be tensors; the data give {type(x).__name__} and "
                         f"{type(y).__name__}")
    output_size = model_arguments(datamodule).get("output_size")
    training = net.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            net.eval()
            output = net(x)
    except Exception as exc:  # noqa: BLE001 - any failure here means the model does not take this data
        raise ValueError(f"model: a forward pass of a batch of inputs {x.dtype} {list(x.shape)} fails: "
                         f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    finally:
        net.train(training)
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"model: forward must return one tensor; it returns {type(output).__name__}")
    task.check_batch(output, y, output_size)
