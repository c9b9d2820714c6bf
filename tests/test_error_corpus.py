"""A corpus of user mistakes: each is one line of error, exit code 2, and nothing written.

The README promises that a mistake (an unknown key or name, a bad value, an output
location that cannot be used, bad data or a damaged model file) "prints one line per
problem and exits with code 2; nothing is written or overwritten". Every case below runs
the real command line in-process (click's runner, so a stray exception is exit code 1
and fails the case), inside a workspace whose whole file tree is compared before and
after. Almost every case fails during validation, before any model is built.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sat_toolkit.cli import cli
from sat_toolkit.errors import SatError

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = (ROOT / "recipes" / "quickstart.toml").read_text(encoding="utf-8")


# Valid JSON and a valid TOML value, nested past sat_toolkit.parsing.MAX_DEPTH; a TOML table
# header nested as deep (tomllib builds it without recursing; comparing recipes would not).
TOO_DEEP = "[" * 100 + "]" * 100
DEEP_HEADER = "[" + ".".join(["a"] * 100) + "]\n"


def _recipe(**replace: str) -> str:
    """The quickstart recipe with whole lines replaced (``old line`` -> ``new line``)."""
    text = QUICKSTART
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


# name -> recipe text; each is written into the workspace as <name>.toml.
RECIPES: dict[str, str] = {
    "good": QUICKSTART,
    "eps_div0": _recipe(**{"eps = 0.1\n": 'eps = "4/0"\n'}),
    "eps_2": _recipe(**{"eps = 0.1\n": "eps = 2\n"}),
    "eps_neg": _recipe(**{"eps = 0.1\n": "eps = -0.1\n"}),
    "eps_text": _recipe(**{"eps = 0.1\n": 'eps = "small"\n'}),
    "eps_bool": _recipe(**{"eps = 0.1\n": "eps = true\n"}),
    "epochs_huge": _recipe(**{"epochs = 15\n": "epochs = 1000000000000\n"}),
    "epochs_zero": _recipe(**{"epochs = 15\n": "epochs = 0\n"}),
    "epochs_float": _recipe(**{"epochs = 15\n": "epochs = 1.5\n"}),
    "steps_huge": _recipe(**{"epochs = 15\n": "epochs = 15\nsteps = 1000000000000\n"}),
    "lr_zero": _recipe(**{"lr = 0.05\n": "lr = 0\n"}),
    "lr_div0": _recipe(**{"lr = 0.05\n": 'lr = "1/0"\n'}),
    "momentum_1": _recipe(**{"momentum = 0.9\n": "momentum = 1.0\n"}),
    "wd_huge": _recipe(**{"weight_decay = 5e-4\n": "weight_decay = 50\n"}),
    "batch_zero": _recipe(**{"batch_size = 64\n": "batch_size = 0\n"}),
    "batch_huge": _recipe(**{"batch_size = 64\n": "batch_size = 100000000\n"}),
    "seed_huge": _recipe(**{"seed = 0\n": "seed = 99999999999\n"}),
    "seed_neg": _recipe(**{"seed = 0\n": "seed = -1\n"}),
    "fraction_2": _recipe(**{"random_start_fraction = 0.8": "random_start_fraction = 2"}),
    "attack_steps_huge": _recipe(**{"steps = 1\n": "steps = 1000000000\n"}),
    "unknown_section": QUICKSTART + "\n[trian]\nepochs = 2\n",
    "unknown_key": _recipe(**{"lr = 0.05\n": "lr = 0.05\nlrr = 0.1\n"}),
    "unknown_activation": _recipe(**{'name = "silu"\n': 'name = "siluu"\n'}),
    "unknown_attack": _recipe(**{'name = "pgd"\neps': 'name = "pgdd"\neps'}),
    "unknown_attack_param": _recipe(**{"steps = 1\n": "steps = 1\nstepz = 2\n"}),
    "unknown_model": _recipe(**{'name = "small_cnn"': 'name = "small_cnnn"'}),
    "unknown_dataset": _recipe(**{'name = "digits"': 'name = "digitz"'}),
    "unknown_optimizer": _recipe(**{'name = "sgd"': 'name = "lion"'}),
    "unknown_schedule": _recipe(**{'name = "cosine"': 'name = "cosinee"'}),
    "eval_eps_2": _recipe(**{"steps = 20 ": "eps = 2\nsteps = 20 "}),
    "nesterov_no_momentum": _recipe(**{"momentum = 0.9\n": "momentum = 0.0\n"}),
    "missing_attack": QUICKSTART.split("[attack.train]")[0],
    "toml_syntax": QUICKSTART + "\n[run\n",
    "toml_nested": f"a = {TOO_DEEP}\n",
    "toml_deep_header": QUICKSTART + "\n" + DEEP_HEADER,
    "name_slash": _recipe(**{'name = "quickstart"': 'name = "a/b"'}),
    "data_path_missing": _recipe(**{'name = "digits"\n': 'name = "fashion_mnist"\npath = "nowhere"\n'}),
    "idx_garbage": _recipe(**{'name = "digits"\n': 'name = "fashion_mnist"\npath = "fm"\n'}),
    "imagefolder_corrupt": _recipe(
        **{
            'name = "digits"\n': 'name = "imagefolder"\npath = "imf"\nimage_size = 16\n',
            "batch_size = 64\n": "batch_size = 4\n",
        }
    ),
    "three_classes_apgd_t": _recipe(
        **{
            'name = "digits"\n': 'name = "synthetic"\nnum_classes = 3\nimage_size = 8\nchannels = 1\n'
            "train_size = 32\ntest_size = 8\n",
            "batch_size = 64\n": "batch_size = 8\n",
            "[attack.eval.apgd_ce]": '[attack.eval.apgd_t]\nname = "apgd_t"\n\n[attack.eval.apgd_ce]',
        }
    ),
    "imagefolder_no_split": _recipe(
        **{'name = "digits"\n': 'name = "imagefolder"\npath = "imf/train"\nimage_size = 16\n'}
    ),
    "output_under_file": _recipe(**{"seed = 0\n": 'seed = 0\noutput_dir = "blocker/run"\n'}),
    "output_is_file": _recipe(**{"seed = 0\n": 'seed = 0\noutput_dir = "blocker"\n'}),
    "output_other_run": _recipe(**{"seed = 0\n": 'seed = 0\noutput_dir = "runs/other"\n'}),
    "output_not_a_run": _recipe(**{"seed = 0\n": 'seed = 0\noutput_dir = "runs/junk"\n'}),
    "output_same_run": _recipe(**{"seed = 0\n": 'seed = 0\noutput_dir = "runs/same"\n'}),
    "output_nested_recipe": _recipe(**{"seed = 0\n": 'seed = 0\noutput_dir = "runs/nested"\n'}),
}

STUDY = """\
[study]
name = "corpus"
base = "good.toml"
output_dir = "runs/study"
seeds = [0]
{extra}
[[study.axis]]
name = "activation"
[study.axis.values]
relu = ["activation=relu"]
silu = ["activation=silu"]
"""


def _write_model_files(workspace: Path) -> None:
    """A good export of an untrained digits model, and damaged variants of it."""
    from safetensors.torch import load_file, save_file

    from sat_toolkit.data import create_dataset
    from sat_toolkit.export import save_model
    from sat_toolkit.models import create_model

    model = create_model({"name": "small_cnn", "width": 8}, create_dataset("digits").info(), {"name": "silu"})
    config = {
        **model.sat_config,
        "dataset": {"name": "digits"},
        "train_attack": {"name": "pgd", "eps": 0.1, "norm": "linf"},
    }
    good = save_model(model, config, workspace / "good.safetensors")
    state = load_file(str(good))
    key = next(k for k, v in state.items() if v.ndim == 4)
    reshaped = {**state, key: torch.zeros(*(n + 1 for n in state[key].shape))}
    save_file(reshaped, str(workspace / "shape.safetensors"), {"sat_config": json.dumps(config)})
    metadata = {"sat_config": json.dumps(config)}
    moved = {
        **config,
        "dataset": {"name": "fashion_mnist", "path": str(workspace / "gone" / "fashion-mnist")},
    }
    save_file(state, str(workspace / "moved.safetensors"), {"sat_config": json.dumps(moved)})
    relative = {**config, "dataset": {"name": "fashion_mnist", "path": "data/fashion-mnist"}}
    save_file(state, str(workspace / "relative.safetensors"), {"sat_config": json.dumps(relative)})
    save_file(
        {**state, key: torch.full_like(state[key], float("nan"))},
        str(workspace / "nan.safetensors"),
        metadata,
    )
    save_file({**state, key: state[key].to(torch.int64)}, str(workspace / "int.safetensors"), metadata)
    save_file(state, str(workspace / "notjson.safetensors"), {"sat_config": "{not json"})
    save_file(state, str(workspace / "jsonlist.safetensors"), {"sat_config": "[1, 2]"})
    save_file(state, str(workspace / "nested.safetensors"), {"sat_config": TOO_DEEP})
    save_file(state, str(workspace / "noconfig.safetensors"), {"format": "pt"})
    lacking = {k: v for k, v in config.items() if k != "data_info"}
    save_file(state, str(workspace / "lacking.safetensors"), {"sat_config": json.dumps(lacking)})
    (workspace / "truncated.safetensors").write_bytes(good.read_bytes()[:300])
    (workspace / "garbage.safetensors").write_bytes(b"this is not a model")
    (workspace / "weights.bin").write_bytes(b"\0" * 16)


def _write_data(workspace: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = workspace / "imf" / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (workspace / "imf" / "train" / "a" / "2.png").write_bytes(b"not a png")  # the bad file
    (workspace / "fm").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (workspace / "fm" / name).write_bytes(b"garbage")
    (workspace / "fm" / "t10k-labels-idx1-ubyte").write_bytes(b"garbage")


def _write_run_dirs(workspace: Path) -> None:
    """runs/other: another recipe's run; runs/junk: not a run; runs/same: this recipe's, with a checkpoint."""
    from sat_toolkit.recipe import load_recipe, save_resolved_recipe

    base = workspace / "good.toml"
    other = save_resolved_recipe(load_recipe(base, ["optimizer.lr=0.2"]), workspace / "runs" / "other")
    (other.parent / "checkpoints" / "step-00000010").mkdir(parents=True)
    (workspace / "runs" / "junk").mkdir()
    (workspace / "runs" / "junk" / "notes.txt").write_text("mine")
    same = load_recipe(workspace / "output_same_run.toml")
    save_resolved_recipe(same, workspace / "runs" / "same")
    (workspace / "runs" / "same" / "checkpoints" / "step-00000010").mkdir(parents=True)
    # runs/same renamed by hand: its recipe still names runs/same
    shutil.copytree(workspace / "runs" / "same", workspace / "runs" / "renamed")
    (workspace / "runs" / "nested").mkdir()
    (workspace / "runs" / "nested" / "recipe.toml").write_text(DEEP_HEADER, encoding="utf-8")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for name, text in RECIPES.items():
        (root / f"{name}.toml").write_text(text, encoding="utf-8")
    (root / "study_unknown_key.toml").write_text(STUDY.format(extra="sedes = [1]"), encoding="utf-8")
    bad_set = STUDY.format(extra='set = ["optimizer.lrr=1"]')
    (root / "study_bad_set.toml").write_text(bad_set, encoding="utf-8")
    (root / "blocker").write_text("a file where a directory is expected")
    (root / "reports").mkdir()
    (root / "reports" / "nested.json").write_text(TOO_DEEP, encoding="utf-8")
    (root / "reports" / "r-sweep.png").write_text("a file that is not a plot", encoding="utf-8")
    (root / "victim.txt").write_text("a file outside the reports", encoding="utf-8")
    (root / "link.json").symlink_to(root / "victim.txt")
    _write_model_files(root)
    _write_data(root)
    old = Path.cwd()
    os.chdir(root)
    try:
        _write_run_dirs(root)
    finally:
        os.chdir(old)
    return root


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder): what 'unchanged' means."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))
    }


# (id, arguments, a piece of the one-line message that names the key/value or the fix)
CASES: list[tuple[str, list[str], str]] = [
    # -- recipes: values --------------------------------------------------------------------
    ("eps 4/0", ["recipe", "validate", "eps_div0.toml"], "attack.train.eps: division by zero in '4/0'"),
    ("eps 4/0 run", ["run", "eps_div0.toml"], "attack.train.eps: division by zero"),
    ("eps 2", ["recipe", "validate", "eps_2.toml"], "attack.train.eps: must be <= 1 under linf"),
    ("eps 2 run", ["run", "eps_2.toml"], 'write eps = "2/255"'),
    ("eps negative", ["recipe", "validate", "eps_neg.toml"], "attack.train.eps: must be >= 0"),
    ("eps text", ["recipe", "validate", "eps_text.toml"], "attack.train.eps"),
    ("eps boolean", ["recipe", "validate", "eps_bool.toml"], "attack.train.eps"),
    ("eval eps 2", ["recipe", "validate", "eval_eps_2.toml"], "attack.eval.pgd20.eps: must be <= 1"),
    ("epochs 10**12", ["recipe", "validate", "epochs_huge.toml"], "train.epochs: must be <= 100000"),
    ("epochs 0", ["recipe", "validate", "epochs_zero.toml"], "train.epochs: must be >= 1"),
    ("epochs 1.5", ["recipe", "validate", "epochs_float.toml"], "train.epochs: expected an integer"),
    ("steps 10**12", ["recipe", "validate", "steps_huge.toml"], "train.steps: must be <= 100000000"),
    ("lr 0", ["recipe", "validate", "lr_zero.toml"], "optimizer.lr: must be > 0"),
    ("lr 1/0", ["recipe", "validate", "lr_div0.toml"], "optimizer.lr: division by zero"),
    ("momentum 1", ["recipe", "validate", "momentum_1.toml"], "optimizer.momentum: must be < 1"),
    ("weight decay 50", ["recipe", "validate", "wd_huge.toml"], "optimizer.weight_decay: must be <= 1"),
    ("batch 0", ["recipe", "validate", "batch_zero.toml"], "data.batch_size: must be >= 1"),
    ("batch 10**8", ["recipe", "validate", "batch_huge.toml"], "data.batch_size: must be <= 1048576"),
    ("seed 10**11", ["recipe", "validate", "seed_huge.toml"], "run.seed: must be <= 4294967295"),
    ("seed -1", ["recipe", "validate", "seed_neg.toml"], "run.seed: must be >= 0"),
    ("fraction 2", ["recipe", "validate", "fraction_2.toml"], "random_start_fraction: must be <= 1"),
    (
        "attack steps 10**9",
        ["recipe", "validate", "attack_steps_huge.toml"],
        "attack.train.steps: must be <=",
    ),
    ("nesterov", ["recipe", "validate", "nesterov_no_momentum.toml"], "optimizer.nesterov: needs momentum"),
    # -- recipes: names and structure ---------------------------------------------------------
    ("unknown section", ["recipe", "validate", "unknown_section.toml"], "trian: unknown section"),
    ("unknown key", ["recipe", "show", "unknown_key.toml"], "optimizer.lrr: unknown key; did you mean 'lr'"),
    ("unknown activation", ["recipe", "validate", "unknown_activation.toml"], "Did you mean 'silu'"),
    ("unknown attack", ["recipe", "validate", "unknown_attack.toml"], "unknown attack 'pgdd'"),
    ("unknown attack param", ["recipe", "validate", "unknown_attack_param.toml"], "attack.train.stepz"),
    ("unknown model", ["recipe", "validate", "unknown_model.toml"], "unknown model 'small_cnnn'"),
    ("unknown dataset", ["recipe", "validate", "unknown_dataset.toml"], "unknown dataset 'digitz'"),
    ("unknown optimizer", ["recipe", "validate", "unknown_optimizer.toml"], "optimizer.name"),
    ("unknown schedule", ["recipe", "validate", "unknown_schedule.toml"], "unknown schedule 'cosinee'"),
    ("missing attack", ["recipe", "validate", "missing_attack.toml"], "attack: required section"),
    ("toml syntax", ["recipe", "validate", "toml_syntax.toml"], "toml_syntax.toml"),
    ("toml nested", ["recipe", "validate", "toml_nested.toml"], "invalid TOML: nested too deeply to parse"),
    ("toml deep header", ["recipe", "validate", "toml_deep_header.toml"], "invalid TOML: nested too deeply"),
    ("no such recipe", ["run", "nowhere.toml"], "recipe file not found"),
    ("run name slash", ["recipe", "validate", "name_slash.toml"], "run.name: must be a non-empty name"),
    # -- --set ----------------------------------------------------------------------------------
    ("--set eps 1/0", ["run", "good.toml", "--set", "attack.train.eps=1/0"], "division by zero in '1/0'"),
    ("--set eps 8", ["recipe", "show", "good.toml", "--set", "attack.train.eps=8"], "must be <= 1 under"),
    (
        "--set l2 eps 9",
        ["recipe", "validate", "good.toml", "--set", "attack.train.norm=l2", "--set", "attack.train.eps=9"],
        "must be <= 8 under l2",
    ),  # fmt: skip
    ("--set epochs", ["run", "good.toml", "--set", "train.epochs=1000000000000"], "train.epochs: must be <="),
    ("--set malformed", ["run", "good.toml", "--set", "optimizer.lr"], "expected KEY.PATH=VALUE"),
    (
        "--set unclosed table",
        ["run", "good.toml", "--set", 'activation={name = "smoothrelu"'],
        '--set activation: {name = "smoothrelu" is not a TOML inline table or array (Unclosed inline table)',
    ),
    (
        "--set unquoted name in table",
        ["recipe", "validate", "good.toml", "--set", "activation={name = silu}"],
        "is not a TOML inline table or array (Invalid value); strings inside need quotes",
    ),
    ("--set steps 1e3", ["run", "good.toml", "--set", "train.steps=1e3"], "got float 1000.0; write 1000"),
    ("--set unknown", ["run", "good.toml", "--set", "optimizer.lrr=0.1"], "did you mean 'lr'? (from --set)"),
    ("--set into value", ["recipe", "show", "good.toml", "--set", "optimizer.lr.x=1"], "not a table"),
    ("--set activation", ["run", "good.toml", "--set", "activation=siluu"], "unknown activation 'siluu'"),
    (
        "batch x accumulation > data",
        ["run", "good.toml", "--set", "data.batch_size=1024", "--set", "optimizer.grad_accumulation=2"],
        "data.batch_size x optimizer.grad_accumulation is larger than the training set (1 batches",
    ),
    ("--set nested", ["recipe", "show", "good.toml", "--set", f"optimizer.lr={TOO_DEEP}"], "optimizer.lr"),
    # -- run options and output locations ----------------------------------------------------
    ("--dry-run-size alone", ["run", "good.toml", "--dry-run-size", "16"], "--dry-run-size only applies"),
    ("--keep alone", ["run", "good.toml", "--keep"], "--keep only applies with --dry-run"),
    ("output under a file", ["run", "output_under_file.toml"], "blocker is a file, not a directory"),
    ("output is a file", ["run", "output_is_file.toml"], "run.output_dir blocker is a file"),
    (
        "--set output under file",
        ["run", "good.toml", "--set", "run.output_dir=blocker/x"],
        "cannot be created",
    ),
    ("output holds other run", ["run", "output_other_run.toml"], "holds a different run (optimizer.lr"),
    (
        "output holds other run --resume",
        ["run", "output_other_run.toml", "--resume"],
        "holds a different run",
    ),
    ("output not a run", ["run", "output_not_a_run.toml"], "not a sat-toolkit run"),
    ("output same run", ["run", "output_same_run.toml"], "pass --resume to continue it"),
    ("output recipe nested", ["run", "output_nested_recipe.toml"], "nested too deeply to parse"),
    (
        "resume a renamed run dir",
        ["run", "runs/renamed/recipe.toml", "--resume"],
        "its run.output_dir 'runs/same' names",
    ),
    # -- data --------------------------------------------------------------------------------------
    ("data path missing", ["run", "data_path_missing.toml"], "data.path: no such file or directory"),
    ("idx garbage", ["run", "idx_garbage.toml"], "not an IDX file"),
    ("corrupt image", ["run", "imagefolder_corrupt.toml"], "imf/train/a/2.png is not a readable image"),
    (
        "APGD-T on 3 classes",  # stopped the final evaluation, after training
        ["run", "three_classes_apgd_t.toml"],
        "attack 'apgd_t' (apgd_t) needs at least 4 classes and the model has 3; remove [attack.eval.apgd_t]",
    ),
    ("image tree layout", ["run", "imagefolder_no_split.toml"], "expected the layout"),
    # -- eval: options and model files ---------------------------------------------------------
    ("eval --eps 2", ["eval", "good.safetensors", "--eps", "2"], "--eps 2 is larger than any linf"),
    ("eval --eps 1/0", ["eval", "good.safetensors", "--eps", "1/0"], "--eps '1/0'"),
    ("eval --eps -1", ["eval", "good.safetensors", "--eps", "-0.5"], "--eps must be >= 0"),
    ("eval --output dir", ["eval", "good.safetensors", "--output", "reports"], "is a directory"),
    ("eval --output under file", ["eval", "good.safetensors", "--output", "blocker/r.json"], "cannot write"),
    # /proc takes no new file, though os.access says it does to root: refused before evaluating
    ("eval --output in /proc", ["eval", "good.safetensors", "--output", "/proc/sat-r.json"], "cannot write"),
    (
        "eval --output onto the weights",
        ["eval", "good.safetensors", "--output", "good.safetensors"],
        "--output good.safetensors: exists and is not an earlier evaluation report, so it is left as it is",
    ),
    ("eval --output onto a recipe", ["eval", "good.safetensors", "--output", "good.toml"], "not an earlier"),
    ("eval --output a link", ["eval", "good.safetensors", "--output", "link.json"], "is a symbolic link"),
    (
        "eval --sweep plot onto a file",
        ["eval", "good.safetensors", "--sweep", "0.05,0.1", "--output", "reports/r.json"],
        "the --sweep plot beside the report, reports/r-sweep.png: exists and is not an earlier PNG plot",
    ),
    ("eval --suite", ["eval", "good.safetensors", "--suite", "strongest"], "strongest"),
    ("eval --attack", ["eval", "good.safetensors", "--attack", "pgdd:steps=5"], "pgdd"),
    ("eval --samples", ["eval", "good.safetensors", "--samples", "-1"], "--samples must be >= 0"),
    ("eval --norm", ["eval", "good.safetensors", "--norm", "l2"], "pass --eps too"),
    ("eval --mean alone", ["eval", "good.safetensors", "--mean", "0.5"], "give --arch too"),
    ("eval --arch no data", ["eval", "weights.bin", "--arch", "resnet18"], "--data NAME"),
    ("eval no such model", ["eval", "nowhere.safetensors"], "no such run directory or model file"),
    ("eval run dir unfinished", ["eval", "runs/other"], "has no model.safetensors"),
    ("eval not a run", ["eval", "runs/junk"], "runs/junk is not a run directory (no recipe.toml, no model"),
    ("eval wrong suffix", ["eval", "weights.bin"], "expected a run directory or a .safetensors"),
    ("model wrong shapes", ["eval", "shape.safetensors"], "weights do not fit the rebuilt small_cnn"),
    (
        "model NaN weights",
        ["eval", "nan.safetensors"],
        "' holds NaN or inf, so the weights would give meaningless",
    ),
    ("model int weights", ["eval", "int.safetensors"], "' is int64, the model's is float32"),
    (
        "model of moved data",
        ["eval", "moved.safetensors"],
        "fashion-mnist', which is not on this machine; pass --data-path DIR, the folder of that dataset here",
    ),
    (
        "model of data at a relative path",
        ["eval", "relative.safetensors"],
        "in 'data/fashion-mnist', a path relative to where the run was started, not found from ",
    ),
    ("model config not JSON", ["eval", "notjson.safetensors"], "sat_config metadata is not JSON"),
    ("model config a list", ["eval", "jsonlist.safetensors"], "JSON but not an object"),
    ("model config nested", ["eval", "nested.safetensors"], "not JSON (nested too deeply to parse"),
    ("eval --compare nested", ["eval", "--compare", "reports/nested.json", "good.safetensors"], "nested too"),
    ("model without config", ["eval", "noconfig.safetensors"], "carries no sat_config"),
    ("model config lacking", ["eval", "lacking.safetensors"], "sat_config lacks 'data_info'"),
    ("model truncated", ["eval", "truncated.safetensors"], "truncated.safetensors"),
    ("model garbage", ["eval", "garbage.safetensors"], "not a readable safetensors file"),
    # -- study, plugins, activations -----------------------------------------------------------
    ("study missing", ["study", "nowhere.toml"], "nowhere.toml"),
    ("study unknown key", ["study", "study_unknown_key.toml", "--dry-run"], "sedes"),
    ("study bad set", ["study", "study_bad_set.toml", "--dry-run"], "optimizer.lrr"),
    ("study --jobs 0", ["study", "study_unknown_key.toml", "--jobs", "0"], "--jobs"),
    ("plugins --kind", ["plugins", "--kind", "optimizer"], "--kind"),
    ("activations --only", ["activations", "--only", "siluu"], "unknown activation 'siluu'"),
    ("activations --only --plot", ["activations", "--only", "nope", "--plot", "x.png"], "unknown activation"),
    ("activations --plot under file", ["activations", "--plot", "blocker/x.png"], "--plot blocker/x.png"),
    ("activations --plot dir", ["activations", "--plot", "reports"], "reports"),
    ("activations --plot onto weights", ["activations", "--plot", "good.safetensors"], "not an earlier PNG"),
]


def test_an_earlier_report_or_plot_is_what_may_be_replaced(tmp_path: Path) -> None:
    """The other side of the cases above: rerunning into one's own earlier output works."""
    from sat_toolkit.commands.eval import check_writable

    report = tmp_path / "r.json"
    report.write_text(json.dumps({"threat_model": "linf", "clean_acc": 0.9, "robust_acc": 0.5}))
    plot = tmp_path / "p.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    check_writable(report)
    check_writable(plot, "--plot", plot=True)
    with pytest.raises(SatError, match="not an earlier evaluation report"):
        check_writable(plot)  # a plot where a report goes
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"robust_acc": 0.5}))  # JSON, but not a report
    with pytest.raises(SatError, match="not an earlier evaluation report"):
        check_writable(other)


