"""``sat-toolkit study --reuse DIR``: a cell whose exact recipe another study already ran is
copied from there, not trained again, and the report says where it was trained."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_study import REPO, STUDY, Counter, write_study

from sat_toolkit.commands.study import study_command
from sat_toolkit.engine.trainer import train
from sat_toolkit.parsing import tomllib
from sat_toolkit.recipe import RECIPE_FILE
from sat_toolkit.recipe.rundir import as_read_back, differences
from sat_toolkit.study import load_study, plan, run_study
from sat_toolkit.study import runner as study_runner

PUBLISHED = REPO / "docs" / "results"
ONE_SEED = STUDY.replace("seeds = [0, 1]", "seeds = [0]")
# Another study that shares one cell (relu) with ONE_SEED and adds one (elu).
OVERLAPPING = ONE_SEED.replace('name = "tiny"', 'name = "overlap"').replace(
    'silu = ["activation=silu"]', 'elu = ["activation=elu"]'
)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The source study run in full, then the overlapping one with --reuse pointing at it."""
    root = tmp_path_factory.mktemp("reuse")
    source = load_study(write_study(root / "a", root / "a" / "out", ONE_SEED))
    run_study(source, echo=lambda _: None, command="sat-toolkit study a.toml")
    target = load_study(write_study(root / "b", root / "b" / "out", OVERLAPPING))
    counter, lines = Counter(), []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_runner, "execute_cell", counter)
        run_study(target, echo=lines.append, command="sat-toolkit study b.toml", reuse=(source.output_dir,))
    yield {"root": root, "source": source, "target": target, "trained": counter.keys, "lines": lines}


def test_the_shared_cell_is_copied_and_only_the_new_one_trains(studies: dict[str, Any]) -> None:
    source, target = studies["source"].output_dir, studies["target"].output_dir
    assert studies["trained"] == ["elu/seed0"]
    copied, original = target / "relu" / "seed0", source / "relu" / "seed0"
    for name in ("metrics.json", "recipe.toml", "model.safetensors"):
        assert (copied / name).read_bytes() == (original / name).read_bytes(), name
    note = json.loads((copied / "reused.json").read_text())
    assert note["trained_in"] == str(original) and note["by"] == "sat-toolkit study b.toml"
    assert "relu/seed0" not in json.loads((target / "study.json").read_text())["cells"]  # no compute here
    assert "; 1 finished (1 of them reused), 0 to resume, 1 new;" in studies["lines"][0]
    assert f"reused   relu seed 0 (the same recipe, trained in {original})" in studies["lines"]
    log = (target / "logs" / "relu-seed0.log").read_text()
    assert log.startswith(f"== relu/seed0: not trained here; reused the run in {original}\n")
    assert (source / "logs" / "relu-seed0.log").read_text() in log


