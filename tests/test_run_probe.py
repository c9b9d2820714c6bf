"""The estimate printed before a study starts: a timed probe of a cell's own run, which leaves no trace."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_study import REPO, STUDY, tiny_base, write_study

from sat_toolkit.data import DatasetInfo
from sat_toolkit.engine import probe as run_probe
from sat_toolkit.engine.trainer import train
from sat_toolkit.errors import SatError
from sat_toolkit.evaluation.cost import CostEstimate
from sat_toolkit.recipe import load_recipe
from sat_toolkit.study import load_study, plan, probing, run_study
from sat_toolkit.study import runner as study_runner
from sat_toolkit.study.eta import UNEVEN_CELLS, cells_alike


def _recipe(out: Path) -> Any:
    raw = tiny_base()
    raw["run"]["output_dir"] = str(out)
    raw["train"]["validate_every_epochs"] = 1  # 3 epochs: validations after the first two
    raw["train"]["validate_samples"] = 64
    return load_recipe(raw)


def test_validations_are_counted_as_the_trainer_makes_them() -> None:
    assert [run_probe.validations_in(6, k) for k in (0, 1, 2, 5, 6)] == [0, 5, 2, 1, 0]
    assert run_probe.validations_in(1, 1) == 0  # the final evaluation replaces the last one


def test_an_estimate_is_carried_to_a_run_of_another_length(tmp_path: Path) -> None:
    """A budget sweep's longer cells: the probed step, validation and evaluation times,
    with the steps and validations the trainer will make of the other recipe."""
    probed = run_probe.RunCostEstimate(
        setup_seconds=5.0, step_seconds=2.0, total_steps=30, steps_per_epoch=10,
        validation_seconds=7.0, validations=2, evaluation_seconds=100.0, probe_seconds=1.0,
    )  # fmt: skip
    six_epochs = load_recipe(_recipe(tmp_path).to_dict(), ["train.epochs=6"])
    longer = probed.for_recipe(six_epochs)
    assert (longer.total_steps, longer.validations) == (60, 5)
    assert longer.seconds == 5.0 + 2.0 * 60 + 7.0 * 5 + 100.0
    by_steps = probed.for_recipe(load_recipe(six_epochs.to_dict(), ["train.steps=25"]))
    assert (by_steps.total_steps, by_steps.validations) == (25, 2)  # 3 epochs, the last one partial
    every_other = probed.for_recipe(load_recipe(six_epochs.to_dict(), ["train.validate_every_epochs=2"]))
    assert every_other.validations == 2  # after epochs 2 and 4; the final evaluation follows the 6th
    # Resumed at step 42 (4 epochs and 2 steps done, so 4 validations): 18 steps and 1 validation left.
    resumed = probed.for_recipe(six_epochs, first_step=42)
    assert (resumed.total_steps, resumed.first_step, resumed.validations) == (60, 42, 1)
    assert resumed.seconds == 5.0 + 2.0 * 18 + 7.0 * 1 + 100.0
    assert "x 18 steps (of 60: resumes at step 42)" in resumed.describe()
    assert probed.for_recipe(six_epochs, first_step=60).validations == 0  # trained, not yet evaluated


def test_the_probe_measures_the_runs_parts_and_changes_nothing(tmp_path: Path) -> None:
    probed_dir, plain_dir = tmp_path / "probed", tmp_path / "plain"
    estimate = run_probe.probe_run_cost(_recipe(probed_dir))
    assert estimate is not None
    assert not probed_dir.exists()  # the probe built its run elsewhere and removed it

    metrics = json.loads(
        (train(_recipe(probed_dir), show_progress=False).run_dir / "metrics.json").read_text()
    )
    assert estimate.total_steps == metrics["steps"] == 30  # 320 digits / 32 x 3 epochs
    assert estimate.validations == len(metrics["validation"]) == 2
    assert estimate.step_seconds > 0 and estimate.validation_seconds and estimate.evaluation_seconds
    parts = (
        estimate.setup_seconds
        + estimate.step_seconds * 30
        + estimate.validation_seconds * 2
        + estimate.evaluation_seconds
    )
    assert estimate.seconds == pytest.approx(parts)
    assert estimate.steps_per_epoch == 10 and estimate.for_recipe(_recipe(probed_dir)) == estimate

    # The run after a probe is the run without one (deterministic recipe, same seed).
    train(_recipe(plain_dir), show_progress=False)
    probed_weights, plain_weights = (load_file(d / "model.safetensors") for d in (probed_dir, plain_dir))
    assert probed_weights.keys() == plain_weights.keys()
    assert all(torch.equal(probed_weights[k], plain_weights[k]) for k in plain_weights)


def test_attack_time_is_scaled_to_every_image_as_if_clean_correct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probed on 4 clean-correct images at 0.5 s each: 100 images cost at most 50 s."""
    import sat_toolkit.evaluation.cost as cost

    def fake_estimate(model: Any, x: Any, y: Any, attacks: Any, **_: Any) -> CostEstimate:
        # Timed on the pinned stand-in, so that no attack stops early on a fooled image.
        assert isinstance(model, run_probe.NeverFooled) and not y.any()
        return CostEstimate(
            images=4, probe_images=4, probe_seconds=0.1, per_attack={"a": 1.5, "b": 0.5}, runs_per_attack=1
        )

    monkeypatch.setattr(cost, "estimate_cost", fake_estimate)
    estimate = run_probe.probe_run_cost(_recipe(tmp_path / "run"))
    assert estimate is not None
    assert estimate.evaluation_seconds == pytest.approx(2.0 / 4 * 100)  # attack.eval.samples = 100
    assert estimate.validation_seconds == pytest.approx(2.0 / 4 * 64)  # train.validate_samples = 64
    assert "final evaluation at most 50 s" in estimate.describe()


