"""Is data loading negligible next to an adversarial training step?

Times, per batch of Fashion-MNIST (digits if Fashion-MNIST is not installed):

* fetching batches through a plain ``DataLoader(dataset, batch_size, shuffle=True)``
  (per-example ``__getitem__`` + collate), through :func:`sat_toolkit.data.make_loader`
  (one indexing call per batch) and through :func:`sat_toolkit.data.iterate_batches`
  (no ``DataLoader``), each including the copy to the device;
* one SAT training step of ``small_cnn`` (SiLU) on the same batch: a PGD-1 attack
  (random start in the L-inf ball, step = epsilon, BatchNorm in eval mode while attacking)
  plus an SGD update on the adversarial batch.

The goal is data time < 5% of the step. Prints a table and the ratios; ``--out`` writes
the numbers and the hardware as JSON. Each figure is the median of ``--repeats``
measurements, because the machine may be shared.

    python benchmarks/bench_data.py --out /tmp/bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from sat_toolkit.data import TensorImageDataset, create_dataset, iterate_batches, make_loader
from sat_toolkit.errors import SatError
from sat_toolkit.models import create_model
from sat_toolkit.study.ledger import cpu_model

GOAL = 0.05


def hardware(device: torch.device) -> dict[str, Any]:
    cpu = cpu_model()
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_data(name: str, limit: int | None) -> tuple[Any, TensorImageDataset, float, str]:
    """The training split, the one-off load time, and which dataset it really is."""
    try:
        source = create_dataset({"name": name, "limit_train": limit})
        start = time.perf_counter()
        train = source.load("train")
        return source, train, time.perf_counter() - start, name
    except SatError as exc:
        if name == "digits":
            raise
        print(f"note: {exc}\nnote: falling back to digits")
        return load_data("digits", limit)


def time_fetch(batches: Callable[[], Iterable[Any]], count: int, device: torch.device) -> float:
    """Seconds per batch to draw ``count`` batches (restarting epochs) and move them to ``device``."""
    drawn = 0
    iterator = iter(batches())
    next(iterator)  # warm-up: worker/iterator start-up is not a per-batch cost
    sync(device)
    start = time.perf_counter()
    while drawn < count:
        try:
            images, labels = next(iterator)
        except StopIteration:
            iterator = iter(batches())
            continue
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        drawn += 1
    sync(device)
    return (time.perf_counter() - start) / count


def pgd1_sgd_step(
    model: nn.Module, optimiser: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor, eps: float
) -> None:
    """One SAT step: PGD-1 from a random start (BN in eval mode), then SGD on the result."""
    model.eval()
    delta = torch.empty_like(images).uniform_(-eps, eps)
    adversarial = (images + delta).clamp_(0, 1).requires_grad_(True)
    loss = F.cross_entropy(model(adversarial), labels)
    (grad,) = torch.autograd.grad(loss, adversarial)
    adversarial = adversarial.detach() + eps * grad.sign()
    adversarial = torch.min(torch.max(adversarial, images - eps), images + eps).clamp_(0, 1)
    model.train()
    loss = F.cross_entropy(model(adversarial), labels)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def time_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, count: int) -> float:
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):  # warm-up (allocator, cuDNN autotuning, lazy init)
        pgd1_sgd_step(model, optimiser, images, labels, eps)
    sync(images.device)
    start = time.perf_counter()
    for _ in range(count):
        pgd1_sgd_step(model, optimiser, images, labels, eps)
    sync(images.device)
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=40, help="batches timed per data measurement")
    parser.add_argument("--steps", type=int, default=5, help="training steps timed per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements; the median is reported")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf epsilon in [0, 1] pixels")
    parser.add_argument("--width", type=int, default=32, help="small_cnn width")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--limit", type=int, default=None, help="limit_train (quick runs)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    source, train, load_s, dataset = load_data(args.dataset, args.limit)
    bs = args.batch_size
    loaders: dict[str, Callable[[], Iterable[Any]]] = {
        "DataLoader (per example)": lambda: DataLoader(train, batch_size=bs, shuffle=True, drop_last=True),
        "make_loader (batched)": lambda: make_loader(train, bs, shuffle=True, drop_last=True),
        "iterate_batches": lambda: iterate_batches(train, bs, shuffle=True, drop_last=True),
    }
    fetch = {
        name: statistics.median(time_fetch(make, args.batches, device) for _ in range(args.repeats))
        for name, make in loaders.items()
    }

    model = create_model({"name": "small_cnn", "width": args.width}, source.info(), "silu").to(device)
    images, labels = train[torch.arange(bs)]
    images, labels = images.to(device), labels.to(device)
    step = statistics.median(
        time_step(model, images, labels, args.eps, args.steps) for _ in range(args.repeats)
    )

    print(
        f"dataset {dataset}: {len(train)} training images {train.shape}, loaded + converted in {load_s:.2f} s"
    )
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {bs}")
    print(f"{'PGD-1 + SGD step (small_cnn, silu)':<38} {step * 1e3:9.3f} ms/batch")
    for name, seconds in fetch.items():
        ratio = seconds / step
        verdict = "ok" if ratio < GOAL else f"over the {GOAL:.0%} goal"
        print(f"{name:<38} {seconds * 1e3:9.3f} ms/batch  = {ratio:6.2%} of a step  ({verdict})")

    result = {
        "dataset": dataset,
        "train_examples": len(train),
        "image_shape": list(train.shape),
        "batch_size": bs,
        "batches_timed": args.batches,
        "steps_timed": args.steps,
        "repeats_median_of": args.repeats,
        "eps": args.eps,
        "model": model.sat_config["model"],
        "load_and_convert_s": load_s,
        "step_ms": step * 1e3,
        "fetch_ms": {name: seconds * 1e3 for name, seconds in fetch.items()},
        "fetch_over_step": {name: seconds / step for name, seconds in fetch.items()},
        "goal": GOAL,
        "hardware": hardware(device),
    }
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
