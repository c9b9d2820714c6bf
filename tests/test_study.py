"""``sat-toolkit study``: a tiny grid of digits runs, resumed, skipped, aggregated, plotted."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from sat_toolkit.commands.study import study_command
from sat_toolkit.engine.trainer import train
from sat_toolkit.errors import SatError
from sat_toolkit.parsing import tomllib
from sat_toolkit.recipe.toml_io import dumps
from sat_toolkit.study import StudyError, load_study, plan, run_study, write_report
from sat_toolkit.study import runner as study_runner
from sat_toolkit.study.ledger import available_cores

REPO = Path(__file__).resolve().parents[1]
KEYS = ["relu/seed0", "silu/seed0", "relu/seed1", "silu/seed1"]  # seed-major grid order
INTERRUPTED = "silu/seed1"


def tiny_base() -> dict[str, Any]:
    """Like tests/test_engine.py's tiny_recipe, smaller: 320 digits, 10 steps, PGD-5 on 100 images."""
    return {
        "run": {"name": "tiny", "seed": 0, "deterministic": True},
        "data": {"name": "digits", "batch_size": 32, "eval_batch_size": 128, "limit_train": 320},
        "model": {"name": "small_cnn", "width": 8, "depth": 2, "convs_per_stage": 1},
        "activation": "silu",
        "attack": {
            "train": {"name": "pgd", "eps": 0.1, "steps": 1, "rel_step_size": 1.0},
            "eval": {"samples": 100, "seed": 0, "pgd5": {"name": "pgd", "steps": 5}},
        },
        "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0},
        "train": {"epochs": 3, "validate_every_epochs": 0, "log_every_steps": 5},
        "checkpoint": {"every_steps": 4, "keep_last": 5},
        "logging": {"tensorboard": False},
    }


STUDY = """
[study]
name = "tiny"
description = "two activations, two seeds"
base = "base/tiny.toml"
output_dir = "{out}"
seeds = [0, 1]
baseline = "relu"
set = ["train.epochs=1"]

[[study.axis]]
name = "activation"
[study.axis.values]
relu = ["activation=relu"]
silu = ["activation=silu"]
"""


def write_study(directory: Path, out: Path, text: str = STUDY) -> Path:
    (directory / "base").mkdir(parents=True, exist_ok=True)
    (directory / "base" / "tiny.toml").write_text(dumps(tiny_base()))
    path = directory / "study.toml"
    path.write_text(text.replace("{out}", str(out)))
    return path


class Counter:
    """Wraps the runner's per-cell function to count how often each cell really trains."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def __call__(self, task: study_runner.CellTask) -> study_runner.CellOutcome:
        self.keys.append(task.key)
        return _execute_cell(task)


_execute_cell = study_runner.execute_cell


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the tiny study once, with one cell interrupted beforehand (stopped after 5 steps)."""
    root = tmp_path_factory.mktemp("study")
    spec = load_study(write_study(root, root / "out"))
    interrupted = next(p for p in plan(spec) if p.cell.key == INTERRUPTED)
    assert train(interrupted.recipe, show_progress=False, stop_after_steps=5).metrics == {
        "stopped_at_step": 5
    }
    counter, lines = Counter(), []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_runner, "execute_cell", counter)
        result = run_study(spec, jobs=1, echo=lines.append, command="sat-toolkit study tiny.toml")
    yield {"spec": spec, "result": result, "calls": counter.keys, "lines": lines, "root": root}


def _evaluation(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "metrics.json").read_text())["evaluation"]


def test_every_cell_runs_exactly_once_in_its_own_directory(study: dict[str, Any]) -> None:
    spec = study["spec"]
    assert study["calls"] == KEYS
    for key in KEYS:
        run_dir = spec.output_dir / key
        assert (run_dir / "model.safetensors").is_file()
        saved = tomllib.loads((run_dir / "recipe.toml").read_text())
        assert saved["run"]["seed"] == int(key[-1]) and saved["run"]["output_dir"] == str(run_dir)
        assert saved["activation"]["name"] == key.split("/")[0]
        assert saved["train"]["epochs"] == 1  # study.set reached every cell
    ledger = json.loads((spec.output_dir / "study.json").read_text())
    assert {key: len(attempts) for key, attempts in ledger["cells"].items()} == dict.fromkeys(KEYS, 1)


def test_an_interrupted_cell_resumes_from_its_checkpoint(study: dict[str, Any]) -> None:
    spec = study["spec"]
    assert any("started  silu seed 1 (resuming from step 4)" in line for line in study["lines"])
    ledger = json.loads((spec.output_dir / "study.json").read_text())
    assert ledger["cells"][INTERRUPTED][0]["resumed_from_step"] == 4
    assert json.loads((spec.output_dir / INTERRUPTED / "metrics.json").read_text())["steps"] == 10
    assert "resumed from" in (spec.output_dir / "logs" / "silu-seed1.log").read_text()


def test_running_again_skips_finished_cells_and_touches_nothing(study: dict[str, Any]) -> None:
    spec = study["spec"]
    watched = [spec.output_dir / key / name for key in KEYS for name in ("metrics.json", "model.safetensors")]
    before = {p: p.stat().st_mtime_ns for p in watched}
    counter, lines = Counter(), []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_runner, "execute_cell", counter)
        run_study(spec, jobs=1, echo=lines.append, report=False)
    assert counter.keys == []
    assert sum(line.startswith("skipped") for line in lines) == 4
    assert {p: p.stat().st_mtime_ns for p in watched} == before