def test_the_stand_in_is_never_fooled_yet_passes_gradients() -> None:
    """What the attacks are timed on: the network's cost, a prediction no eps can move."""
    from sat_toolkit.attacks import create_attack
    from sat_toolkit.models import create_model

    torch.manual_seed(0)
    info = DatasetInfo(10, 1, (8, 8), (0.5,), (0.25,))
    network = create_model({"name": "small_cnn", "width": 8, "depth": 2}, info, "relu").eval()
    stand_in = run_probe.NeverFooled(network)
    x = torch.rand(16, 1, 8, 8, requires_grad=True)
    zeros = torch.zeros(16, dtype=torch.long)
    logits = stand_in(x)
    assert torch.equal(logits.argmax(1), zeros)
    pinned = run_probe.NeverFooled.PIN * F.one_hot(zeros, 10)
    assert torch.allclose(logits - pinned, network(x) * run_probe.NeverFooled.SCALE, atol=1e-5)
    (gradient,) = torch.autograd.grad(F.cross_entropy(logits, zeros), x)
    assert (gradient != 0).float().mean() > 0.9  # the softmax is not saturated
    attack = create_attack({"name": "apgd_t", "eps": 1.0, "steps": 10, "n_target_classes": 3, "seed": 0})
    result = attack.perturb(stand_in, x.detach(), zeros)
    assert torch.equal(stand_in(result.x_adv).argmax(1), zeros)  # eps = 1: the whole box, still robust


def test_a_run_shorter_than_the_threshold_is_not_probed(tmp_path: Path) -> None:
    assert run_probe.probe_run_cost(_recipe(tmp_path / "run"), min_total_steps=31) is None


def _study_lines(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str = STUDY,
    *,
    cell_seconds: float | None = None,
    **options: Any,
) -> list[str]:
    """The tiny study's console lines, its cells replaced by instant fakes (only the probe is
    real): each "fails", or with ``cell_seconds`` "finishes" in that many seconds."""
    spec = load_study(write_study(tmp_path, tmp_path / "out", text))

    def fake(task: study_runner.CellTask) -> study_runner.CellOutcome:
        if cell_seconds is None:
            return study_runner.CellOutcome(task.key, 0.0, error="fake")
        return study_runner.CellOutcome(task.key, cell_seconds, clean_accuracy=0.5, robust_accuracy=0.5)

    monkeypatch.setattr(study_runner, "execute_cell", fake)
    lines: list[str] = []
    with pytest.raises(SatError) if cell_seconds is None else contextlib.nullcontext():  # all "failed"
        run_study(spec, echo=lines.append, command="sat-toolkit study study.toml", **options)
    return lines


