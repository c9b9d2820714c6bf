"""Would adversarial training wait on JPEG decoding? The ``imagefolder`` pipeline on this CPU.

Run by hand (not a test): ``python benchmarks/bench_imagefolder.py`` (about 2 minutes on
2 busy cores). It

1. writes a local image folder into a temporary directory: ``--images`` JPEGs (default
   2,000, 256 x 256, quality 90, about 20 KB each: smooth random colour fields plus
   noise, so they compress like photographs rather than like noise or flat colour) in
   ``--classes`` class folders;
2. measures the images/s the engine's training loader
   (:func:`sat_toolkit.engine.loader.training_loader`) delivers from it with the
   ``imagefolder`` plugin's full training augmentation (decode, random-resized crop to
   ``--image-size``, flip, colour jitter, PCA lighting) for each ``--workers`` count:
   time to the first batch (worker start-up) and the steady rate after it;
3. measures the images/s of one SAT training step on a fixed batch: PGD-1 (uniform
   random start, step = eps = 4/255, BatchNorm in eval mode while attacking) plus an SGD
   update, for ``--model`` (default timm's ``mobilenetv3_small_100`` with SiLU: small,
   so the step is as fast as CPU steps get and data has its best chance to matter);
4. runs the simulated training loop ``x, y = next(batches); step(x, y)`` for
   ``--steps`` steps per worker count and reports the fraction of loop time spent
   blocked in ``next()``: the share of training time lost to data.

Workers run on the same cores as the step, so they can also slow the step down; the
step time inside the loop is reported next to the step time alone. The main process
uses ``--threads`` intra-op threads (default 1: on a 2-core machine shared with other
jobs, more threads make small ops much slower, and the second core is for a worker).

Writes ``benchmarks/results/imagefolder_cpu.json`` and ``.md`` (``--out-dir`` to change).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sat_toolkit.data.imagefolder import ImageFolder
from sat_toolkit.engine.loader import training_loader
from sat_toolkit.models import create_model
from sat_toolkit.study.ledger import cpu_model

EPS = 4 / 255


def hardware() -> dict[str, Any]:
    """CPU model, core counts, library versions: enough to compare runs."""
    cpu = cpu_model()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    import PIL
    import torchvision

    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1_5_15": None if load is None else [round(v, 2) for v in load],
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_image_folder(root: Path, images: int, classes: int, size: int, seed: int = 0) -> dict[str, Any]:
    """``root/train/class_k/img_i.jpg``; returns the count, bytes and seconds taken."""
    rng = np.random.default_rng(seed)
    noise_bank = rng.normal(0, 12, size=(8, size, size, 3)).astype(np.int16)
    start = time.perf_counter()
    total_bytes = 0
    for index in range(images):
        folder = root / "train" / f"class_{index % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
        noise = np.roll(noise_bank[index % len(noise_bank)], shift=int(rng.integers(size)), axis=0)
        path = folder / f"img_{index:05d}.jpg"
        Image.fromarray((smooth + noise).clip(0, 255).astype(np.uint8)).save(path, quality=90)
        total_bytes += path.stat().st_size
    return {
        "images": images,
        "classes": classes,
        "source_size": size,
        "mean_file_kb": round(total_bytes / images / 1024, 1),
        "seconds_to_write": round(time.perf_counter() - start, 2),
    }


def loader_throughput(dataset: Any, batch_size: int, workers: int, max_batches: int) -> dict[str, Any]:
    """Time to the first batch, then the steady images/s over up to ``max_batches`` more."""
    loader = training_loader(dataset, batch_size, num_workers=workers)
    start = time.perf_counter()
    batches = iter(loader)
    x, _ = next(batches)
    first = time.perf_counter() - start
    assert x.shape[0] == batch_size and x.dtype == torch.float32
    count = 0
    steady_start = time.perf_counter()
    for _ in range(min(max_batches, len(loader) - 1)):
        next(batches)
        count += 1
    steady = time.perf_counter() - steady_start
    del batches
    return {
        "num_workers": workers,
        "first_batch_s": round(first, 3),
        "batches": count,
        "images_per_s": round(count * batch_size / steady, 1) if count else None,
    }


def make_step(model: nn.Module) -> Any:
    """One SAT training step: PGD-1 from a uniform random start, then SGD on the result."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()  # BatchNorm in inference mode while attacking, as the official code does
        delta = torch.empty_like(x).uniform_(-EPS, EPS).requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        x_adv = (x + (delta + EPS * grad.sign()).clamp(-EPS, EPS)).clamp(0, 1).detach()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        return loss.detach().item()

    return step


