"""Run by ``accelerate launch`` from tests/test_distributed.py (not collected by pytest).

Trains a recipe like ``sat-toolkit run`` does, while checking on every rank that each
attack call leaves the model's state (parameters and BatchNorm buffers) bit-identical.

usage: accelerate launch ... distributed_probe.py RECIPE OUT_DIR STOP_AFTER_STEPS(0 = no stop) [resume]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from sat_toolkit.attacks.base import Attack
from sat_toolkit.engine.trainer import train
from sat_toolkit.recipe import load_recipe

recipe_path, out_dir, stop = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
resume = sys.argv[4:] == ["resume"]
counts = {"attack_calls": 0, "state_changed": 0, "batch_sizes": []}
original_perturb = Attack.perturb


def checked_perturb(self, model, x, y, *, eps=None):
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = original_perturb(self, model, x, y, eps=eps)
    after = model.state_dict()
    counts["attack_calls"] += 1
    counts["batch_sizes"].append(len(x))
    counts["state_changed"] += any(not torch.equal(before[k], after[k]) for k in before)
    return result


Attack.perturb = checked_perturb
train(load_recipe(recipe_path), resume=resume, show_progress=False, stop_after_steps=stop or None)
state = PartialState()
counts["world_size"] = state.num_processes
out_dir.mkdir(parents=True, exist_ok=True)
(out_dir / f"rank{state.process_index}.json").write_text(json.dumps(counts))