def test_a_fresh_study_prints_the_probed_estimate_before_its_first_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probing, "MIN_STEPS_TO_PROBE", 1)
    lines = _study_lines(tmp_path, monkeypatch)
    estimate = next(i for i, line in enumerate(lines) if line.startswith("estimated time: about"))
    first = next(i for i, line in enumerate(lines) if "started" in line)
    assert estimate < first
    assert "for 4 cell(s)" in lines[estimate] and "probe of relu seed 0" in lines[estimate]
    assert "training" in lines[estimate] and "s/step x 10 steps" in lines[estimate]


def test_small_cells_are_not_probed_and_a_failed_probe_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not any(line.startswith("estimated time") for line in _study_lines(tmp_path / "a", monkeypatch))

    def broken(recipe: Any, **_: Any) -> None:
        raise SatError("data.root: /nowhere does not exist")

    monkeypatch.setattr(probing, "MIN_STEPS_TO_PROBE", 1)
    monkeypatch.setattr(run_probe, "probe_run_cost", broken)
    lines = _study_lines(tmp_path / "b", monkeypatch)
    assert "no time estimate: the probe of relu seed 0 failed (data.root: /nowhere does not exist)" in lines


# The tiny study with its second axis over the training length instead of the activation,
# and a third value that trains with a 3-step attack: cells of two kinds, one in two lengths.
UNLIKE = STUDY.replace(
    'silu = ["activation=silu"]',
    'relu_longer = ["activation=relu", "train.epochs=3"]\n'
    'relu_pgd3 = ["activation=relu", "attack.train.steps=3"]',
)


def _fake_probe(probed: list[str]) -> Any:
    """A probe of any recipe at 10 s a step, 10 steps an epoch, 100 s of evaluation."""

    def probe(recipe: Any, **_: Any) -> run_probe.RunCostEstimate:
        probed.append(f"{recipe.run.seed} {recipe.attack.train.params['steps']} {recipe.train.epochs}")
        return run_probe.RunCostEstimate(
            setup_seconds=0.0, step_seconds=10.0 * recipe.attack.train.params["steps"],
            total_steps=recipe.train.total_steps(10), steps_per_epoch=10,
            validation_seconds=None, validations=0, evaluation_seconds=100.0, probe_seconds=1.0,
        )  # fmt: skip

    return probe