def step_alone(step: Any, x: torch.Tensor, y: torch.Tensor, repeats: int) -> list[float]:
    step(x, y)  # warm-up: allocator, lazy init
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - start)
    return times


def simulated_loop(dataset: Any, batch_size: int, workers: int, steps: int, step: Any) -> dict[str, Any]:
    """``next(batches)`` then ``step``, ``steps`` times after a first, excluded batch."""
    loader = training_loader(dataset, batch_size, num_workers=workers)
    batches = iter(loader)
    start = time.perf_counter()
    x, y = next(batches)
    startup = time.perf_counter() - start
    step(x, y)  # the first step overlaps the workers' start-up; not counted
    waits, steps_s = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        t1 = time.perf_counter()
        step(x, y)
        t2 = time.perf_counter()
        waits.append(t1 - t0)
        steps_s.append(t2 - t1)
    del batches
    total = sum(waits) + sum(steps_s)
    return {
        "num_workers": workers,
        "startup_s": round(startup, 3),
        "steps": steps,
        "median_wait_s": round(statistics.median(waits), 4),
        "median_step_s": round(statistics.median(steps_s), 3),
        "wait_fraction": round(sum(waits) / total, 4),
        "images_per_s": round(steps * batch_size / total, 1),
    }


def markdown(result: dict[str, Any]) -> str:
    cfg, hw = result["config"], result["hardware"]
    lines = [
        "# imagefolder on CPU: does SAT training wait on data?",
        "",
        f"{result['date']}; `python benchmarks/bench_imagefolder.py`; {hw['cpu']}, "
        f"{hw['cpus_available']} cores available (1/5/15-min load average {hw['load_average_at_start']} "
        f"at the start, {hw['load_average_1_5_15']} at the end), "
        f"torch {hw['torch']}, torchvision {hw['torchvision']}, Pillow {hw['pillow']}, "
        f"{cfg['threads']} intra-op thread(s) in the training process.",
        "",
        f"Data: {result['data']['images']} JPEGs {cfg['source_size']}x{cfg['source_size']} "
        f"(mean {result['data']['mean_file_kb']} KB) in {result['data']['classes']} classes, "
        f"served at {cfg['image_size']}x{cfg['image_size']} with the full training augmentation "
        f"(random-resized crop, flip, colour jitter 0.4, lighting 0.1), batch {cfg['batch_size']}, "
        "through the engine's `training_loader`.",
        "",
        "## Loader alone",
        "",
        "| workers | first batch (s) | images/s |",
        "|---|---|---|",
    ]
    for row in result["loader"]:
        lines.append(f"| {row['num_workers']} | {row['first_batch_s']} | {row['images_per_s']} |")
    alone = result["step_alone"]
    lines += [
        "",
        f"## Training step alone ({cfg['model']}, activation {cfg['activation']})",
        "",
        f"PGD-1 + SGD on a fixed batch: median {alone['median_s']} s per step = "
        f"{alone['images_per_s']} images/s ({alone['repeats']} steps).",
        "",
        "## Simulated training loop",
        "",
        "| workers | median wait (s) | median step (s) | waiting share of loop time | images/s |",
        "|---|---|---|---|---|",
    ]
    for row in result["loop"]:
        lines.append(
            f"| {row['num_workers']} | {row['median_wait_s']} | {row['median_step_s']} | "
            f"{row['wait_fraction']:.1%} | {row['images_per_s']} |"
        )
    lines += ["", "## Reading", "", result["summary"], ""]
    return "\n".join(lines)