def test_report_json_numbers_are_exactly_the_runs_statistics(study: dict[str, Any]) -> None:
    report = json.loads((study["spec"].output_dir / "report.json").read_text())
    rows = {row["label"]: row for row in report["rows"]}
    assert list(rows) == ["relu", "silu"]
    for label, row in rows.items():
        assert row["pgd_label"] == "pgd5"
        for key, pick in (
            ("clean_accuracy", lambda e: e["clean_accuracy"]),
            ("robust_accuracy", lambda e: e["robust_accuracy"]),
            ("pgd", lambda e: e["attacks"]["pgd5"]["robust_accuracy"]),
        ):
            stat = row[key]
            # Every number names its runs, and those runs' files hold exactly the values used.
            assert [s["run_dir"] for s in stat["runs"]] == [
                str(study["spec"].output_dir / label / f"seed{k}") for k in (0, 1)
            ]
            values = [pick(_evaluation(s["run_dir"])) for s in stat["runs"]]
            assert [s["value"] for s in stat["runs"]] == values
            assert all(Path(s["recipe"]).is_file() for s in stat["runs"])
            assert stat["n"] == 2
            assert stat["mean"] == statistics.fmean(values)
            assert stat["std"] == statistics.stdev(values)
    change = rows["silu"]["change_vs_baseline"]
    for key in ("clean_accuracy", "robust_accuracy"):
        assert change[key]["difference_of_means"] == rows["silu"][key]["mean"] - rows["relu"][key]["mean"]
        # Welch's standard error of the difference, from the per-run values themselves.
        silu, relu = ([r["value"] for r in rows[k][key]["runs"]] for k in ("silu", "relu"))
        expected = math.sqrt(statistics.variance(silu) / 2 + statistics.variance(relu) / 2)
        assert change[key]["standard_error"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert len(change[key]["runs"]) == 4
    assert report["test_images"] == [100] and report["cells"]["missing"] == []


def test_report_markdown_states_provenance_and_the_paper_table(study: dict[str, Any]) -> None:
    import torch

    text = (study["spec"].output_dir / "report.md").read_text()
    assert "test images evaluated per run: 100" in text
    assert f"torch {torch.__version__.split('+')[0]}" in text
    assert f", {available_cores()} core(s) available to the study, " in text
    # the vector units, since a VM's CPU name ('AMD EPYC') can hide a 2.6x difference in speed
    assert f"({torch.backends.cpu.get_cpu_capability()}, " in text and " bf16), " in text
    assert "wall time:" in text and "command: `sat-toolkit study tiny.toml`" in text
    assert "- runs trained and evaluated on: cpu\n" in text  # each run's metrics.json says where it ran
    assert "| activation | clean acc % | robust acc % (worst case) | PGD (pgd5) % |" in text
    assert "| relu |" in text and "(baseline)" in text


@pytest.mark.parametrize(
    ("capability", "bf16", "expected"),
    [("AVX2", False, "AVX2, no native bf16"), ("AVX512", True, "AVX512, native bf16")],
)
def test_the_ledger_names_the_cpus_vector_units(
    monkeypatch: pytest.MonkeyPatch, capability: str, bf16: bool, expected: str
) -> None:
    import torch

    from sat_toolkit.study.ledger import cpu_features

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr("sat_toolkit.devices.native_bf16", lambda device=None: bf16)
    assert cpu_features() == expected


def test_scatter_plot_is_a_valid_png(study: dict[str, Any]) -> None:
    path = study["spec"].output_dir / "scatter.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 200


def test_the_changes_figure_draws_the_reports_paired_changes(study: dict[str, Any]) -> None:
    """changes.png: one dot and interval per compared row and panel, the numbers of
    report.json's change_vs_baseline in points; the baseline row is not drawn."""
    from sat_toolkit.study.plot import change_points

    out = study["spec"].output_dir
    with Image.open(out / "changes.png") as image:
        assert image.format == "PNG" and image.size[0] > 200
    assert "![changes against the baseline](changes.png)" in (out / "report.md").read_text()
    rows = json.loads((out / "report.json").read_text())["rows"]
    (silu,) = (row for row in rows if row["label"] == "silu")
    for key in ("clean_accuracy", "robust_accuracy"):
        (point,) = change_points(rows, key, compare_axis="activation", baseline="relu")
        paired = silu["change_vs_baseline"][key]["paired"]
        assert point["label"] == "silu" and point["baseline"] == "relu" and point["seeds"] == 2
        assert point["mean"] == pytest.approx(100 * paired["mean"])
        assert point["interval"] == pytest.approx([100 * end for end in paired["interval"]])
        assert point["beyond_noise"] == paired["beyond_noise"]


def test_report_only_rebuilds_the_same_numbers(study: dict[str, Any]) -> None:
    out = study["spec"].output_dir
    before = json.loads((out / "report.json").read_text())["rows"]
    (out / "report.json").unlink()
    (out / "scatter.png").unlink()
    result = CliRunner().invoke(study_command, [str(study["spec"].path), "--report-only"])
    assert result.exit_code == 0, result.output
    after = json.loads((out / "report.json").read_text())
    assert after["rows"] == before and (out / "scatter.png").is_file()
    assert after["report_command"] == f"sat-toolkit study {study['spec'].path} --report-only"
    assert f"report rebuilt by: `{after['report_command']}`" in (out / "report.md").read_text()


def test_report_only_without_the_set_the_study_ran_with_says_so(
    study: dict[str, Any], tmp_path: Path
) -> None:
    """A stranger's walk: the study ran with --set train.steps=...; --report-only without it
    said "no finished runs ... run the study first" of four finished runs."""
    out = tmp_path / "out"
    shutil.copytree(study["spec"].output_dir, out)
    args = [str(study["spec"].path), "--report-only", "--output-dir", str(out), "--set", "optimizer.lr=0.5"]
    result = CliRunner().invoke(study_command, args)
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(
        f"Error: study tiny: the 4 finished run(s) under {out} have other settings than this study asks for "
        "(optimizer.lr: 0.01 -> 0.5): the study file or its base recipe changed since they ran (restore "
        "it), or they ran with a --set this command lacks; it ran as: "
    ), line


def test_a_study_refuses_an_output_dir_that_is_a_file_or_another_studys(
    study: dict[str, Any], tmp_path: Path
) -> None:
    """A stranger's walk: a file there failed once per cell, each line advising a --set the
    study refuses; another study's directory got its report.md overwritten by this one's."""
    path = str(study["spec"].path)
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    result = CliRunner().invoke(study_command, [path, "--dry-run", "--output-dir", str(blocker)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"--output-dir {blocker} is a file; the study keeps its cells and report" in result.output
    other = tmp_path / "other"
    shutil.copytree(study["spec"].output_dir, other)
    report = json.loads((other / "report.json").read_text())
    (other / "report.json").write_text(json.dumps({**report, "study": "acts"}))
    before = {p: p.read_bytes() for p in other.rglob("*") if p.is_file()}
    for extra in (["--report-only"], ["--dry-run"], []):
        result = CliRunner().invoke(study_command, [path, "--output-dir", str(other), *extra])
        assert result.exit_code == 2, result.output
        assert result.output.strip() == (
            f"Error: --output-dir {other} holds the study 'acts' (its report.json); give the study 'tiny' a "
            "directory of its own"
        )
    assert {p: p.read_bytes() for p in other.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("extra", [["--dry-run"], ["--only", "relu"], ["--reuse", "."]])
def test_report_only_takes_no_option_it_would_ignore(study: dict[str, Any], extra: list[str]) -> None:
    """--report-only --dry-run rewrote report.md; --only and --reuse were ignored without a word."""
    result = CliRunner().invoke(study_command, [str(study["spec"].path), "--report-only", *extra])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: --report-only rebuilds the report from every finished cell and runs nothing; drop {extra[0]}"
    )


def _first_attempt_seconds(ledger: dict[str, Any], value: Any) -> None:
    next(iter(ledger["cells"].values()))[0]["seconds"] = value


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda ledger: "[" * 100 + "]" * 100, "nested too deeply"),  # past what sat_toolkit.parsing reads
        # Hand edits a stranger's walk made; each was a traceback (TypeError, ValueError) before.
        (
            lambda ledger: _first_attempt_seconds(ledger, "fast"),
            "[0].seconds is 'fast', not a number of seconds",
        ),
        (
            lambda ledger: _first_attempt_seconds(ledger, math.nan),
            "[0].seconds is nan, not a number of seconds",
        ),
        (
            lambda ledger: ledger["invocations"][0].update(seconds=-1e308),
            "invocations[0].seconds is -1e+308, not a number of seconds",
        ),
        (lambda ledger: ledger["invocations"][0].pop("jobs"), "invocations[0] has no 'jobs'"),
    ],
    ids=["too-deep", "seconds-text", "seconds-nan", "negative-invocation", "no-jobs"],
)
def test_a_damaged_ledger_costs_only_the_timing_history_and_says_so(
    study: dict[str, Any], tmp_path: Path, damage: Any, why: str
) -> None:
    """A study.json that is not a ledger: the report is rebuilt from the runs, and says why it
    has no wall time, in the report and on the console."""
    out = tmp_path / "out"
    shutil.copytree(study["spec"].output_dir, out)
    ledger = json.loads((out / "study.json").read_text())
    text = damage(ledger)
    (out / "study.json").write_text(text if isinstance(text, str) else json.dumps(ledger))
    args = [str(study["spec"].path), "--report-only", "--output-dir", str(out)]
    result = CliRunner().invoke(study_command, args)
    assert result.exit_code == 0, result.output
    assert f"warning: {out / 'study.json'} is damaged (" in result.output and why in result.output
    original = study["spec"].output_dir
    rebuilt = (out / "report.json").read_text().replace(str(out), "OUT")
    first = (original / "report.json").read_text().replace(str(original), "OUT")
    assert json.loads(rebuilt)["rows"] == json.loads(first)["rows"]
    assert "- wall time: not known (study.json is damaged: " in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("evaluation", "why"),
    [
        ({"clean_accuracy": 0.9, "robust_accuracy": "high"}, "evaluation.robust_accuracy is 'high'"),
        (
            {"clean_accuracy": 0.9, "robust_accuracy": 0.5, "attacks": {"pgd": {"robust_accuracy": -1}}},
            "evaluation.attacks.pgd.robust_accuracy is -1",
        ),
    ],
)
def test_a_damaged_metrics_file_is_left_out_of_the_report_and_named(
    study: dict[str, Any], tmp_path: Path, evaluation: dict[str, Any], why: str
) -> None:
    """Valid JSON with a wrong-typed accuracy once crashed --report-only with a TypeError."""
    out = tmp_path / "out"
    shutil.copytree(study["spec"].output_dir, out)
    (out / "silu" / "seed0" / "metrics.json").write_text(json.dumps({"evaluation": evaluation}))
    args = [str(study["spec"].path), "--report-only", "--output-dir", str(out)]
    result = CliRunner().invoke(study_command, args)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert f"warning: silu/seed0: metrics.json is damaged ({why}" in result.output
    report = json.loads((out / "report.json").read_text())
    assert "silu/seed0" in report["cells"]["missing"] and why in report["cells"]["damaged"]["silu/seed0"]
    assert "- **damaged**: silu/seed0's metrics.json (" in (out / "report.md").read_text()


