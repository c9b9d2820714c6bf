"""The catastrophic-overfitting guard (engine/overfitting.py) and the final evaluation's progress bar.

The detector is checked on hand-made validation histories; the trainer path is real (a
short digits run) with only the validation numbers replaced, since a genuine collapse
takes far longer to train than a test may run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sat_toolkit.engine import trainer
from sat_toolkit.engine.evaluation import _AttackProgress
from sat_toolkit.engine.overfitting import OverfittingError, first_collapse, judge
from sat_toolkit.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def record(epoch: int, pgd: float, fgsm: float) -> dict[str, Any]:
    return {"epoch": epoch, "step": 10 * epoch, "robust_accuracy": pgd, "fgsm_accuracy": fgsm}


def test_pgd_collapsing_while_fgsm_holds_is_catastrophic_overfitting() -> None:
    history = [record(1, 0.40, 0.50), record(2, 0.45, 0.55), record(3, 0.02, 0.70)]
    collapse = judge(history)
    assert collapse is not None
    assert (collapse.epoch, collapse.pgd, collapse.fgsm, collapse.best_pgd, collapse.best_fgsm) == (
        3, 0.02, 0.70, 0.45, 0.55,
    )  # fmt: skip
    assert collapse.to_dict()["detected_at_epoch"] == 3
    assert "PGD-10 accuracy fell to 0.020 (best 0.450)" in collapse.describe()


@pytest.mark.parametrize(
    "history",
    [
        [record(1, 0.40, 0.50), record(2, 0.05, 0.10)],  # both fell: lost robustness, not masking
        [record(1, 0.40, 0.50), record(2, 0.28, 0.60)],  # above 0.3 x the best, fell by < 0.15
        [record(1, 0.04, 0.50), record(2, 0.01, 0.60)],  # a drop of 0.03: noise on a small subset
        [record(1, 0.02, 0.70)],  # nothing to compare with
    ],
    ids=["both-fell", "partial-drop", "tiny-drop", "first-validation"],
)
def test_what_is_not_catastrophic_overfitting(history: list[dict[str, Any]]) -> None:
    assert judge(history) is None


def test_a_fall_of_015_with_fgsm_holding_is_a_partial_collapse_named_by_its_attack() -> None:
    latest = {**record(3, 0.62, 0.86), "attack": "APGD-CE-10"}
    history = [record(1, 0.78, 0.80), record(2, 0.76, 0.84), latest]
    collapse = judge(history)
    assert collapse is not None and (collapse.epoch, collapse.best_pgd) == (3, 0.78)
    assert "APGD-CE-10 accuracy fell to 0.620 (best 0.780)" in collapse.describe()
    assert collapse.to_dict()["attack"] == "APGD-CE-10"
    assert judge([*history[:2], record(3, 0.64, 0.86)]) is None  # a fall of 0.14


def test_an_l2_collapse_names_the_single_step_attack_fgm() -> None:
    history = [record(1, 0.40, 0.50), {**record(2, 0.02, 0.70), "norm": "l2"}]
    collapse = judge(history)
    assert collapse is not None
    assert "while FGM accuracy is 0.700 (best 0.500)" in collapse.describe()
    linf = judge([record(1, 0.40, 0.50), {**record(2, 0.02, 0.70), "norm": "linf"}])
    assert linf is not None and "while FGSM accuracy is 0.700" in linf.describe()


BUDGET_SWEEP = REPO / "docs" / "results" / "fashion_mnist_budget"


def published_history(cell: str) -> list[dict[str, Any]]:
    path = BUDGET_SWEEP / cell / "seed0" / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8"))["validation"]


def test_the_guard_finds_the_budget_sweeps_collapsed_silu_run_and_passes_the_healthy_ones() -> None:
    # e24+silu: a 10% worst case at the end; its PGD-10 fell from 0.75 to 0.35 at epoch 18,
    # 0.47 x its best, which the 0.3 x rule alone let through.
    collapse = first_collapse(published_history("e24+silu"))
    assert collapse is not None and collapse.epoch == 18
    assert (collapse.pgd, collapse.best_pgd) == (pytest.approx(0.348), pytest.approx(0.75))
    # Runs whose final worst case is 73% are not flagged (e6 and e12 of ReLU, e6 of SiLU).
    for cell in ("e6+relu", "e12+relu", "e6+silu"):
        assert first_collapse(published_history(cell)) is None, cell


def test_first_collapse_is_the_earliest_one_a_resumed_run_still_finds() -> None:
    history = [record(1, 0.40, 0.50), record(2, 0.05, 0.60), record(3, 0.30, 0.50), record(4, 0.01, 0.55)]
    assert first_collapse(history).epoch == 2
    assert judge(history).epoch == 4


# -- the trainer path --------------------------------------------------------------------------
TINY = [
    "data.limit_train=256",
    "train.epochs=3",
    "train.validate_every_epochs=1",
    "logging.tensorboard=false",
    'model={name = "small_cnn", width = 8, depth = 2, convs_per_stage = 1}',
    'attack.eval={samples = 32, seed = 0, pgd2 = {name = "pgd", steps = 2}}',
]


def fake_validation(monkeypatch: pytest.MonkeyPatch, numbers: list[tuple[float, float]]) -> None:
    """Validation that returns ``numbers`` in turn (the trainer's real code judges them)."""
    queue = list(numbers)

    def validate(*args: Any, **kwargs: Any) -> dict[str, Any]:
        pgd, fgsm = queue.pop(0)
        return {
            "samples": 64, "clean_accuracy": 0.9, "robust_accuracy": pgd, "fgsm_accuracy": fgsm,
            "attack": "PGD-10", "norm": "linf", "eps": 0.1,
        }  # fmt: skip

    monkeypatch.setattr(trainer, "validate", validate)


def run_recipe(tmp_path: Path, mode: str) -> Any:
    overrides = [*TINY, f"train.overfitting={mode}", f"run.output_dir={json.dumps(str(tmp_path))}"]
    return trainer.train(load_recipe(REPO / "recipes" / "quickstart.toml", overrides), show_progress=False)


def test_stop_ends_the_run_with_one_line_and_records_the_collapse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_validation(monkeypatch, [(0.5, 0.5), (0.05, 0.6)])
    with pytest.raises(OverfittingError) as info:
        run_recipe(tmp_path, "stop")
    message = info.value.message
    assert "\n" not in message and "catastrophic overfitting at epoch 2" in message
    assert "step-00000004" in message  # the checkpoint of epoch 1, from before the collapse
    assert 'train.overfitting = "warn"' in message
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["overfitting"]["detected_at_epoch"] == 2 and "evaluation" not in metrics
    assert [v["overfitting"] for v in metrics["validation"]] == [False, True]
    # The collapsed weights were not checkpointed: the newest checkpoint is epoch 1's.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000004"]


def test_warn_says_it_once_and_trains_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_validation(monkeypatch, [(0.5, 0.5), (0.05, 0.6)])
    summary = run_recipe(tmp_path, "warn")
    assert summary.metrics["steps"] == 12 and "evaluation" in summary.metrics
    assert summary.metrics["overfitting"]["detected_at_epoch"] == 2
    assert capsys.readouterr().err.count("catastrophic overfitting") == 1


def test_off_judges_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_validation(monkeypatch, [(0.5, 0.5), (0.05, 0.6)])
    summary = run_recipe(tmp_path, "off")
    assert summary.metrics["overfitting"] is None
    assert all("overfitting" not in v for v in summary.metrics["validation"])


def test_validation_measures_fgsm_beside_pgd(tmp_path: Path) -> None:
    summary = run_recipe(tmp_path, "warn")
    (entry,) = summary.metrics["validation"][:1]
    assert 0.0 <= entry["robust_accuracy"] <= entry["clean_accuracy"]
    assert 0.0 <= entry["fgsm_accuracy"] <= entry["clean_accuracy"]
    # FGSM is one step of PGD-10's budget: on the same images it cannot find more.
    assert entry["fgsm_accuracy"] >= entry["robust_accuracy"] - 0.05


# -- the final evaluation's progress ----------------------------------------------------------------
def test_the_evaluation_bar_follows_each_attack_batch_by_batch() -> None:
    progress = _AttackProgress(enabled=True)  # a disabled tqdm bar counts nothing
    seen = []
    for label, done, total in [
        ("pgd20", 256, 900),
        ("pgd20", 512, 900),
        ("pgd20", 900, 900),
        ("apgd", 256, 900),
    ]:
        progress(label, done, total)
        seen.append((progress.bar.desc.removesuffix(": "), progress.bar.n, progress.bar.total))
    assert seen == [
        ("evaluating pgd20", 256, 900),
        ("evaluating pgd20", 512, 900),
        ("evaluating pgd20", 900, 900),
        ("evaluating apgd", 256, 900),
    ]