@pytest.fixture
def in_workspace(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield workspace


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(("args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_is_one_line_exit_2_and_writes_nothing(in_workspace: Path, args: list[str], expected: str):
    before = _tree(in_workspace)
    result = CliRunner().invoke(cli, args)
    lines = _error_lines(result.stderr)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    assert len(lines) == 1, lines
    assert expected in lines[0], lines[0]
    assert _tree(in_workspace) == before  # nothing written, nothing overwritten


def test_the_corpus_is_large_and_its_ids_unique() -> None:
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


def test_a_disabled_plugin_the_recipe_needs_is_one_line(
    fake_distribution, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SAT_TOOLKIT_DISABLE_PLUGINS: the blocked plugin is unknown (one line), a typo warns (one line)."""
    from sat_toolkit.plugins import reset_plugin_host

    fake_distribution(
        "wobble-acts",
        """
        from torch import nn
        from sat_toolkit.plugins import hookimpl

        class Wobble(nn.SiLU):
            name = "wobble"
            smooth = True
            def __init__(self, inplace: bool = False) -> None:
                super().__init__()

        @hookimpl
        def sat_register_activations():
            return [Wobble]
        """,
    )
    recipe = tmp_path / "r.toml"
    recipe.write_text(QUICKSTART.replace('name = "silu"', 'name = "wobble"'), encoding="utf-8")
    monkeypatch.setenv("SAT_TOOLKIT_DISABLE_PLUGINS", "wobble-acts")
    reset_plugin_host()
    before = _tree(tmp_path)
    result = CliRunner().invoke(cli, ["recipe", "validate", str(recipe)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = _error_lines(result.stderr)
    assert "activation.name: unknown activation 'wobble'" in line
    assert _tree(tmp_path) == before

    monkeypatch.setenv("SAT_TOOLKIT_DISABLE_PLUGINS", "wobble-act")
    reset_plugin_host()
    with pytest.warns(
        UserWarning, match="'wobble-act' matches no external plugin.*did you mean 'wobble-acts'"
    ):
        result = CliRunner().invoke(cli, ["recipe", "validate", str(recipe)])
    assert result.exit_code == 0 and result.stdout == "ok\n"


def test_resume_from_inside_the_run_dir_says_where_it_was_started(workspace: Path, monkeypatch) -> None:
    """`cd runs/same && sat-toolkit run recipe.toml --resume` read run.output_dir 'runs/same'
    from there and trained a new run from step 0 in runs/same/runs/same."""
    run_dir = workspace / "runs" / "same"
    monkeypatch.chdir(run_dir)
    before = _tree(workspace)
    result = CliRunner().invoke(cli, ["run", "recipe.toml", "--resume"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"Error: --resume: recipe.toml is the recipe of the run in {run_dir.resolve()}, but its "
        f"run.output_dir 'runs/same' names {run_dir.resolve() / 'runs' / 'same'} from here, which would "
        f"start a new run; run it from {workspace.resolve()}, where it was started (relative paths in it "
        "are read from there): "
        f"cd {workspace.resolve()} && sat-toolkit run runs/same/recipe.toml --resume; or "
        f"--set run.output_dir={run_dir.resolve()}"
    )
    assert _tree(workspace) == before


def test_resume_reads_run_output_dir_as_the_trainer_does(tmp_path: Path, monkeypatch) -> None:
    """No ~ expansion: the trainer writes output_dir '~/q' under ./~/q, and its resume from
    there was refused as if it named the home directory's q."""
    from sat_toolkit.recipe import load_recipe, save_resolved_recipe
    from sat_toolkit.recipe.rundir import refuse_resume_elsewhere

    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.toml").write_text(RECIPES["good"], encoding="utf-8")
    recipe = load_recipe(tmp_path / "good.toml", ["run.output_dir=~/q"])
    saved = save_resolved_recipe(recipe, Path("~/q"))  # relative: the folder is named '~'
    (saved.parent / "checkpoints").mkdir()
    refuse_resume_elsewhere(Path("~/q/recipe.toml"), recipe)  # the right place: no error
    monkeypatch.chdir(saved.parent)
    with pytest.raises(SatError, match="names .*/~/q/~/q from here"):
        refuse_resume_elsewhere(Path("recipe.toml"), recipe)


def test_sigint_during_run_says_how_to_resume_and_exits_130(workspace: Path, tmp_path: Path) -> None:
    """Ctrl-C in `sat-toolkit run`: the exact --resume command and exit code 130, not 'Aborted!'."""
    shutil.copy(workspace / "good.toml", tmp_path / "good.toml")
    run_dir = tmp_path / "runs" / "int"
    command = [sys.executable, "-m", "sat_toolkit", "run", "good.toml", "--no-progress",
               "--set", "run.output_dir=runs/int"]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        # A shell without job control starts background jobs with SIGINT ignored; undo that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "recipe.toml").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # inside the training loop
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    assert _error_lines(stderr)[-1] == (
        "interrupted; continue the run with: sat-toolkit run good.toml --set run.output_dir=runs/int "
        "--no-progress --resume"  # the run's own options kept
    )
    assert not (run_dir / "metrics.json").exists()