def test_a_nan_validation_accuracy_is_damage_the_dry_run_names_too(
    study: dict[str, Any], tmp_path: Path
) -> None:
    """A stranger's walk: validation[0].clean_accuracy = NaN counted as finished, and report.json
    carried a bare NaN token (not JSON to strict readers); the dry run said "done" of a cell the
    run then refused."""
    out = tmp_path / "out"
    shutil.copytree(study["spec"].output_dir, out)
    metrics_file = out / "silu" / "seed0" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["validation"] = [{"epoch": 1, "step": 5, "clean_accuracy": float("nan"), "robust_accuracy": 0.5}]
    metrics_file.write_text(json.dumps(metrics))
    args = [str(study["spec"].path), "--output-dir", str(out)]
    why = "validation[0].clean_accuracy is nan, not an accuracy in [0, 1]"
    dry = CliRunner().invoke(study_command, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"silu seed 0: metrics.json is damaged ({why}); delete it and run again" in dry.output
    report_only = CliRunner().invoke(study_command, [*args, "--report-only"])
    assert report_only.exit_code == 0, report_only.output
    text = (out / "report.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["cells"]["damaged"] == {"silu/seed0": why}


def test_report_only_leaves_out_cells_the_study_file_no_longer_describes(
    study: dict[str, Any], tmp_path: Path
) -> None:
    """A stranger's walk: relu given another lr after it ran; --report-only showed the old runs
    as the relu row under the new settings, without a word (a run refuses those cells)."""
    out = tmp_path / "out"
    shutil.copytree(study["spec"].output_dir, out)
    text = (
        study["spec"]
        .path.read_text()
        .replace('relu = ["activation=relu"]', 'relu = ["activation=relu", "optimizer.lr=0.02"]')
    )
    changed = tmp_path / "changed.toml"
    changed.write_text(text.replace('base = "base/tiny.toml"', f'base = "{study["spec"].base}"'))
    result = CliRunner().invoke(study_command, [str(changed), "--report-only", "--output-dir", str(out)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    from sat_toolkit.recipe import load_recipe

    lr = load_recipe(study["spec"].base).optimizer.lr
    for seed in (0, 1):
        changed_lr = f"optimizer.lr: {lr!r} -> 0.02"
        assert (
            f"relu/seed{seed}: its run differs from the study file now ({changed_lr}); left out"
            in result.output
        )
    report = json.loads((out / "report.json").read_text())
    assert set(report["cells"]["stale"]) == {"relu/seed0", "relu/seed1"}
    (relu,) = (row for row in report["rows"] if row["label"] == "relu")
    assert relu["seeds_finished"] == [] and report["cells"]["finished"] == 2
    assert (
        "- **stale**: relu/seed0 ran with settings the study no longer has (optimizer.lr"
        in (out / "report.md").read_text()
    )


def test_a_file_where_the_logs_go_is_one_line_before_anything_trains(
    study: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(study["spec"].output_dir, out)
    shutil.rmtree(out / "silu" / "seed1")  # a cell left to run
    shutil.rmtree(out / "logs")
    (out / "logs").write_text("not a folder")
    result = CliRunner().invoke(study_command, [str(study["spec"].path), "--output-dir", str(out)])
    assert result.exit_code == 2 and "started" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {out / 'logs'} is not a directory; the study writes each cell's log in it: move it away"
    )
    assert not (out / "silu" / "seed1").exists()


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ('{"invocations": [{"id": "a", "seconds": 60', "Expecting"),  # truncated
        ('{"invocations": 5, "cells": []}', "'invocations' is not a list of objects"),
        ("[1, 2]", "a JSON list, not an object"),
    ],
)
def test_a_study_with_a_damaged_ledger_refuses_to_run_over_it(
    study: dict[str, Any], tmp_path: Path, damage: str, why: str
) -> None:
    """Running cells would save a fresh ledger over the damaged one and lose its records
    (a truncated file can still be mended by hand): refused before anything trains."""
    out = tmp_path / "out"
    shutil.copytree(study["spec"].output_dir, out)
    shutil.rmtree(out / "silu" / "seed1")  # a cell left to run
    (out / "study.json").write_text(damage)
    result = CliRunner().invoke(study_command, [str(study["spec"].path), "--output-dir", str(out)])
    assert result.exit_code == 2 and "started" not in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: {out / 'study.json'} is damaged (") and why in last, last
    assert "restore it, or move it away to start a new record" in last
    assert (out / "study.json").read_text() == damage and not (out / "silu" / "seed1").exists()


def test_jobs_2_gives_the_same_metrics_as_jobs_1(study: dict[str, Any], tmp_path: Path) -> None:
    """Spawned workers with 1 thread each reproduce the in-process runs (and the resumed one)."""
    spec = load_study(study["spec"].path, output_dir=tmp_path / "parallel")
    lines: list[str] = []
    run_study(spec, jobs=2, echo=lines.append, report=False)
    assert "2 job(s) x" in lines[0]
    for key in KEYS:
        serial, parallel = _evaluation(study["spec"].output_dir / key), _evaluation(spec.output_dir / key)
        for name in ("clean_accuracy", "robust_accuracy"):
            assert parallel[name] == serial[name], (key, name)


def test_a_group_axis_gets_its_own_baseline(tmp_path: Path) -> None:
    """With a capacity axis, each capacity's rows compare with that capacity's relu (fake runs)."""
    text = STUDY.replace(
        '[[study.axis]]\nname = "activation"',
        '[[study.axis]]\nname = "model"\nvalues = {small = [], wide = ["model.width=16"]}\n\n'
        '[[study.axis]]\nname = "activation"',
    )
    spec = load_study(write_study(tmp_path, tmp_path / "out", text))
    clean = {"small+relu": 0.5, "small+silu": 0.6, "wide+relu": 0.7, "wide+silu": 0.9}
    for label, value in clean.items():
        for seed in (0, 1):
            run_dir = spec.output_dir / label / f"seed{seed}"
            run_dir.mkdir(parents=True)
            evaluation = {"samples": 10, "clean_accuracy": value, "robust_accuracy": value / 2, "attacks": {}}
            (run_dir / "metrics.json").write_text(json.dumps({"evaluation": evaluation}))
    write_report(spec, echo=lambda _: None)
    rows = {r["label"]: r for r in json.loads((spec.output_dir / "report.json").read_text())["rows"]}
    assert rows["wide+silu"]["change_vs_baseline"]["baseline"] == "wide+relu"
    assert rows["wide+silu"]["change_vs_baseline"]["clean_accuracy"]["difference_of_means"] == pytest.approx(
        0.2
    )
    assert rows["small+silu"]["change_vs_baseline"]["baseline"] == "small+relu"
    assert rows["small+relu"]["clean_accuracy"]["std"] == 0.0
    text = (spec.output_dir / "report.md").read_text()
    assert "### model = small" in text and "### model = wide" in text
    # Both capacities' changes side by side: +10 points clean when small, +20 when wide.
    assert "| activation | Δ robust, model = small | Δ robust, model = wide |" in text
    # Every seed differs by exactly the same amount: no interval and no mark (the seeds show
    # no spread to judge noise by); "+5.0 [+5.0, +5.0]" read as certainty.
    assert (
        "| silu | +5.0 (same on all 2 seeds) | +10.0 (same on all 2 seeds) "
        "| +10.0 (same on all 2 seeds) | +20.0 (same on all 2 seeds) |" in text
    )
    # changes.png: one row per group, named by the compared value and its group.
    from sat_toolkit.study.plot import change_points

    points = change_points(list(rows.values()), "clean_accuracy", compare_axis="activation", baseline="relu")
    assert [(p["label"], p["baseline"]) for p in points] == [
        ("silu (model = small)", "small+relu"),
        ("silu (model = wide)", "wide+relu"),
    ]
    assert [p["mean"] for p in points] == pytest.approx([10.0, 20.0])
    assert (spec.output_dir / "changes.png").is_file()


def test_an_accuracy_axis_never_spans_past_what_an_accuracy_can_be() -> None:
    from sat_toolkit.study.plot import accuracy_limits

    assert accuracy_limits(95.0, 105.0) == (95.0, 101.0)  # matplotlib's limits around cells all at 100%
    assert accuracy_limits(-5.0, 5.0) == (-1.0, 5.0)  # ... and all at 0%
    assert accuracy_limits(60.0, 80.0) == (60.0, 80.0)


def test_changes_are_paired_by_seed_with_a_student_t_interval() -> None:
    from sat_toolkit.study.aggregate import difference_standard_error, paired_difference, stat

    # Seeds move both rows together (0.70, 0.80, 0.90); the change itself is about +1 point.
    relu = {0: 0.70, 1: 0.80, 2: 0.90}
    silu = {0: 0.71, 1: 0.81, 2: 0.915}
    paired = paired_difference(silu, relu)
    assert paired is not None
    differences = [0.01, 0.01, 0.015]
    assert paired["seeds"] == [0, 1, 2] and paired["differences"] == pytest.approx(differences)
    mean, std = statistics.fmean(differences), statistics.stdev(differences)
    t_975_2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (tables: 4.303)
    half = t_975_2 * std / math.sqrt(3)
    assert paired["mean"] == pytest.approx(mean) and paired["std"] == pytest.approx(std)
    assert paired["interval"] == pytest.approx([mean - half, mean + half])
    assert paired["beyond_noise"] is True  # [+0.2, +2.1] points: excludes 0
    # Unpaired, the same numbers are deep inside seed noise: the between-seed spread swamps them.
    unpaired = difference_standard_error(stat(list(silu.values())), stat(list(relu.values())))
    assert unpaired is not None and mean < unpaired

    noisy = paired_difference({0: 0.72, 1: 0.79, 2: 0.91}, relu)  # differences +2, -1, +1 points
    assert (
        noisy is not None
        and noisy["beyond_noise"] is False
        and noisy["interval"][0] < 0 < noisy["interval"][1]
    )
    # One image of 32 on both seeds: no spread to judge noise by, so not "beyond noise"
    # (the zero-width Student-t interval called it so).
    same = paired_difference({0: 0.40625, 1: 0.5}, {0: 0.375, 1: 0.46875})
    assert same is not None and same["interval"] == [0.03125, 0.03125] and same["beyond_noise"] is None
    rounded = paired_difference({0: 0.72, 1: 0.82}, {0: 0.70, 1: 0.80})  # +2 points, float-rounded
    assert rounded is not None and rounded["beyond_noise"] is None
    one = paired_difference({0: 0.75, 5: 0.9}, relu)  # only seed 0 is shared
    assert one is not None and one["n"] == 1 and one["interval"] is None and one["beyond_noise"] is None
    assert paired_difference({7: 0.5}, relu) is None


def test_an_attack_only_some_runs_made_is_listed_with_its_count(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path, tmp_path / "out"))
    pgd = {"robust_accuracy": 0.4, "settings": {"name": "pgd", "steps": 5}}
    for label in ("relu", "silu"):
        for seed in (0, 1):
            run_dir = spec.output_dir / label / f"seed{seed}"
            run_dir.mkdir(parents=True)
            attacks = {"pgd5": pgd} | ({"pgd5/surrogate_grad": pgd} if label == "silu" else {})
            evaluation = {"samples": 10, "clean_accuracy": 0.5, "robust_accuracy": 0.4, "attacks": attacks}
            (run_dir / "metrics.json").write_text(json.dumps({"evaluation": evaluation}))
    write_report(spec, echo=lambda _: None)
    text = (spec.output_dir / "report.md").read_text()
    assert "pgd5 (pgd, steps 5); pgd5/surrogate_grad (pgd, steps 5; in 2 of 4 runs)" in text


CAPACITY_AXIS = """
[[study.axis]]
name = "capacity"
[study.axis.values]
small = ["model.width=8"]
gelu_wide = ["activation=gelu", "model.width=16"]
"""


def test_overrides_that_look_alike_but_set_different_keys_are_accepted(tmp_path: Path) -> None:
    """A plugin table's name and its parameters are different keys, also for evaluation
    attacks (attack.eval.pgd5=pgd then attack.eval.pgd5.steps=...), whose shorthand the
    first version of the duplicate check read as setting the whole table."""
    grid = STUDY.replace('"activation=relu"', '"activation=relu", "objective=trades", "objective.beta=6"')
    evaluation = '"attack.eval.pgd5=pgd", "attack.eval.pgd5.steps=3"'
    grid = grid.replace('"activation=silu"', f'"activation=silu", {evaluation}')
    path = write_study(tmp_path, tmp_path / "out", grid)
    args = [str(path), "--dry-run", "--set", "attack.eval.pgd5.restarts=2"]
    result = CliRunner().invoke(study_command, args)
    assert result.exit_code == 0, result.output
    recipes = {p.cell.label: p.recipe for p in plan(load_study(path, ["attack.eval.pgd5.restarts=2"]))}
    assert recipes["silu"].attack.eval.attacks["pgd5"].params["steps"] == 3
    assert recipes["silu"].attack.eval.attacks["pgd5"].params["restarts"] == 2
    assert recipes["relu"].objective.params == {"beta": 6}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("seeds = [0, 1]", "seedz = [0, 1]"), "study.seedz: unknown key; did you mean 'seeds'?"),
        (("seeds = [0, 1]", "seeds = []"), "study.seeds: must be a non-empty array of integers >= 0, got []"),
        (("seeds = [0, 1]", 'seeds = ["a"]'), 'integers >= 0, got ["a"]'),
        (("base/tiny.toml", "base/missing.toml"), "study.base: base recipe not found: "),
        (
            ('name = "activation"', 'name = "activation"\nvalus = 1'),
            "study.axis.activation.valus: unknown key",
        ),
        (('baseline = "relu"', 'baseline = "rleu"'), "study.baseline: 'rleu' is not a value label"),
        (('set = ["train.epochs=1"]', 'set = ["run.seed=1"]'), "study.set[0]: run.seed is set by the study"),
        (
            ('set = ["train.epochs=1"]', "set = ['activation={name = silu}']"),
            "study.set[0]: {name = silu} is not a TOML inline table or array (Invalid value); strings inside",
        ),
        # A list setting one key twice kept the last: a "gelu" cell trained SiLU.
        (
            ('silu = ["activation=silu"]', 'silu = ["activation=gelu", "activation={name = \'silu\'}"]'),
            "study.axis.activation.values.silu: sets activation.name twice ('activation=gelu', then",
        ),
        (
            ('set = ["train.epochs=1"]', 'set = ["train.epochs=1", "train.epochs=2"]'),
            "study.set: sets train.epochs twice ('train.epochs=1', then 'train.epochs=2'); keep one",
        ),
        (
            ('silu = ["activation=silu"]', 'silu = ["activation=relu"]'),
            "study.axis.activation.values.silu: applies the same overrides as 'relu': their cells would be",
        ),
        (  # the same, spelt otherwise
            ('silu = ["activation=silu"]', 'silu = ["activation.name=relu"]'),
            "study.axis.activation.values.silu: applies the same overrides as 'relu'",
        ),
        (  # two axes setting one key: a "gelu_wide" value trained GELU under both activation labels
            ('silu = ["activation=silu"]\n', 'silu = ["activation=silu"]\n' + CAPACITY_AXIS),
            "study.axis.capacity.values.gelu_wide: sets activation.name, which axis 'activation' value "
            "'relu' sets too",
        ),
    ],
)
def test_study_mistakes_are_one_line_errors(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    path = write_study(tmp_path, tmp_path / "out", STUDY.replace(*edit))
    with pytest.raises(StudyError) as info:
        load_study(path)
    assert len(info.value.problems) == 1
    assert message in info.value.format_message() and "\n" not in info.value.format_message()
    result = CliRunner().invoke(study_command, [str(path), "--dry-run"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output


def test_a_command_line_set_that_an_axis_overrides_is_refused(tmp_path: Path) -> None:
    """--set comes before the axes: --set activation=gelu trained relu and silu, without a word."""
    grid = STUDY.replace('"activation=relu"', '"activation=relu", "objective=trades"')
    path = write_study(tmp_path, tmp_path / "out", grid)
    result = CliRunner().invoke(study_command, [str(path), "--dry-run", "--set", "activation=gelu"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {path}: --set: 'activation=gelu' does not reach the cells of axis 'activation' value "
        "'relu', whose 'activation=relu' comes after it; change the axis in the study file instead"
    ), result.output
    # a parameter the axis values leave alone reaches every cell, also across a switch of plugin
    result = CliRunner().invoke(study_command, [str(path), "--dry-run", "--set", "objective.beta=3"])
    assert "does not reach" not in result.output and "cell silu: objective" in result.output  # the cell's say
    ok = CliRunner().invoke(study_command, [str(path), "--dry-run", "--set", "optimizer.lr=0.01"])
    assert ok.exit_code == 0, ok.output
    twice = CliRunner().invoke(
        study_command, [str(path), "--dry-run", "--set", "train.epochs=2", "--set", "train.epochs=3"]
    )
    assert twice.exit_code == 2 and "--set: sets train.epochs twice" in twice.output


def test_a_bad_cell_override_fails_before_anything_trains(tmp_path: Path) -> None:
    path = write_study(tmp_path, tmp_path / "out", STUDY.replace("activation=silu", "activation=sliu"))
    with pytest.raises(SatError, match=r"cell silu: activation.name: unknown activation 'sliu'.*'silu'"):
        run_study(load_study(path), echo=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_the_studys_own_overrides_survive_an_axis_value_naming_the_plugin(tmp_path: Path) -> None:
    """``set = ["objective.beta=3"]`` reaches every cell whose axis value says ``objective=trades``.

    The axis value replaces the [objective] table after the study's overrides; it used to
    take their beta with it, so the cells trained beta 6 while the study file said 3.
    """
    grid = STUDY.replace('set = ["train.epochs=1"]', 'set = ["train.epochs=1", "objective.beta=3"]')
    grid = grid.replace('"activation=relu"', '"activation=relu", "objective=trades"')
    grid = grid.replace('"activation=silu"', '"activation=silu", "objective={name = \'mart\'}"')
    path = write_study(tmp_path, tmp_path / "out", grid)
    recipes = {p.cell.label: p.recipe.objective for p in plan(load_study(path))}
    assert {label: (o.name, o.params) for label, o in recipes.items()} == {
        "relu": ("trades", {"beta": 3}),
        "silu": ("mart", {"beta": 3}),
    }
    # where the axis's plugin has no such parameter, the study is refused before training
    path = write_study(tmp_path, tmp_path / "out", grid.replace("objective=trades", "objective=pgd_at"))
    result = CliRunner().invoke(study_command, [str(path), "--dry-run"])
    assert result.exit_code == 2
    assert result.output.strip().endswith(
        "cell relu: objective.beta: unknown parameter of objective 'pgd_at' (from the study's set, its axis "
        "values or the command line's --set)"
    ), result.output


@pytest.mark.parametrize("name", sorted(path.stem for path in (REPO / "recipes" / "studies").glob("*.toml")))
def test_shipped_studies_resolve_every_cell(name: str, tmp_path: Path) -> None:
    """Every cell of the shipped studies is a valid recipe (checked, not trained)."""
    path = REPO / "recipes" / "studies" / f"{name}.toml"
    base = tomllib.loads(path.read_text())["study"]["base"]
    if not (path.parent / base).is_file():
        pytest.skip(f"base recipe {base} not there yet")
    spec = load_study(path, output_dir=tmp_path)
    planned = plan(spec)
    assert len(planned) == len(spec.seeds) * len(list(itertools.product(*(a.values for a in spec.axes))))
    assert all(p.status == "new" for p in planned)
    # every setting trains something different: no override was lost on the way to the recipe
    settings = {}
    for p in planned:
        recipe = p.recipe.to_dict()
        del recipe["run"]  # seed and run directory
        settings.setdefault(p.cell.label, dumps(recipe))
    assert len(set(settings.values())) == len(settings) > 1


def _a_cell_of_100_s_a_quarter_evaluating(task: study_runner.CellTask) -> study_runner.CellOutcome:
    """The real cell, recorded as 100 s long with 25 s of final evaluation (metrics.json)."""
    outcome = _execute_cell(task)
    metrics_file = Path(task.recipe["run"]["output_dir"]) / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    attacks = metrics["evaluation"]["attacks"]
    for attack in attacks.values():
        attack["seconds"] = 25.0 / len(attacks)
    metrics_file.write_text(json.dumps(metrics))
    return dataclasses.replace(outcome, seconds=100.0)


def test_a_cell_resumed_late_in_its_run_is_not_counted_as_a_whole_cell(tmp_path: Path) -> None:
    """A study stopped near a cell's end used to restart with that cell counted whole: an
    hour's estimate for 20 minutes left. The checkpoint tells the run's length once an
    epoch has passed (10 steps of 320 digits in batches of 32, 2 epochs: 20 steps), so
    the cell resumed at step 12 is 60% trained; a finished cell spent a quarter of its time
    on its final evaluation, which a resumed cell still makes whole: it is expected to take
    40% of the rest and all of the evaluation, 0.4 x 75 + 25 = 55% of a cell."""
    path = write_study(
        tmp_path,
        tmp_path / "out",
        STUDY.replace("seeds = [0, 1]", "seeds = [0]").replace("train.epochs=1", "train.epochs=2"),
    )
    spec = load_study(path)
    silu = next(p for p in plan(spec) if p.cell.key == "silu/seed0")
    train(silu.recipe, show_progress=False, stop_after_steps=14)  # checkpoints at 4, 8, 12
    planned = {p.cell.key: p for p in plan(spec)}
    assert (planned["silu/seed0"].step, planned["silu/seed0"].total_steps) == (12, 20)
    assert planned["silu/seed0"].trained == pytest.approx(0.6)
    assert planned["relu/seed0"].trained == 0.0
    listed = CliRunner().invoke(study_command, [str(path), "--dry-run"])
    assert "silu seed 0: resume from step 12 of 20 (" in listed.output

    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_runner, "execute_cell", _a_cell_of_100_s_a_quarter_evaluating)
        run_study(spec, jobs=1, echo=lines.append, report=False)
    assert "[2/2] started  silu seed 0 (resuming from step 12 of 20)" in lines
    estimate = next(line for line in lines if line.startswith("[1/2] estimated time left"))
    assert estimate.startswith("[1/2] estimated time left: 55 s for 1 cell(s)")  # not 100 s, nor 40 s


def test_a_study_to_run_in_emulated_bf16_says_so_before_its_first_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sat_toolkit.devices.native_bf16", lambda device=None: False)
    grid = STUDY.replace("seeds = [0, 1]", "seeds = [0]")
    bf16 = 'set = ["train.epochs=1", "optimizer.mixed_precision=bf16"]'
    grid = grid.replace('set = ["train.epochs=1"]', bf16)
    spec = load_study(write_study(tmp_path, tmp_path / "out", grid))
    lines: list[str] = []
    run_study(spec, jobs=1, echo=lines.append, report=False, probe=False, only=("relu/seed0",))
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert len(warnings) == 1 and 'optimizer.mixed_precision = "bf16" on this' in warnings[0]
    assert lines.index(warnings[0]) < next(i for i, line in enumerate(lines) if "started" in line)


def test_a_restarted_study_reads_the_evaluation_share_from_the_finished_cells(tmp_path: Path) -> None:
    """The same estimate at a later invocation's start: the finished cell's time from the
    ledger, its evaluation's from its metrics.json."""
    path = write_study(
        tmp_path,
        tmp_path / "out",
        STUDY.replace("seeds = [0, 1]", "seeds = [0]").replace("train.epochs=1", "train.epochs=2"),
    )
    spec = load_study(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_runner, "execute_cell", _a_cell_of_100_s_a_quarter_evaluating)
        run_study(spec, jobs=1, echo=lambda line: None, report=False, only=("relu/seed0",))
    silu = next(p for p in plan(spec) if p.cell.key == "silu/seed0")
    train(silu.recipe, show_progress=False, stop_after_steps=14)  # resumes at step 12 of 20
    lines: list[str] = []
    run_study(spec, jobs=1, echo=lines.append, report=False, probe=False)
    assert "estimated time left: 55 s for 1 cell(s) (median 2 min per cell over 1 finished)" in lines


def test_a_checkpoint_tells_its_runs_length_once_an_epoch_has_passed(tmp_path: Path) -> None:
    """468 steps an epoch (Fashion-MNIST in batches of 128), 12 epochs: 5616 steps, told
    from the counters at an epoch's end, mid-epoch and with gradient accumulation; not
    before the first epoch ends, nor from a damaged file; ``train.steps`` needs no file."""
    from sat_toolkit.engine.checkpoint import TRAIN_STATE_FILE, TrainState, run_length
    from sat_toolkit.recipe import load_recipe

    base = tmp_path / "tiny.toml"
    base.write_text(dumps(tiny_base()))
    recipe = load_recipe(base, ["train.epochs=12"])
    accumulating = load_recipe(base, ["train.epochs=12", "optimizer.grad_accumulation=2"])

    def length(of: Any, **counters: int) -> int | None:
        checkpoint = tmp_path / "step"
        checkpoint.mkdir(exist_ok=True)
        (checkpoint / TRAIN_STATE_FILE).write_text(TrainState(**counters).to_json())
        return run_length(checkpoint, of)

    assert length(recipe, epoch=7, step_in_epoch=0, global_step=3276, batches_seen=3276) == 5616
    assert length(recipe, epoch=7, step_in_epoch=100, global_step=3376, batches_seen=3376) == 5616
    assert length(accumulating, epoch=7, step_in_epoch=0, global_step=3276, batches_seen=6552) == 5616
    assert length(recipe, epoch=0, step_in_epoch=400, global_step=400, batches_seen=400) is None
    (tmp_path / "step" / TRAIN_STATE_FILE).write_text("{not json")
    assert run_length(tmp_path / "step", recipe) is None
    assert run_length(tmp_path / "step", load_recipe(base, ["train.steps=1000"])) == 1000


def test_a_failed_cell_is_reported_and_only_it_is_retried(tmp_path: Path) -> None:
    path = write_study(tmp_path, tmp_path / "out", STUDY.replace("seeds = [0, 1]", "seeds = [0]"))
    spec = load_study(path)

    def fail_silu(task: study_runner.CellTask) -> study_runner.CellOutcome:
        if task.key == "silu/seed0":
            return study_runner.CellOutcome(task.key, 0.1, error="NonFiniteLossError: the loss is nan")
        return _execute_cell(task)

    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_runner, "execute_cell", fail_silu)
        with pytest.raises(SatError, match=r"1 of 2 cells failed \(silu/seed0\)"):
            run_study(spec, echo=lines.append)
    assert any(line.startswith("[2/2] FAILED   silu seed 0") for line in lines)
    report = json.loads((spec.output_dir / "report.json").read_text())  # what finished is reported
    assert report["cells"]["missing"] == ["silu/seed0"]
    counter = Counter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_runner, "execute_cell", counter)
        run_study(spec, echo=lambda _: None)
    assert counter.keys == ["silu/seed0"]
    ledger = json.loads((spec.output_dir / "study.json").read_text())
    assert [a["outcome"] for a in ledger["cells"]["silu/seed0"]] == ["failed", "finished"]


def test_the_time_left_is_printed_after_every_cell_from_the_cells_measured(study: dict[str, Any]) -> None:
    estimates = [line for line in study["lines"] if "estimated time left" in line]
    # before the first cell nothing was measured; after the last none is left
    assert [line.split("] ")[0] for line in estimates] == ["[1/4", "[2/4", "[3/4"]
    assert [line.split(" for ")[1].split(" cell")[0] for line in estimates] == ["3", "2", "1"]
    # the resumed cell (4th) ran part of a cell only, so three whole cells were measured
    assert "over 3 finished" in estimates[-1]


def test_study_eta_is_the_median_finished_cell_times_the_rounds_left() -> None:
    from sat_toolkit.study.eta import StudyEta

    cells = {
        "a/seed0": [{"outcome": "finished", "seconds": 100.0, "resumed_from_step": 0}],
        "b/seed0": [
            {"outcome": "failed", "seconds": 5.0, "resumed_from_step": 0},  # not a whole cell
            {"outcome": "finished", "seconds": 300.0, "resumed_from_step": 0},
        ],
        "c/seed0": [{"outcome": "finished", "seconds": 40.0, "resumed_from_step": 12}],  # part of one
        "d/seed0": [{"outcome": "finished", "seconds": 200.0, "resumed_from_step": 0}],
    }
    eta = StudyEta.from_ledger(cells, jobs=2)
    assert eta.measured == {"a/seed0": 100.0, "b/seed0": 300.0, "d/seed0": 200.0}
    assert eta.seconds_of("e/seed0") == 200.0
    waiting = [f"{label}/seed1" for label in "abcde"]
    assert eta.remaining(waiting) == 3 * 200.0  # 5 cells, 2 at a time: 3 rounds
    assert eta.describe(waiting) == (
        "estimated time left: 10 min for 5 cell(s), 2 at a time (median 3 min per cell over 3 finished)"
    )
    assert StudyEta(jobs=1).describe(waiting) is None and eta.describe([]) is None
    eta.trained = {"e/seed1": 0.75}  # resumed three quarters through: a quarter of a cell left
    assert eta.seconds_of("e/seed1") == 50.0 and eta.seconds_of("a/seed1") == 200.0
    # The final evaluation is made whole however far training got: its median share of the
    # measured cells (0.5, 0.2, 0.2) stays, the rest shrinks to a quarter.
    eta.evaluated = {"a/seed0": 50.0, "b/seed0": 60.0, "d/seed0": 40.0}
    assert eta.seconds_of("e/seed1") == pytest.approx(200.0 * (0.8 * 0.25 + 0.2))
    assert eta.seconds_of("a/seed1") == pytest.approx(200.0)  # from step 0: still a whole cell


def test_a_runs_evaluation_seconds_are_its_attacks_seconds() -> None:
    from sat_toolkit.study.eta import evaluation_seconds

    attacks = {"pgd20": {"seconds": 20.0}, "apgd_ce": {"seconds": 87.5}, "apgd_t": {"seconds": 672.5}}
    assert evaluation_seconds({"evaluation": {"attacks": attacks}}) == 780.0
    assert evaluation_seconds({"evaluation": {"attacks": {"pgd20": {"seconds": True}}}}) is None
    assert evaluation_seconds({"evaluation": {"attacks": {}}}) is None
    assert evaluation_seconds({"steps": 10}) is None and evaluation_seconds(None) is None
    assert evaluation_seconds({"evaluation": "damaged"}) is None


def test_study_eta_times_cells_only_by_those_run_at_the_same_pace() -> None:
    """A study continued on another machine (two CPUs that both say 'AMD EPYC', 2.6x apart)
    or with other threads per cell is not timed by the cells the first one ran; a record
    from before the ledger named the CPU's vector units matches no machine."""
    from sat_toolkit.study.eta import StudyEta, pace_of

    zen1 = {"cpu": "AMD EPYC", "cpu_features": "AVX2, no native bf16"}
    zen4 = {"cpu": "AMD EPYC", "cpu_features": "AVX512, native bf16"}
    invocations = [
        {"id": "old", "hardware": {"cpu": "AMD EPYC"}, "threads_per_job": 1},
        {"id": "slow", "hardware": zen1, "threads_per_job": 1},
        {"id": "fast", "hardware": zen4, "threads_per_job": 1},
        {"id": "fast2", "hardware": zen4, "threads_per_job": 2},
    ]
    cells = {
        f"{inv}/seed0": [{"outcome": "finished", "seconds": seconds, "invocation": inv}]
        for inv, seconds in [("old", 900.0), ("slow", 800.0), ("fast", 300.0), ("fast2", 200.0)]
    }
    here = StudyEta.from_ledger(cells, 2, invocations, pace=pace_of(zen4, 1))
    assert here.measured == {"fast/seed0": 300.0}
    assert StudyEta.from_ledger(cells, 2, invocations, pace=pace_of(zen1, 1)).measured == {
        "slow/seed0": 800.0
    }
    assert StudyEta.from_ledger(cells, 2, invocations, pace=pace_of({"cpu": "Intel Xeon"}, 1)).measured == {}


def test_study_eta_counts_a_running_cell_as_the_median_less_its_time_so_far() -> None:
    """Two side by side, 200 s a cell: one finished, the other 190 s in, is 10 s from done,
    not a whole cell; waiting cells go to whichever worker frees first."""
    from sat_toolkit.study.eta import StudyEta

    eta = StudyEta(jobs=2, measured={"done": 200.0})
    assert eta.remaining([], {"x": 190.0}) == 10.0
    assert eta.remaining([], {"x": 250.0}) == 0.0  # slower than the median: no negative time
    assert eta.remaining(["w1"], {"x": 150.0}) == 200.0  # the idle worker takes it at once
    assert eta.remaining(["w1", "w2", "w3"], {"x": 150.0}) == 400.0  # idle: +200, +200; busy: 50 + 200
    assert eta.remaining(["w1", "w2", "w3"], {"x": 150.0, "y": 150.0}) == 450.0  # free at 50: 250, 250, 450
    assert eta.describe(["w1"], {"x": 150.0}) == (
        "estimated time left: 3 min for 2 cell(s), 2 at a time (median 3 min per cell over 1 finished)"
    )


def test_unlike_cells_take_their_predicted_share_of_the_measured_pace() -> None:
    """A budget sweep: the probes predict a long cell at 3x a short one. The short one took
    150 s where 100 s were predicted, so the machine runs at 1.5x the probes' times: a long
    cell is expected at 450 s, not at the 150 s a median of finished cells would say."""
    from sat_toolkit.study.eta import StudyEta

    eta = StudyEta(jobs=2, predicted={"short": 100.0, "long_a": 300.0, "long_b": 300.0, "other": 50.0})
    assert eta.seconds_of("long_a") == 300.0  # before any measurement: the probes' own
    assert (
        eta.describe(["long_a"])
        == "estimated time left: 5 min for 1 cell(s), 2 at a time (as the probes predict)"
    )
    eta.record("short", 150.0)
    eta.record("unpredicted", 9999.0)  # a cell of a kind not probed now: no ratio, no say
    assert eta.seconds_of("long_a") == 450.0 and eta.seconds_of("other") == 75.0
    assert eta.seconds_of("unknown") is None
    assert eta.remaining(["long_b", "other"], {"long_a": 400.0}) == 450.0  # 50 + 75 | 450
    assert eta.describe(["long_b"], {"long_a": 400.0}) == (
        "estimated time left: 8 min for 2 cell(s), 2 at a time "
        "(the probes' prediction x 1.50, the median of 1 finished cell(s) against their own)"
    )


def test_the_ledger_says_which_cells_are_running_and_for_how_long(tmp_path: Path) -> None:
    """The time left counts each running cell as its own expected time less its time so
    far, so the ledger must name the cells, not only their times."""
    from sat_toolkit.study.ledger import Ledger

    ledger = Ledger(tmp_path)
    first = ledger.begin_attempt("a/seed0", resumed_from_step=0)
    ledger.begin_attempt("b/seed1", resumed_from_step=12)
    running = ledger.running_for()
    assert sorted(running) == ["a/seed0", "b/seed1"] and all(seconds >= 0 for seconds in running.values())
    ledger.end_attempt(first, seconds=1.0, outcome="finished")
    assert list(ledger.running_for()) == ["b/seed1"]


def test_a_cells_log_shows_each_line_while_the_cell_still_runs(tmp_path: Path) -> None:
    """A cell trains for hours: its epoch lines must be in its log then, not only at its end."""
    log_path = tmp_path / "logs" / "relu-seed0.log"
    seen_while_running: list[str] = []

    def training(*args: Any, **kwargs: Any) -> Any:
        print("epoch 1: clean 0.500, PGD-10 0.400")
        seen_while_running.append(log_path.read_text())
        raise SatError("stopped by the test")

    recipe = {**tiny_base(), "run": {**tiny_base()["run"], "output_dir": str(tmp_path / "run")}}
    task = study_runner.CellTask("relu/seed0", recipe, 1, str(log_path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sat_toolkit.engine.trainer.train", training)
        outcome = study_runner.execute_cell(task)
    assert outcome.error == "stopped by the test"
    assert "epoch 1: clean 0.500, PGD-10 0.400\n" in seen_while_running[0]


def test_only_runs_the_named_cells_in_study_order_and_rejects_unknown_names(tmp_path: Path) -> None:
    """``--only silu/seed1 --only relu``: relu's two seeds and one silu cell, nothing else; a
    name that is no cell is a one-line error before anything runs."""
    path = write_study(tmp_path, tmp_path / "out")
    ran: list[str] = []

    def record(task: study_runner.CellTask) -> study_runner.CellOutcome:
        ran.append(task.key)
        return study_runner.CellOutcome(task.key, 0.1, error="not trained in this test")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_runner, "execute_cell", record)
        result = CliRunner().invoke(study_command, [str(path), "--only", "silu/seed1", "--only", "relu"])
    assert ran == ["relu/seed0", "relu/seed1", "silu/seed1"]
    assert result.output.startswith("study tiny: 3 of 4 cells (--only silu/seed1 relu)")
    listed = CliRunner().invoke(study_command, [str(path), "--dry-run", "--only", "silu/seed0"])
    assert listed.exit_code == 0 and listed.output.splitlines()[0].startswith("silu seed 0: new")
    wrong = CliRunner().invoke(study_command, [str(path), "--only", "silu/seed2"])
    assert wrong.exit_code == 2 and wrong.output.count("\n") == 1
    assert "--only 'silu/seed2' names no cell; use a label (relu, silu)" in wrong.output
    assert ran == ["relu/seed0", "relu/seed1", "silu/seed1"]


@pytest.mark.parametrize(
    ("omp", "jobs", "cores", "threads"),
    [
        (None, 1, 8, 8),
        (None, 3, 8, 2),
        ("1", 1, 8, 1),
        ("4", 1, 2, 2),
        ("2", 2, 8, 2),
        ("", 1, 4, 4),
        ("x", 1, 4, 4),
    ],
)
def test_a_study_gives_its_cells_the_cores_shared_by_jobs_at_most_omp_num_threads(
    monkeypatch: pytest.MonkeyPatch, omp: str | None, jobs: int, cores: int, threads: int
) -> None:
    """OMP_NUM_THREADS=1, the remedy on a busy machine, is not undone by the study."""
    from sat_toolkit.study.runner import threads_per_job

    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert threads_per_job(jobs, cores) == threads


def test_more_jobs_than_cores_is_said_before_the_estimate() -> None:
    """A stranger's walk: `taskset -c 1 ... --jobs 2` estimated half the real time, silently."""
    from sat_toolkit.study.runner import oversubscribed

    assert oversubscribed(2, 2) is None and oversubscribed(1, 4) is None
    assert oversubscribed(2, 1) == (
        "2 jobs on 1 core(s): the cells share them, so each runs slower than alone "
        "(and than any estimate, which times a cell alone); --jobs 1 finishes as soon as this"
    )
