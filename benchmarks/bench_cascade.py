"""Our AutoAttack suites with the cascade against the reference AutoAttack code, same model and images.

Run by hand (not a test): ``python benchmarks/bench_cascade.py --autoattack DIR [--suite NAME]``,
where DIR holds the reference code's ``autoattack`` package (a checkout of fra31/auto-attack;
it is not on PyPI, so it is never a dependency).

* ``--suite aa-core`` (default): our APGD-CE + APGD-T against the reference's two gradient
  attacks with its standard settings (APGD-CE 100 iterations, 1 restart; APGD-T 100
  iterations, 9 target classes, 1 restart). A few minutes on 2 CPU cores.
* ``--suite autoattack``: the whole standard version, APGD-CE, APGD-T, FAB-T (9 targets)
  and Square (5000 queries), against the reference's ``version="standard"``. Longer: Square
  queries every still-robust image 5000 times.

Both sides attack each later attack's images only where the earlier ones failed (L-inf eps
0.1). The model is the shipped quickstart recipe trained here (digits 8x8, small CNN,
SiLU), evaluated on all 359 test images. Reported: wall time of each side (goal: ours <=
1.0x the reference), the worst-case robust accuracy of each (goal: the same) and on how
many images the two disagree, plus ours without the cascade (every attack on every
clean-correct image, aa-core only) to show what the cascade saves. Writes
``benchmarks/results/cascade_cpu.json`` or ``autoattack_cpu.json`` (``--out``).
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
SUITE_DESCRIPTIONS = {
    "aa-core": "APGD-CE (100 it, 1 restart) then APGD-T (100 it, 9 targets, 1 restart)",
    "autoattack": "APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries): version='standard'",
}
OUTPUTS = {"aa-core": "cascade_cpu.json", "autoattack": "autoattack_cpu.json"}


def ours(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, suite: str, cascade: bool
) -> dict[str, Any]:
    started = time.perf_counter()
    result = sat_toolkit.evaluate(
        model, x, y, eps=EPS, suite=suite, seed=0, batch_size=256, cascade=cascade, return_examples=False
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "robust_accuracy": result.report.robust_accuracy,
        "worst_case": result.report.worst_case.tolist(),
        "attacked": {label: outcome.attacked for label, outcome in result.report.attacks.items()},
        "attack_seconds": {
            label: round(outcome.seconds, 2) for label, outcome in result.report.attacks.items()
        },
    }


def reference(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, path: Path, suite: str
) -> dict[str, Any]:
    sys.path.insert(0, str(path))
    from autoattack import AutoAttack

    if suite == "autoattack":
        attack = AutoAttack(
            model, norm="Linf", eps=EPS, version="standard", device="cpu", seed=0, verbose=False
        )
    else:
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
    parser.add_argument("--suite", choices=sorted(SUITE_DESCRIPTIONS), default="aa-core")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/{cascade,autoattack}_cpu.json")
    args = parser.parse_args()
    out = args.out or REPO / "benchmarks" / "results" / OUTPUTS[args.suite]
    if not (args.autoattack / "autoattack" / "autoattack.py").is_file():
        parser.error(f"--autoattack: no autoattack/autoattack.py under {args.autoattack}")

    with tempfile.TemporaryDirectory() as tmp:
        summary = sat_toolkit.run(
            REPO / "recipes" / "quickstart.toml", overrides=[f"run.output_dir={tmp}/qs"], show_progress=False
        )
        model = sat_toolkit.load_model(summary.run_dir).eval()
    x, y = fixed_test_subset(create_dataset({"name": "digits"}).load("test"), 0, 0)

    torch.manual_seed(0)
    ref = reference(model, x, y, args.autoattack, args.suite)
    cascade = ours(model, x, y, args.suite, cascade=True)
    # Without the cascade only for aa-core: for autoattack it would double an hour-long run
    # to show the saving aa-core already shows.
    everything = ours(model, x, y, args.suite, cascade=False) if args.suite == "aa-core" else None
    disagree = sum(a != b for a, b in zip(cascade["worst_case"], ref["worst_case"], strict=True))
    payload = {
        "benchmark": "bench_cascade.py",
        "model": "quickstart small_cnn (digits 8x8, SiLU), all 359 test images, L-inf eps 0.1",
        "suite": f"{args.suite}: {SUITE_DESCRIPTIONS[args.suite]}, cascade",
        "hardware": {
            "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
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
    lines = [
        f"reference AutoAttack: {ref['seconds']:.1f} s, robust {ref['robust_accuracy']:.4f}",
        f"ours, cascade:        {cascade['seconds']:.1f} s, robust {cascade['robust_accuracy']:.4f} "
        f"({payload['ours_over_reference_wall']:.3f}x the reference's time; {disagree} images disagree)",
    ]
    if everything:
        lines.append(
            f"ours, no cascade: {everything['seconds']:.1f} s, robust {everything['robust_accuracy']:.4f}"
        )
    print("\n".join(lines))
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
