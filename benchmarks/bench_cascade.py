"""Our ``standard`` suite with the cascade against the reference AutoAttack's APGD-CE + APGD-T.

Run by hand (not a test): ``python benchmarks/bench_cascade.py --autoattack DIR``, where DIR
holds the reference code's ``autoattack`` package (a checkout of fra31/auto-attack; it is
not on PyPI, so it is never a dependency). A few minutes on 2 CPU cores.

Both sides attack the same model and images with AutoAttack's standard settings for its
two gradient attacks (APGD-CE 100 iterations, 1 restart; APGD-T 100 iterations, 9 target
classes, 1 restart; L-inf eps 0.1), each later attack on the images the earlier one failed
on. The model is the shipped quickstart recipe trained here (digits 8x8, small CNN, SiLU,
about 20 s), evaluated on all 359 test images. Reported: wall time of each side (goal:
ours <= 1.0x the reference), the worst-case robust accuracy of each (the goal: identical)
and on how many images the two disagree, plus our suite without the cascade (every attack
on every clean-correct image) to show what the cascade saves. Writes
``benchmarks/results/cascade_cpu.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import sat_toolkit
from sat_toolkit.data import create_dataset
from sat_toolkit.engine.evaluation import fixed_test_subset
from sat_toolkit.study.ledger import cpu_model

REPO = Path(__file__).resolve().parents[1]
EPS = 0.1


def ours(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cascade: bool) -> dict[str, Any]:
    started = time.perf_counter()
    result = sat_toolkit.evaluate(
        model, x, y, eps=EPS, suite="standard", seed=0, batch_size=256, cascade=cascade, return_examples=False
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "robust_accuracy": result.report.robust_accuracy,
        "worst_case": result.report.worst_case.tolist(),
        "attacked": {label: outcome.attacked for label, outcome in result.report.attacks.items()},
    }


def reference(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, path: Path) -> dict[str, Any]:
    sys.path.insert(0, str(path))
    from autoattack import AutoAttack

    attack = AutoAttack(
        model, norm="Linf", eps=EPS, version="custom", attacks_to_run=["apgd-ce", "apgd-t"], device="cpu",
        seed=0, verbose=False,
    )  # fmt: skip
    attack.apgd.n_restarts = 1  # what version="standard" sets for L-inf
    attack.apgd_targeted.n_target_classes = 9
    attack.apgd_targeted.n_restarts = 1
    started = time.perf_counter()
    x_adv = attack.run_standard_evaluation(x, y, bs=256)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    return {
        "seconds": round(seconds, 2),
        "robust_accuracy": robust.float().mean().item(),
        "worst_case": robust.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--autoattack", type=Path, required=True, help="directory holding the autoattack package"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cascade_cpu.json")
    args = parser.parse_args()
    if not (args.autoattack / "autoattack" / "autoattack.py").is_file():
        parser.error(f"--autoattack: no autoattack/autoattack.py under {args.autoattack}")

    with tempfile.TemporaryDirectory() as tmp:
        summary = sat_toolkit.run(
            REPO / "recipes" / "quickstart.toml", overrides=[f"run.output_dir={tmp}/qs"], show_progress=False
        )
        model = sat_toolkit.load_model(summary.run_dir).eval()
    x, y = fixed_test_subset(create_dataset({"name": "digits"}).load("test"), 0, 0)

    torch.manual_seed(0)
    ref = reference(model, x, y, args.autoattack)
    cascade = ours(model, x, y, cascade=True)
    everything = ours(model, x, y, cascade=False)
    disagree = sum(a != b for a, b in zip(cascade["worst_case"], ref["worst_case"], strict=True))
    payload = {
        "benchmark": "bench_cascade.py",
        "model": "quickstart small_cnn (digits 8x8, SiLU), all 359 test images, L-inf eps 0.1",
        "suite": "APGD-CE (100 it, 1 restart) then APGD-T (100 it, 9 targets, 1 restart), cascade",
        "hardware": {
            "cpu": cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },  # fmt: skip
        "reference_autoattack": ref,
        "ours_cascade": cascade,
        "ours_no_cascade": everything,
        "ours_over_reference_wall": round(cascade["seconds"] / ref["seconds"], 3),
        "images_where_worst_cases_disagree": disagree,
    }
    print(
        f"reference AutoAttack: {ref['seconds']:.1f} s, robust {ref['robust_accuracy']:.4f}\n"
        f"ours, cascade:        {cascade['seconds']:.1f} s, robust {cascade['robust_accuracy']:.4f} "
        f"({payload['ours_over_reference_wall']:.3f}x the reference's time; {disagree} images disagree)\n"
        f"ours, no cascade:     {everything['seconds']:.1f} s, robust {everything['robust_accuracy']:.4f}"
    )
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
