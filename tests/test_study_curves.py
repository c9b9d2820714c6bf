"""The study's learning curves: each row's validation by epoch, averaged over its seeds,
with the final evaluation at the last epoch, in report.json and as ``curves.png``."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from PIL import Image
from test_study import write_study

from sat_toolkit.study import load_study, write_report
from sat_toolkit.study.aggregate import learning_curves


def _plant(
    run_dir: Path,
    validation: list[tuple[int, float, float]],
    clean: float,
    robust: float,
    device: str = "cpu",
) -> None:
    """A finished run's metrics.json as the trainer writes it (the fields the report reads)."""
    run_dir.mkdir(parents=True)
    metrics: dict[str, Any] = {
        "epochs": 3,
        "device": device,
        "validation": [
            {"epoch": e, "clean_accuracy": c, "robust_accuracy": r, "fgsm_accuracy": r}
            for e, c, r in validation
        ],
        "evaluation": {"samples": 100, "clean_accuracy": clean, "robust_accuracy": robust, "attacks": {}},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_curves_average_the_epochs_every_seed_validated_and_end_at_the_final_evaluation(
    tmp_path: Path,
) -> None:
    spec = load_study(write_study(tmp_path, tmp_path / "out"))
    out = spec.output_dir
    _plant(out / "relu" / "seed0", [(1, 0.60, 0.40), (2, 0.70, 0.50)], clean=0.75, robust=0.45)
    # Seed 1 validated one epoch more (a later resume, say): only epochs both seeds have are averaged.
    _plant(out / "relu" / "seed1", [(1, 0.64, 0.42), (2, 0.74, 0.56), (3, 0.9, 0.9)], clean=0.79, robust=0.47)
    # Never validated: no curve. Trained on a GPU, which the report's header names.
    _plant(out / "silu" / "seed0", [], clean=0.70, robust=0.40, device="cuda:0 (NVIDIA H100 80GB HBM3)")

    curves = learning_curves(spec)
    assert list(curves) == ["relu"]
    relu = curves["relu"]
    assert relu["seeds"] == 2
    assert relu["attacks"] == ["PGD-10"]  # records from before runs named their validation attack
    assert [p["epoch"] for p in relu["validation"]] == [1, 2]
    assert relu["validation"][1]["clean_accuracy"] == statistics.fmean([0.70, 0.74])
    assert relu["validation"][1]["robust_accuracy"] == statistics.fmean([0.50, 0.56])
    assert relu["final"] == {
        "epoch": 3,
        "clean_accuracy": statistics.fmean([0.75, 0.79]),
        "robust_accuracy": statistics.fmean([0.45, 0.47]),
    }

    paths = write_report(spec, echo=lambda _: None)
    assert json.loads(paths["json"].read_text())["learning_curves"] == curves
    with Image.open(paths["curves"]) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]
    assert "![learning curves](curves.png)" in paths["markdown"].read_text()
    assert (
        "- runs trained and evaluated on: cpu, cuda:0 (NVIDIA H100 80GB HBM3)\n"
        in paths["markdown"].read_text()
    )


def test_a_study_whose_runs_never_validated_has_no_curves(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path, tmp_path / "out"))
    _plant(spec.output_dir / "relu" / "seed0", [], clean=0.75, robust=0.45)
    (spec.output_dir / "curves.png").write_bytes(b"left by an earlier report")
    paths = write_report(spec, echo=lambda _: None)
    assert "curves" not in paths and not (spec.output_dir / "curves.png").exists()
    assert "learning curves" not in paths["markdown"].read_text()
    assert json.loads(paths["json"].read_text())["learning_curves"] == {}


def test_curves_name_the_validation_attack_the_runs_recorded(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path, tmp_path / "out"))
    run_dir = spec.output_dir / "relu" / "seed0"
    _plant(run_dir, [(1, 0.60, 0.40), (2, 0.70, 0.50)], clean=0.75, robust=0.45)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for entry in metrics["validation"]:
        entry["attack"] = "APGD-CE-10"
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    _plant(spec.output_dir / "silu" / "seed0", [(1, 0.60, 0.40)], clean=0.70, robust=0.40)

    curves = learning_curves(spec)
    assert (curves["relu"]["attacks"], curves["silu"]["attacks"]) == (["APGD-CE-10"], ["PGD-10"])
    text = write_report(spec, echo=lambda _: None)["markdown"].read_text()
    assert "(clean and APGD-CE-10 / PGD-10 accuracy on" in text
