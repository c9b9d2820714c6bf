"""Re-score finished bf16 runs whose final evaluation ran through the training's autocast.

Until sat_toolkit/engine/precision.py, a run trained with ``optimizer.mixed_precision =
"bf16"`` validated and evaluated through the forward accelerate patches for mixed
precision, so its metrics.json holds bf16 evaluation numbers although its recipe asks for
fp32 evaluation attacks, and ``sat-toolkit eval`` of its exported model scores other
numbers. This runs each run's final evaluation again as the trainer now does it (the
run's recipe.toml: attacks, test images, seed, cascade, evaluation batch size and memory
format; its exported weights; fp32) and rewrites its metrics.json: ``evaluation`` becomes
the fp32 result, the old one stays as ``evaluation_bf16_forward``, and ``reevaluated``
says when, by what and why. The per-epoch validation is not redone (it needs each
epoch's weights); it stays as trained, in bf16.

    python benchmarks/studies/reevaluate_fp32.py RUN_DIR...

Runs that trained in fp32, or were re-scored already, are left alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from accelerate import Accelerator

from sat_toolkit.data import create_dataset
from sat_toolkit.engine.evaluation import final_evaluation
from sat_toolkit.engine.trainer import write_json
from sat_toolkit.export import load_model
from sat_toolkit.recipe import METRICS_FILE, MODEL_FILE, RECIPE_FILE, load_recipe

WHY = (
    "the run's final evaluation went through accelerate's bf16-autocast forward; re-run in fp32 as "
    "its recipe says (sat_toolkit/engine/precision.py)"
)


def reevaluate(run_dir: Path, command: str) -> str:
    """Re-score ``run_dir`` in place; what happened, in a line."""
    metrics_path = run_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text())
    recipe = load_recipe(run_dir / RECIPE_FILE)
    if recipe.optimizer.mixed_precision != "bf16":
        return f"{run_dir}: trained in {recipe.optimizer.mixed_precision}, left alone"
    if "reevaluated" in metrics:
        return f"{run_dir}: re-scored already ({metrics['reevaluated']['date']}), left alone"
    model = load_model(run_dir / MODEL_FILE)
    if recipe.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    test_set = create_dataset(recipe.data.plugin.to_dict()).load("test")
    evaluation = final_evaluation(recipe, model, test_set, Accelerator(cpu=True), show_progress=False)
    old = metrics["evaluation"]
    metrics["evaluation_bf16_forward"] = old
    metrics["evaluation"] = evaluation
    metrics["reevaluated"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "by": command,
        "commit": _commit(),
        "why": WHY,
    }
    write_json(metrics_path, metrics)
    return (
        f"{run_dir}: clean {old['clean_accuracy']:.3f} -> {evaluation['clean_accuracy']:.3f}, "
        f"worst case {old['robust_accuracy']:.3f} -> {evaluation['robust_accuracy']:.3f}"
    )


def _commit() -> str:
    here = Path(__file__).resolve().parent
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (with metrics.json)")
    args = parser.parse_args()
    command = " ".join(["python benchmarks/studies/reevaluate_fp32.py", *sys.argv[1:]])
    for run_dir in args.runs:
        print(reevaluate(run_dir, command), flush=True)


if __name__ == "__main__":
    main()
