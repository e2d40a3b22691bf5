"""Packed-policies benchmark: K LeNet-5s trained as one vectorised model vs the same K trained one after another
(not a test).

Both sides train K copies for ``--steps`` optimizer steps on the same Fashion-MNIST batches from the data module
(batch 128, taken from the shuffled training loader and placed on the device beforehand, so data loading is not
timed), each copy under its own policy with SGD momentum 0.9 and weight decay 5e-4, and both read every step's loss
back to the host as the pipeline does to record it:

- ``sequential``: per copy, a LeNet-5 with ``torch.optim.SGD`` driven by the pipeline's ``PolicyScheduler``, laid
  out channels-last as separate pipeline runs lay out conv nets (``trainer.memory_format=auto``);
- ``packed``: ``pipeline.packing`` (``PackedNets`` + ``PackedSGD``), what ``trainer.pack=K`` runs.

Reported per device and K: model-samples per second (K x steps x batch / seconds), the median over ``--repeats``
runs (interleaved, so slow spells of a shared machine hit both sides alike) and the ratio packed / sequential. The
CPU runs always; CUDA runs when ``torch.cuda.is_available()`` and is reported as skipped otherwise. The issue's
target on a GPU: at least 5x for K=16.

    python benchmarks/packed.py [--ks 8 16] [--steps 50] [--repeats 3] [--threads 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from any directory


def fashion_batches(steps: int, batch_size: int, data_dir: str):
    from pipeline.training.data.idx import FashionMNIST

    data = FashionMNIST(data_dir=data_dir, batch_size=batch_size, seed=0)
    data.setup("fit")
    batches = []
    for x, y in data.train_dataloader():
        batches.append((x, y))
        if len(batches) == steps:
            return batches
    raise ValueError(f"Fashion-MNIST has fewer than {steps} batches of {batch_size}")


def policies(k: int):
    from pipeline.policies import Triangle2

    return [Triangle2(k0=0.01, k1=0.02 + 0.005 * i, l=2000) for i in range(k)]


def lenets(k: int, device, layout=None):
    import torch

    from pipeline.training.models import LeNet5

    torch.manual_seed(0)
    layout = layout or torch.contiguous_format
    return [LeNet5(in_channels=1, num_classes=10, image_size=28).to(device, memory_format=layout) for _ in range(k)]


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_sequential(nets, pols, batches, device) -> float:
    """Seconds to train every copy, one after another."""
    import torch
    import torch.nn.functional as F

    from pipeline.training.scheduler import PolicyScheduler

    sync(device)
    start = time.perf_counter()
    for net, policy in zip(nets, pols):
        optimizer = torch.optim.SGD(net.parameters(), lr=policy(0), momentum=0.9, weight_decay=5e-4)
        scheduler = PolicyScheduler(optimizer, policy)
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y, reduction="none").mean()
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss.item()  # the pipeline records every step's loss
    sync(device)
    return time.perf_counter() - start


def run_packed(nets, pols, batches, device) -> float:
    """Seconds to train every copy as one pack."""
    import torch

    from pipeline.packing.nets import PackedNets
    from pipeline.packing.sgd import PackedSGD, SGDRule

    packed = PackedNets(nets, device, torch.float32)
    rule = SGDRule(momentum=0.9, dampening=0.0, weight_decay=5e-4, nesterov=False, maximize=False)
    sgd = PackedSGD(rule, len(nets), momentum_policies=False)
    active, momenta = [True] * len(nets), [0.9] * len(nets)
    sync(device)
    start = time.perf_counter()
    for t, (x, y) in enumerate(batches):
        grads, losses = packed.grads_and_losses(x, y)
        sgd.step(packed.params, grads, [p(t) for p in pols], momenta, active)
        losses.tolist()  # the pipeline records every copy's loss at every step
    sync(device)
    return time.perf_counter() - start


def bench_device(device, ks, batches, repeats: int, warmup_steps: int) -> dict:
    import torch

    on_device = [(x.to(device), y.to(device)) for x, y in batches]
    nhwc = torch.channels_last
    nhwc_batches = [(x.contiguous(memory_format=nhwc), y) for x, y in on_device]
    out = {}
    for k in ks:
        pols = policies(k)
        # Warm-up (first-call costs: vmap tracing, CUDA kernels, allocator) on a few steps, untimed.
        run_sequential(lenets(k, device, nhwc), pols, nhwc_batches[:warmup_steps], device)
        run_packed(lenets(k, device), pols, on_device[:warmup_steps], device)
        seconds = {"sequential": [], "packed": []}
        for _ in range(repeats):
            seconds["sequential"].append(run_sequential(lenets(k, device, nhwc), pols, nhwc_batches, device))
            seconds["packed"].append(run_packed(lenets(k, device), pols, on_device, device))
        samples = k * len(on_device) * len(on_device[0][1])
        rates = {side: samples / statistics.median(times) for side, times in seconds.items()}
        out[str(k)] = {
            "samples_per_s": rates,
            "seconds": seconds,
            "speedup_packed_over_sequential": rates["packed"] / rates["sequential"],
        }
        ratio = out[str(k)]["speedup_packed_over_sequential"]
        print(f"{device.type:>4}  K={k:<3} sequential {rates['sequential']:9.0f} samples/s   packed "
              f"{rates['packed']:9.0f} samples/s   packed/sequential {ratio:.2f}x", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 16], help="copies per pack")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per copy")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side; the median is reported")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps per side before timing")
    parser.add_argument("--batch-size", type=int, default=128, help="training samples per batch")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (notes perf.md: 1 is fastest here)")
    parser.add_argument("--data-dir", default=os.environ.get("LRBENCH_DATA_DIR", "data"), help="as dataset.data_dir")
    parser.add_argument("--out", default="bench/results/packed.json", help="JSON results file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    batches = fashion_batches(args.steps, args.batch_size, args.data_dir)
    results = {"cpu": bench_device(torch.device("cpu"), args.ks, batches, args.repeats, args.warmup_steps)}
    if torch.cuda.is_available():
        results["cuda"] = bench_device(torch.device("cuda"), args.ks, batches, args.repeats, args.warmup_steps)
        results["cuda_device"] = torch.cuda.get_device_name()
        target = results["cuda"].get("16", {}).get("speedup_packed_over_sequential")
        if target is not None:
            print(f"CUDA K=16: {target:.2f}x (issue #11 target: >= 5x)", flush=True)
    else:
        results["cuda"] = {"skipped": "CUDA is not available on this machine"}
        print("cuda: skipped (CUDA is not available on this machine; run this script on a GPU machine)", flush=True)
    report = {
        "benchmark": "packed policies: K LeNet-5 on Fashion-MNIST, vectorised pack vs one after another",
        "args": vars(args),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
