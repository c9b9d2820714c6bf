"""Throughput of the attack library against a minimal hand-written PyTorch loop.

Run by hand (not a test): ``python benchmarks/bench_attacks.py [--out results.json]``.

For a fixed small CNN and batch it measures images/second of PGD-1 (SAT's training
attacker), PGD-10 and APGD-CE (10 iterations), on CPU and, when available, CUDA, next to a
hand-written PGD loop doing the same number of forward/backward passes in the same run.
Timings are interleaved (ours, reference, ours, ...) and the median is reported, so a
machine that gets busier half-way penalises both sides alike. The goal for PGD is a
ratio ours/reference of at least 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.attacks import APGDCE, PGD
from sat_toolkit.study.ledger import cpu_model

EPS = 4 / 255


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head on 32x32 RGB: CIFAR-sized, cheap enough for a CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.SiLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.SiLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(64 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def reference_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int):
    """The minimal loop people write by hand (model already in eval mode)."""
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), lo), hi)
    return x_adv


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_pair(
    ours: Callable[[], object], reference: Callable[[], object], device: torch.device, repeats: int
) -> tuple[float, float]:
    for fn in (ours, reference, ours, reference):  # warm-up (allocator, kernels, caches)
        fn()
    _sync(device)
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    for _ in range(repeats):
        for key, fn in (("ours", ours), ("ref", reference)):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - start)
    return statistics.median(times["ours"]), statistics.median(times["ref"])


def run(device: torch.device, batch: int, repeats: int) -> list[dict[str, object]]:
    torch.manual_seed(0)
    model = SmallCNN().to(device).eval()
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    cases = [
        ("pgd-1", PGD(eps=EPS, steps=1), 1, EPS),
        ("pgd-10", PGD(eps=EPS, steps=10), 10, 2.5 * EPS / 10),
        ("apgd_ce-10", APGDCE(eps=EPS, steps=10, seed=0), 10, 2.5 * EPS / 10),
    ]
    rows = []
    for label, attack, steps, step in cases:
        ours_s, ref_s = _time_pair(
            lambda attack=attack: attack(model, x, y),
            lambda steps=steps, step=step: reference_pgd(model, x, y, EPS, step, steps),
            device,
            repeats,
        )
        rows.append(
            {
                "device": device.type,
                "attack": label,
                "batch": batch,
                "ours_img_per_s": batch / ours_s,
                "reference_img_per_s": batch / ref_s,
                "ratio": ref_s / ours_s,
            }
        )
    return rows


def hardware(devices: list[torch.device]) -> dict[str, object]:
    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if any(d.type == "cuda" for d in devices):
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_attacks.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    rows = [row for device in devices for row in run(device, args.batch, args.repeats)]

    header = f"{'device':<7}{'attack':<12}{'batch':>6}{'ours img/s':>13}{'hand img/s':>13}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['device']:<7}{r['attack']:<12}{r['batch']:>6}{r['ours_img_per_s']:>13.1f}"
            f"{r['reference_img_per_s']:>13.1f}{r['ratio']:>8.3f}"
        )
    print("ratio = hand-written time / our time (1.0 = as fast; goal for PGD >= 0.95).")
    print("APGD is compared with a hand-written PGD of as many steps (its bookkeeping is extra work).")

    report = {"hardware": hardware(devices), "eps": EPS, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
