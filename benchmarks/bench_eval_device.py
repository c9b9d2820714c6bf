"""Wall time of ``sat-toolkit eval``'s suite on each device this machine has.

Run by hand (not a test): ``python benchmarks/bench_eval_device.py [--out results.json]``.

It trains the shipped quickstart recipe (digits, small CNN, SiLU; about 20 s on a CPU) and
then times :func:`sat_toolkit.evaluate` with the ``aa-core`` suite (APGD-CE + APGD-T) on
all 359 test images, once per available device (CPU, and CUDA when present), with the
same seed. The robust accuracies must agree across devices up to a few images (float
differences move borderline images); the wall times are the point. A timm ResNet-18 on
CIFAR-sized synthetic inputs adds a heavier model where the GPU's advantage shows.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import sat_toolkit
from sat_toolkit.data import create_dataset
from sat_toolkit.engine.evaluation import fixed_test_subset
from sat_toolkit.study.ledger import cpu_model

REPO = Path(__file__).resolve().parents[1]


def _devices() -> list[str]:
    return ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _time(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, eps: float) -> dict:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = sat_toolkit.evaluate(model, x, y, eps=eps, suite="aa-core", device=device, return_examples=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "images": len(y),
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "attacks": result.attacks,
        "device": result.to_dict()["environment"]["device"],
    }


def quickstart_rows() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        summary = sat_toolkit.run(
            REPO / "recipes" / "quickstart.toml", overrides=[f"run.output_dir={tmp}/qs"], show_progress=False
        )
        model = sat_toolkit.load_model(summary.run_dir)
    x, y = fixed_test_subset(create_dataset({"name": "digits"}).load("test"), 0, 0)
    return [{"model": "quickstart small_cnn (digits 8x8)", **_time(model, x, y, d, 0.1)} for d in _devices()]


def resnet_rows(images: int) -> list[dict]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).eval()
    x = torch.rand(images, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)  # every image clean-correct, so the whole suite runs on all of them
    return [
        {
            "model": f"timm resnet18 (random init, {images} synthetic 32x32 RGB)",
            **_time(model, x, y, d, 8 / 255),
        }
        for d in _devices()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "eval_device.json")
    parser.add_argument("--resnet-images", type=int, default=64)
    args = parser.parse_args()
    rows = quickstart_rows() + resnet_rows(args.resnet_images)
    for row in rows:
        seconds, robust = row["seconds"], row["robust_accuracy"]
        print(f"{row['device']:<28} {row['model']:<55} {seconds:>8.1f} s  robust {robust:.4f}")
    payload = {
        "benchmark": "bench_eval_device.py",
        "suite": "aa-core (APGD-CE 100 steps + APGD-T 100 steps x 9 targets)",
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