def test_the_report_takes_the_copied_numbers_and_names_their_origin(studies: dict[str, Any]) -> None:
    source, target = studies["source"].output_dir, studies["target"].output_dir
    rows = {r["label"]: r for r in json.loads((target / "report.json").read_text())["rows"]}
    evaluation = json.loads((source / "relu" / "seed0" / "metrics.json").read_text())["evaluation"]
    assert rows["relu"]["clean_accuracy"]["mean"] == evaluation["clean_accuracy"]
    assert rows["relu"]["robust_accuracy"]["mean"] == evaluation["robust_accuracy"]
    report = json.loads((target / "report.json").read_text())
    assert report["reused"] == {"relu/seed0": str(source / "relu" / "seed0")}
    assert "- reused, not trained here" in (target / "report.md").read_text()
    assert f"relu/seed0 from `{source / 'relu' / 'seed0'}`" in (target / "report.md").read_text()


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ('{"trained_in": "/somewhere', "Unterminated string"),  # truncated
        ("[]", "'trained_in' is None, not a directory"),
        ('{"trained_in": 5}', "'trained_in' is 5, not a directory"),
        ('{"trained_in": "a\\nb"}', "'trained_in' is 'a\\nb', not a directory"),  # broke the markdown line
    ],
)
def test_a_damaged_reuse_record_is_said_not_read_as_the_copy_itself(
    studies: dict[str, Any], tmp_path: Path, damage: str, why: str
) -> None:
    """Read as the copy's own directory, a damaged reused.json made the report say the run
    was reused from itself."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(studies["target"].output_dir, out)
    (out / "relu" / "seed0" / "reused.json").write_text(damage)
    args = [str(studies["target"].path), "--report-only", "--output-dir", str(out)]
    result = CliRunner().invoke(study_command, args)
    assert result.exit_code == 0, result.output
    assert f"warning: relu/seed0: its reused.json is damaged ({why}" in result.output
    origin = json.loads((out / "report.json").read_text())["reused"]["relu/seed0"]
    assert origin.startswith("an unknown run (") and why in origin
    assert str(out / "relu" / "seed0") + "`" not in (out / "report.md").read_text()


def test_a_copy_of_a_copy_names_where_the_run_was_trained(studies: dict[str, Any]) -> None:
    root, source = studies["root"], studies["source"].output_dir
    third = load_study(write_study(root / "c", root / "c" / "out", OVERLAPPING))
    counter = Counter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_runner, "execute_cell", counter)
        run_study(third, echo=lambda _: None, reuse=(studies["target"].output_dir,))
    assert counter.keys == []  # both cells copied from the second study
    note = json.loads((third.output_dir / "relu" / "seed0" / "reused.json").read_text())
    assert note["trained_in"] == str(source / "relu" / "seed0")
    assert note["copied_from"] == str(studies["target"].output_dir / "relu" / "seed0")
    # Nothing trained here, so no ledger: the report says why there is no wall time or machine.
    assert not (third.output_dir / "study.json").exists()
    report = (third.output_dir / "report.md").read_text()
    assert "- wall time: none spent here, every finished run was reused (see below)\n" in report
    assert "(where this report was built; every finished run was reused)\n" in report


@pytest.mark.parametrize(
    ("extra", "reused"),
    [
        ('"optimizer.lr=0.02"', False),  # changes the result: trained again
        ('"run.deterministic=false"', False),
        ('"checkpoint.every_steps=2"', True),  # cannot change it: still the same run
        ('"train.log_every_steps=1"', True),
    ],
)
def test_only_a_run_of_the_same_recipe_in_every_result_changing_key_is_reused(
    studies: dict[str, Any], tmp_path: Path, extra: str, reused: bool
) -> None:
    text = ONE_SEED.replace('set = ["train.epochs=1"]', f'set = ["train.epochs=1", {extra}]')
    path = write_study(tmp_path, tmp_path / "out", text)
    source = studies["source"].output_dir
    listed = CliRunner().invoke(study_command, [str(path), "--dry-run", "--reuse", str(source)])
    assert listed.exit_code == 0, listed.output
    first = listed.output.splitlines()[0]
    would = f"relu seed 0: new, would reuse the run in {source / 'relu' / 'seed0'}"
    assert first.startswith(would) if reused else first.startswith("relu seed 0: new (")
    summary = "2 cells; 0 finished, 2 to copy with --reuse" if reused else "2 cells; 0 finished"
    assert listed.output.splitlines()[-1] == summary


def test_an_unfinished_run_is_not_reused(studies: dict[str, Any], tmp_path: Path) -> None:
    """A run stopped before its evaluation (checkpoints, no metrics) is no result to copy."""
    elsewhere = load_study(write_study(tmp_path / "x", tmp_path / "x" / "out", ONE_SEED))
    stopped = next(p for p in plan(elsewhere) if p.cell.key == "relu/seed0")
    train(stopped.recipe, show_progress=False, stop_after_steps=5)
    path = write_study(tmp_path / "y", tmp_path / "y" / "out", ONE_SEED)
    listed = CliRunner().invoke(study_command, [str(path), "--dry-run", "--reuse", str(elsewhere.output_dir)])
    assert listed.exit_code == 0 and "would reuse" not in listed.output


@pytest.mark.parametrize(
    "damage",
    [b"\xff\xfe not text", b"[run\nname = 'unclosed", b"[" + b".".join([b"a"] * 100) + b"]"],
    ids=["bytes", "toml", "nested-too-deeply"],
)
def test_a_run_whose_saved_recipe_is_damaged_is_passed_over(
    studies: dict[str, Any], tmp_path: Path, damage: bytes
) -> None:
    """--reuse reads every recipe.toml under the directory it is given: one that cannot be
    read is no run to copy, and the others are still found."""
    import shutil

    source = tmp_path / "copy"
    shutil.copytree(studies["source"].output_dir, source)
    (source / "relu" / "seed0" / RECIPE_FILE).write_bytes(damage)
    path = write_study(tmp_path / "y", tmp_path / "y" / "out", ONE_SEED)
    listed = CliRunner().invoke(study_command, [str(path), "--dry-run", "--reuse", str(source)])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].startswith("relu seed 0: new (")  # its run cannot be read: trained afresh
    assert lines[1].startswith(f"silu seed 0: new, would reuse the run in {source / 'silu' / 'seed0'}")
    assert lines[-1] == "2 cells; 0 finished, 1 to copy with --reuse"


def test_a_reuse_directory_that_does_not_exist_is_a_one_line_error(tmp_path: Path) -> None:
    path = write_study(tmp_path, tmp_path / "out", ONE_SEED)
    result = CliRunner().invoke(study_command, [str(path), "--reuse", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "'--reuse': Directory" in result.output
    assert not (tmp_path / "out").exists()


def _shipped_recipes(name: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """cell key -> the recipe as its run directory would hold it, for a shipped study."""
    spec = load_study(REPO / "recipes" / "studies" / f"{name}.toml", output_dir=tmp_path / name)
    return {p.cell.key: as_read_back(p.recipe) for p in plan(spec)}


def _published_recipe(study: str, key: str) -> dict[str, Any]:
    """The recipe a published run holds: what --reuse compares a cell with."""
    return tomllib.loads((PUBLISHED / study / key / RECIPE_FILE).read_text(encoding="utf-8"))


@pytest.mark.parametrize("native_bf16", [False, True], ids=["fp32-machine", "bf16-machine"])
def test_shipped_studies_share_the_cells_their_headers_say_they_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native_bf16: bool
) -> None:
    """The cells that the study files (and docs/results/README.md) say --reuse copies from
    another study resolve to the same run there, on a machine like the one the published
    runs came from (no native bf16) and on one unlike it, so editing one study, or running
    it elsewhere, cannot silently make it train them again or compare unlike runs."""
    monkeypatch.setattr("sat_toolkit.devices.native_bf16", lambda device=None: native_bf16)
    budget = _shipped_recipes("fashion_mnist_budget", tmp_path)
    overfitting = _shipped_recipes("fashion_mnist_overfitting", tmp_path)
    activations = _shipped_recipes("fashion_mnist_activations_converged", tmp_path)
    objectives = _shipped_recipes("fashion_mnist_objectives", tmp_path)
    gradient = _shipped_recipes("fashion_mnist_gradient_converged", tmp_path)
    convergence = _shipped_recipes("fashion_mnist_convergence", tmp_path)
    relu = activations["relu/seed0"]
    epochs = relu["train"]["epochs"]
    for name, recipe in [*gradient.items(), *((k, r) for k, r in objectives.items() if "pgd_at" in k)]:
        # The converged studies share one budget, training attack and precision.
        assert recipe["train"]["epochs"] == epochs, name
        assert recipe["attack"]["train"] == relu["attack"]["train"], name
        assert recipe["optimizer"]["mixed_precision"] == relu["optimizer"]["mixed_precision"], name

    fc_head = {seed: _published_recipe("fashion_mnist_protocol", f"fc_head/seed{seed}") for seed in (0, 1, 2)}
    pairs = [(budget["e6+relu/seed0"], fc_head[0])]
    # The activation study's seed-0 ReLU and SiLU cells are the overfitting study's PGD-2 cells
    # at the converged budget, which must be one that study ran.
    pairs += [
        (activations[f"{act}/seed0"], overfitting[f"e{epochs}+pgd2+{act}/seed0"]) for act in ("relu", "silu")
    ]
    pairs += [
        (objectives[f"pgd_at+{act}/seed{seed}"], activations[f"{act}/seed{seed}"])
        for act in ("relu", "silu", "parametric_softplus")
        for seed in (0, 1, 2)
    ]
    # The convergence check is the activation study's cells at twice the budget, its ReLU
    # and SiLU cells the overfitting study's PGD-2 cells at that budget.
    for key, recipe in convergence.items():
        assert differences(activations[key], recipe) == [f"train.epochs: {epochs} -> {2 * epochs}"], key
    pairs += [
        (convergence[f"{act}/seed0"], overfitting[f"e{2 * epochs}+pgd2+{act}/seed0"])
        for act in ("relu", "silu")
    ]
    for cell, source in pairs:
        assert differences(source, cell) == []


@pytest.mark.parametrize("native_bf16", [False, True], ids=["fp32-machine", "bf16-machine"])
@pytest.mark.parametrize(
    "study", ["fashion_mnist_protocol", "fashion_mnist_budget", "fashion_mnist_overfitting"]
)
def test_a_published_study_in_progress_continues_on_any_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native_bf16: bool, study: str
) -> None:
    """Every finished run of a study still being run resolves to the run its study file now
    plans, on a machine like the one it trained on (no native bf16) and on one unlike it, so
    the next sitting continues the study wherever it happens to run. (The protocol study once
    left the recipe's precision on "auto": on a CPU with AVX512-BF16 it planned bf16 runs and
    refused its 12 finished fp32 cells.)"""
    monkeypatch.setattr("sat_toolkit.devices.native_bf16", lambda device=None: native_bf16)
    planned = _shipped_recipes(study, tmp_path)
    finished = [key for key in planned if (PUBLISHED / study / key / "metrics.json").is_file()]
    assert finished, f"no finished run of {study} is published"
    for key in finished:
        assert differences(_published_recipe(study, key), planned[key]) == [], key
