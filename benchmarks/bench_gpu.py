"""Training and evaluation throughput on a GPU, in one short run (a few minutes on one GPU).

Run by hand (not a test) on a machine with CUDA: ``python benchmarks/bench_gpu.py``. On a
machine without one, ``--device cpu --quick`` checks that the script works (small sizes,
no numbers worth keeping).

What it measures, each with the toolkit's own models and attack plugin:

* **AT step time**: PGD-1 (random start, step = eps, BatchNorm in eval mode while
  attacking, the attack plugin ``pgd``) + cross-entropy + SGD step, for ``small_cnn`` on
  1x28x28 (batch 256) and timm's ResNet-50 at 224 px (batch 64), ReLU vs SiLU, in fp32,
  bf16 autocast, bf16 + channels_last, and bf16 + channels_last + ``torch.compile``.
  The attack computes in the step's precision, as the engine's training attack does.
* **Standard vs adversarial training**: the clean step in the same setting. A PGD-1 step
  costs two forward/backward passes where a clean step costs one (plus one
  backward to the input), so AT's throughput is at most about 0.6 of standard training's.
* **Evaluation**: images/s of :func:`sat_toolkit.evaluate` (the ``aa-core`` suite, fp32)
  on ``small_cnn``.

Times are medians over ``--steps`` timed steps after ``--warmup`` (CUDA synchronised around
each). Writes ``benchmarks/results/gpu.json`` (``--out``) with the hardware.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import sat_toolkit
from sat_toolkit.attacks import create_attack
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.models import create_model

RESULTS = Path(__file__).resolve().parent / "results"
EPS = 4 / 255
SETTINGS = {
    "fp32": {"bf16": False, "channels_last": False, "compile": False},
    "bf16": {"bf16": True, "channels_last": False, "compile": False},
    "bf16_cl": {"bf16": True, "channels_last": True, "compile": False},
    "bf16_cl_compile": {"bf16": True, "channels_last": True, "compile": True},
}


def models(quick: bool) -> dict[str, dict[str, Any]]:
    grey = DatasetInfo(num_classes=10, channels=1, image_size=(28, 28), mean=(0.286,), std=(0.353,))
    size = 64 if quick else 224
    rgb = DatasetInfo(
        num_classes=1000 if not quick else 10, channels=3, image_size=(size, size),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    )  # fmt: skip
    return {
        "small_cnn": {"spec": {"name": "small_cnn"}, "info": grey, "batch": 32 if quick else 256},
        "resnet50": {
            "spec": {"name": "timm", "architecture": "resnet50"},
            "info": rgb,
            "batch": 4 if quick else 64,
        },
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_times(entry: dict[str, Any], activation: str, setting: str, device: torch.device, args: Any) -> dict:
    """Median seconds of one adversarial and one standard training step in ``setting``."""
    config = SETTINGS[setting]
    torch.manual_seed(0)
    model = create_model(entry["spec"], entry["info"], activation).to(device)
    memory = torch.channels_last if config["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=memory)
    forward = torch.compile(model) if config["compile"] else model
    info, batch = entry["info"], entry["batch"]
    x = torch.rand(batch, info.channels, *info.image_size, device=device).contiguous(memory_format=memory)
    y = torch.randint(0, info.num_classes, (batch,), device=device)
    attack = create_attack({
        "name": "pgd", "eps": EPS, "steps": 1, "rel_step_size": 1.0, "random_start_fraction": 1.0,
        "precision": "bf16" if config["bf16"] else "fp32",
    })  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def autocast() -> contextlib.AbstractContextManager[object]:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config["bf16"])

    def update(inputs: torch.Tensor) -> None:
        model.train()
        with autocast():
            loss = F.cross_entropy(forward(inputs).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def adversarial() -> None:
        update(attack.perturb(forward, x, y).x_adv)

    def standard() -> None:
        update(x)

    at = timed(adversarial, device, args.warmup, args.steps)
    clean = timed(standard, device, args.warmup, args.steps)
    return {
        "batch": batch,
        "adversarial_step_s": round(at, 5),
        "standard_step_s": round(clean, 5),
        "adversarial_images_per_s": round(batch / at, 1),
        "standard_images_per_s": round(batch / clean, 1),
        "at_over_standard_throughput": round(clean / at, 3),
    }


def evaluation_rate(device: torch.device, quick: bool) -> dict[str, Any]:
    entry = models(quick)["small_cnn"]
    torch.manual_seed(0)
    model = create_model(entry["spec"], entry["info"], "silu").to(device).eval()
    n = 64 if quick else 1024
    x = torch.rand(n, 1, 28, 28, device=device)
    y = model(x).argmax(1).detach()  # every image clean-correct: the suite attacks all of them
    synchronize(device)
    start = time.perf_counter()
    result = sat_toolkit.evaluate(
        model, x, y, eps=0.1, suite="aa-core", batch_size=512, return_examples=False
    )
    synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "model": "small_cnn (silu, random weights)", "images": n, "suite": "aa-core",
        "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1),
        "robust_accuracy": result.report.robust_accuracy, "precision": result.precision,
    }  # fmt: skip


def hardware(device: torch.device) -> dict[str, Any]:
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script on a CPU")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(
            "no CUDA device here; run on a GPU machine, or check the script with --device cpu --quick"
        )
    settings = [s for s in args.settings.split(",") if s]
    rows = []
    for name, entry in models(args.quick).items():
        for setting in settings:
            for activation in ("relu", "silu"):
                row = {"model": name, "setting": setting, "activation": activation}
                row.update(step_times(entry, activation, setting, device, args))
                print(json.dumps(row), flush=True)
                rows.append(row)
    evaluation = evaluation_rate(device, args.quick)
    print(json.dumps(evaluation), flush=True)
    payload = {"benchmark": "bench_gpu", "hardware": hardware(device), "eps": EPS, "steps": rows}
    payload["evaluation"] = evaluation
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