def summarise(result: dict[str, Any]) -> str:
    loader = {row["num_workers"]: row["images_per_s"] for row in result["loader"]}
    loop = {row["num_workers"]: row for row in result["loop"]}
    step_rate = result["step_alone"]["images_per_s"]
    parts = []
    if 0 in loader:
        parts.append(
            f"In-process loading (0 workers) delivers {loader[0]} images/s against a step rate of "
            f"{step_rate} images/s, so the loop spends {loop[0]['wait_fraction']:.1%} of its time "
            "decoding when it does it itself."
        )
    with_workers = [w for w in loop if w > 0]
    if with_workers:
        least_wait = min(with_workers, key=lambda w: loop[w]["wait_fraction"])
        parts.append(
            f"With {least_wait} worker(s) the wait falls to {loop[least_wait]['wait_fraction']:.1%} of loop "
            "time: decoding overlaps the step."
        )
        if 0 in loop:
            best = max(with_workers, key=lambda w: loop[w]["images_per_s"])
            gain = loop[best]["images_per_s"] / loop[0]["images_per_s"] - 1
            shared = gain < loop[0]["wait_fraction"] / 2
            parts.append(
                f"Net loop throughput with the best worker count ({best}) changes by {gain:+.1%} "
                f"({loop[0]['images_per_s']} -> {loop[best]['images_per_s']} images/s), against a "
                f"{loop[0]['wait_fraction']:.1%} wait without workers"
                + (
                    ": the workers share the cores with the step, which slows down (median step "
                    f"{loop[0]['median_step_s']} s with 0 workers, "
                    f"{loop[best]['median_step_s']} s with {best})."
                    if shared
                    else "."
                )
            )
        per_worker = loader.get(1)
        if per_worker:
            parts.append(
                f"One worker decodes {per_worker} images/s here, so a step that consumes R images/s "
                f"needs about R / {per_worker} workers (plus cores to run them): "
                f"{max(1, math.ceil(step_rate / per_worker))} for this CPU step; a GPU step "
                "hundreds of times faster needs correspondingly many cores."
            )
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--source-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--loader-batches", type=int, default=12, help="batches timed after the first")
    parser.add_argument("--steps", type=int, default=6, help="loop steps per worker count")
    parser.add_argument("--step-repeats", type=int, default=3)
    parser.add_argument(
        "--model",
        default='{"name": "timm", "architecture": "mobilenetv3_small_100"}',
        help="model spec (JSON)",
    )
    parser.add_argument("--activation", default="silu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    workers = [int(w) for w in args.workers.split(",")]
    started = time.perf_counter()
    load_at_start = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="bench_imagefolder_") as tmp:
        root = Path(tmp)
        data = write_image_folder(root, args.images, args.classes, args.source_size)
        print(
            f"wrote {data['images']} JPEGs ({data['mean_file_kb']} KB each) in {data['seconds_to_write']} s"
        )
        source = ImageFolder(path=root, image_size=args.image_size)
        train = source.load("train")

        loader_rows = []
        for count in workers:
            row = loader_throughput(train, args.batch_size, count, args.loader_batches)
            loader_rows.append(row)
            print(f"loader, workers={count}: first {row['first_batch_s']} s, {row['images_per_s']} images/s")

        model = create_model(json.loads(args.model), source.info(), args.activation)
        step = make_step(model)
        x, y = train[list(range(args.batch_size))]
        times = step_alone(step, x, y, args.step_repeats)
        median = statistics.median(times)
        alone = {
            "repeats": args.step_repeats,
            "median_s": round(median, 3),
            "images_per_s": round(args.batch_size / median, 1),
            "all_s": [round(t, 3) for t in times],
        }
        print(f"step alone: {alone['median_s']} s = {alone['images_per_s']} images/s")

        loop_rows = []
        for count in workers:
            row = simulated_loop(train, args.batch_size, count, args.steps, step)
            loop_rows.append(row)
            print(
                f"loop, workers={count}: wait {row['wait_fraction']:.1%} of loop time, "
                f"step {row['median_step_s']} s, {row['images_per_s']} images/s"
            )

    result: dict[str, Any] = {
        "benchmark": "bench_imagefolder",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": {
            "source_size": args.source_size,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "workers": workers,
            "model": args.model,
            "activation": args.activation,
            "eps": EPS,
            "threads": args.threads,
            "augmentation": source.params(),
        },
        "hardware": {**hardware(), "load_average_at_start": load_at_start},
        "data": data,
        "loader": loader_rows,
        "step_alone": alone,
        "loop": loop_rows,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    result["config"]["augmentation"].pop("path")
    result["summary"] = summarise(result)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "imagefolder_cpu.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out_dir / "imagefolder_cpu.md").write_text(markdown(result), encoding="utf-8")
    print(result["summary"])
    print(f"wrote {args.out_dir / 'imagefolder_cpu.json'} and .md in {result['seconds_total']} s")


if __name__ == "__main__":
    main()