def test_unlike_cells_are_probed_once_per_kind_and_weighed_by_their_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget sweep's 3-epoch cells take three times a 1-epoch cell's training; a 3-step
    attack three times a 1-step one's. One probe per kind (the first cell of each), each
    cell predicted from its own: 1 epoch 200 s, 3 epochs 400 s, PGD-3 400 s."""
    probed: list[str] = []
    monkeypatch.setattr(probing, "MIN_STEPS_TO_PROBE", 1)
    monkeypatch.setattr(run_probe, "probe_run_cost", _fake_probe(probed))
    lines = _study_lines(tmp_path, monkeypatch, UNLIKE, cell_seconds=300.0)
    assert probed == ["0 1 1", "0 3 1"]  # relu seed 0 (for both lengths), relu_pgd3 seed 0
    estimate = next(line for line in lines if line.startswith("estimated time"))
    assert estimate.startswith(
        "estimated time: about 33 min for 6 cell(s), 3 min to 7 min per cell (as the probes predict); "
        "from 2 s of probes of 2 kind(s) of cell: relu seed 0: training 10 s/step x 10 steps"
    )  # 2 x 200 + 4 x 400 = 2000 s
    assert UNEVEN_CELLS not in estimate
    # The first cell (200 s predicted) took 300: the rest at 1.5x, 300 + 4 x 600 = 2700 s.
    after_first = next(line for line in lines if line.startswith("[1/6] estimated"))
    assert after_first == (
        "[1/6] estimated time left: 45 min for 5 cell(s) "
        "(the probes' prediction x 1.50, the median of 1 finished cell(s) against their own)"
    )


def test_a_selection_of_alike_cells_is_weighed_against_the_unlike_cells_on_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--only relu_longer`` after the 1-epoch cells finished: the selected cells are alike,
    but the finished ones on record are not like them, so their median (300 s) is no
    estimate of a 3-epoch cell. The probes weigh them: 300 s for 200 predicted, so 1.5 x
    400 s for each 3-epoch cell."""
    probed: list[str] = []
    monkeypatch.setattr(probing, "MIN_STEPS_TO_PROBE", 1)
    monkeypatch.setattr(run_probe, "probe_run_cost", _fake_probe(probed))
    _study_lines(tmp_path, monkeypatch, UNLIKE, cell_seconds=300.0, only=("relu",), probe=False)
    lines = _study_lines(tmp_path, monkeypatch, UNLIKE, cell_seconds=300.0, only=("relu_longer",))
    assert probed == ["0 1 3"]  # the first cell left of the one kind left: relu_longer seed 0
    assert lines[1].startswith(
        "estimated time: about 20 min for 2 cell(s), 10 min per cell (the probes' prediction x 1.50, "
        "the median of 2 finished cell(s) against their own); from 1 s of probes of 1 kind(s) of cell: "
        "relu_longer seed 0: training 10 s/step x 30 steps"
    )


def test_a_failed_probe_of_unlike_cells_leaves_the_measured_estimate_with_its_caveat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(recipe: Any, **_: Any) -> None:
        raise SatError("data.root: /nowhere does not exist")

    monkeypatch.setattr(probing, "MIN_STEPS_TO_PROBE", 1)
    _study_lines(tmp_path, monkeypatch, UNLIKE, cell_seconds=300.0, only=("relu",), probe=False)
    monkeypatch.setattr(run_probe, "probe_run_cost", broken)
    lines = _study_lines(tmp_path, monkeypatch, UNLIKE, cell_seconds=300.0, only=("relu_longer",))
    assert lines[1:3] == [
        "no time estimate: the probe of relu_longer seed 0 failed (data.root: /nowhere does not exist)",
        "estimated time left: 10 min for 2 cell(s) (median 5 min per cell over 2 finished)" + UNEVEN_CELLS,
    ]


def test_unlike_cells_not_probed_are_counted_alike_with_a_caveat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without probes, only the median finished cell is known: every estimate must say it
    does not weigh the cells, and cells that are alike must not get that caveat."""
    alike = _study_lines(tmp_path / "a", monkeypatch, cell_seconds=300.0, probe=False)
    unlike = _study_lines(tmp_path / "b", monkeypatch, UNLIKE, cell_seconds=300.0, probe=False)
    assert [line for line in alike if "estimated" in line][0] == (
        "[1/4] estimated time left: 15 min for 3 cell(s) (median 5 min per cell over 1 finished)"
    )
    estimates = [line for line in unlike if "estimated" in line]
    assert len(estimates) == 5 and all(line.endswith(UNEVEN_CELLS) for line in estimates)


@pytest.mark.parametrize(
    ("study", "alike"),
    [
        ("fashion_mnist_activations_converged", True),  # activations and seeds only
        ("fashion_mnist_protocol", False),  # the fc head is a model of its own
        ("fashion_mnist_budget", False),  # 6, 12 and 24 epochs
        ("fashion_mnist_objectives", False),  # PGD-1 vs 10-step TRADES and MART
    ],
)
def test_which_shipped_studies_have_cells_of_unlike_cost(study: str, alike: bool, tmp_path: Path) -> None:
    spec = load_study(REPO / "recipes" / "studies" / f"{study}.toml", output_dir=tmp_path)
    assert cells_alike([p.recipe for p in plan(spec)]) is alike
