"""The evaluator: worst case over attacks, bound checks, masking checks, the eval CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import sat_toolkit
from sat_toolkit.attacks import AttackResult
from sat_toolkit.cli import cli
from sat_toolkit.errors import SatError
from sat_toolkit.evaluation import evaluate_robustness
from sat_toolkit.evaluation.checks import CheckResult, allowed_images, run_checks
from sat_toolkit.evaluation.suites import build_attacks, parse_attack_option


class _ScriptedAttack:
    """Moves chosen samples by +eps on every pixel (a perturbation we can predict)."""

    name = "scripted"
    norm = "linf"

    def __init__(self, eps: float, move: torch.Tensor, overshoot: float = 1.0) -> None:
        self.eps, self.move, self.overshoot = eps, move, overshoot

    def perturb(self, model, x, y, *, eps=None):
        index = model.last_index  # the evaluator passes batches of clean-correct samples
        shift = self.eps * self.overshoot * self.move[index].float().view(-1, 1, 1, 1)
        return AttackResult(x_adv=(x + shift).clamp(0, 1), eps=self.eps)


class _ThresholdModel(nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, class 0 otherwise; remembers sample ids."""

    def __init__(self, ids: torch.Tensor) -> None:
        super().__init__()
        self.ids = ids
        self.last_index = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Identify the samples by their exact clean pixels (tests only).
        score = x.flatten(1).mean(1) - 0.5
        return torch.stack([-score, score], dim=1)


def test_worst_case_is_the_per_sample_and_of_all_attacks() -> None:
    x = torch.full((6, 1, 2, 2), 0.45)
    x[3:] = 0.55
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    model = _ThresholdModel(torch.arange(6))

    class Flip:
        """Breaks the given samples: pushes them across the 0.5 threshold within eps 0.1."""

        norm = "linf"
        eps = 0.1

        def __init__(self, broken: set[int]) -> None:
            self.broken = broken

        def perturb(self, model, xb, yb, *, eps=None):
            x_adv = xb.clone()
            for row in range(len(xb)):
                original = int((x == xb[row]).all(dim=(1, 2, 3)).nonzero()[0])
                if original in self.broken:
                    x_adv[row] = xb[row] + (0.1 if yb[row] == 0 else -0.1)
            return AttackResult(x_adv=x_adv.clamp(0, 1), eps=0.1)

    x = x + torch.arange(6).view(-1, 1, 1, 1) * 1e-3  # make every sample unique
    attacks = {"a": Flip({0, 3}), "b": Flip({3, 4})}
    report = evaluate_robustness(model, x, y, attacks, batch_size=4, cascade=False)
    assert report.clean_accuracy == 1.0
    assert report.attacks["a"].robust.tolist() == [False, True, True, False, True, True]
    assert report.attacks["b"].robust.tolist() == [True, True, True, False, False, True]
    assert report.worst_case.tolist() == [False, True, True, False, False, True]
    assert report.robust_accuracy == pytest.approx(3 / 6)
    # The cascade: b attacks only what a left robust, and reports the accuracy after both.
    cascade = evaluate_robustness(model, x, y, attacks, batch_size=4)
    assert [o.attacked for o in cascade.attacks.values()] == [6, 4]
    assert cascade.attacks["b"].robust.tolist() == report.worst_case.tolist()
    assert cascade.worst_case.tolist() == report.worst_case.tolist()


class _NaNAbove(nn.Module):
    """The threshold model, with NaN logits for images whose mean pixel exceeds ``limit``."""

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1).mean(1) - 0.5
        logits = torch.stack([-score, score], dim=1)
        return torch.where((x.flatten(1).mean(1) > self.limit).unsqueeze(1), torch.nan, logits)


def test_nan_logits_are_never_a_correct_or_robust_prediction() -> None:
    """argmax of NaN is class 0: overflowing weights scored every class-0 image correct and
    robust, and a stranger's walk read 0.1000 clean / 0.1000 robust with every check PASS."""
    x, y = torch.full((4, 1, 2, 2), 0.2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(
        SatError, match=r"^the model's outputs \(logits\) are NaN or inf on 4 of 4 clean test"
    ):
        evaluate_robustness(_NaNAbove(limit=-1.0), x, y, {})

    class Brighten:  # pushes every image to a mean of 0.3: finite for the clean ones, NaN after
        norm, eps = "linf", 0.1

        def perturb(self, model, xb, yb, *, eps=None):
            return AttackResult(x_adv=(xb + 0.1).clamp(0, 1), eps=0.1)

    report = evaluate_robustness(_NaNAbove(limit=0.25), x, y, {"brighten": Brighten()})
    assert report.clean_accuracy == 1.0  # class 0 by a finite score
    assert report.robust_accuracy == 0.0  # NaN after the attack: broken, not "class 0"


def test_an_attack_leaving_the_eps_ball_is_refused() -> None:
    class Cheater:
        norm = "linf"
        eps = 0.1

        def perturb(self, model, x, y, *, eps=None):
            return AttackResult(x_adv=(x + 0.2).clamp(0, 1), eps=0.1)

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    nn.init.zeros_(model[1].weight)
    nn.init.zeros_(model[1].bias)  # ties go to class 0: every sample is clean-correct
    x, y = torch.full((3, 1, 2, 2), 0.3), torch.zeros(3, dtype=torch.long)
    with pytest.raises(SatError, match="left the linf eps-ball"):
        evaluate_robustness(model, x, y, {"cheater": Cheater()})


def _linear_digits_model(quantise: bool) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A logistic-regression digits classifier; ``quantise`` masks its input gradients."""
    from sat_toolkit.data import create_dataset

    train = create_dataset({"name": "digits"}).load("train")
    x_train, y_train = train[list(range(len(train)))]
    torch.manual_seed(0)
    linear = nn.Linear(64, 10)
    optimiser = torch.optim.Adam(linear.parameters(), lr=0.05)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(linear(x_train.flatten(1)), y_train).backward()
        optimiser.step()

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = linear

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if quantise:  # rounding: zero gradient almost everywhere, as in classic masking defences
                x = torch.round(x * 4) / 4
            return self.linear(x.flatten(1))

    test = create_dataset({"name": "digits"}).load("test")
    x, y = test[list(range(120))]
    return Model().eval(), x, y


def _exact_linear_robustness(linear: nn.Linear, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-sample robustness of a linear classifier under L-inf eps inside the [0, 1] box.

    For each wrong class j the margin (w_y - w_j).x + (b_y - b_j) is linear and the constraint
    set is a product of per-pixel intervals, so its minimum moves every pixel to the end of
    its interval [max(x - eps, 0), min(x + eps, 1)] that lowers the margin: closed form.
    """
    w, b = linear.weight.detach().double(), linear.bias.detach().double()
    flat = x.flatten(1).double()
    low, high = (flat - eps).clamp(min=0), (flat + eps).clamp(max=1)
    robust = torch.ones(len(y), dtype=torch.bool)
    for j in range(w.shape[0]):
        v = w[y] - w[j]  # per-sample margin direction
        worst = torch.where(v > 0, low, high)
        margin = (v * worst).sum(1) + b[y] - b[j]
        robust &= (margin > 0) | (y == j)
    return robust


@pytest.mark.parametrize("quantise", [False, True])
def test_masking_checks_flag_a_quantised_model_and_pass_an_honest_one(quantise: bool) -> None:
    model, x, y = _linear_digits_model(quantise)
    specs = {"apgd_ce": {"name": "apgd_ce", "steps": 20}, "apgd_t": {"name": "apgd_t", "steps": 20}}
    attacks = build_attacks(specs, eps=0.15, norm="linf", seed=0)
    report = evaluate_robustness(model, x, y, attacks)
    results = {c.name: c for c in run_checks(
        model, x, y, report, attacks, eps=0.15, norm="linf", num_classes=10, seed=0, batch_size=256,
        square_queries=300,
    )}  # fmt: skip
    zero = results["input gradients are rarely exactly zero"]
    square = results["gradient-free Square does not beat the white-box suite"]
    if quantise:
        assert report.attacks["apgd_ce"].zero_grad_fraction > 0.9
        assert not zero.passed and not square.passed
        assert square.numbers["extra_broken"] > 0.2
    else:
        # The suite reaches the exact worst case of a linear model (closed form above).
        exact = _exact_linear_robustness(model.linear, x, y, 0.15) & report.clean_correct
        assert torch.equal(report.worst_case, exact)
        assert zero.passed and square.passed
        assert results["robust accuracy falls as eps grows"].passed
        assert results["large eps drives robust accuracy to chance"].passed


def test_the_worst_case_with_the_checks_counts_the_images_their_own_attacks_broke() -> None:
    """A passing or failing check may break images the suite left robust (a stranger found
    Square breaking 3 of 359 under PGD-20, PASS): robust_acc stays the suite's, as AutoAttack
    reports it, and robust_acc_with_checks counts those images too."""
    model, x, y = _linear_digits_model(quantise=True)
    attacks = {"apgd_ce": {"name": "apgd_ce", "steps": 20}}
    result = sat_toolkit.evaluate(model, x, y, eps=0.15, suite=None, attacks=attacks, checks=True,
                                  seed=0, square_queries=300)  # fmt: skip
    square = sat_toolkit.evaluate(model, x, y, eps=0.15, suite=None, seed=0,
                                  attacks={"square": {"name": "square", "queries": 300}})  # fmt: skip
    by_square = result.report.worst_case & ~square.report.attacks["square"].robust  # found independently
    checks = {c.name: c for c in result.checks}
    assert checks["gradient-free Square does not beat the white-box suite"].numbers["broken"] == (
        by_square.nonzero().flatten().tolist()
    )
    stronger = torch.zeros_like(by_square)
    stronger[
        checks["apgd_ce with 2x steps and +1 restart leaves the worst case unchanged"].numbers["broken"]
    ] = True
    assert not (stronger & ~result.report.worst_case).any()  # only images the suite left robust
    expected = float((result.report.worst_case & ~by_square & ~stronger).double().mean())
    assert by_square.sum() > 10 and result.robust_accuracy_with_checks == pytest.approx(expected)
    assert result.robust_accuracy_with_checks < result.robust_accuracy
    report = result.to_dict()
    assert report["robust_acc"] == result.robust_accuracy
    assert report["robust_acc_with_checks"] == result.robust_accuracy_with_checks


def test_masking_checks_say_not_applicable_where_no_image_is_classified_correctly() -> None:
    """A model wrong on every image passes every check vacuously: the report must say N/A."""
    model, x, y = _linear_digits_model(quantise=False)
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    shifted = (y + 1) % 10  # where the model is right, a label it did not predict
    labels = torch.where(wrong, y, shifted)
    specs = {"apgd_ce": {"name": "apgd_ce", "steps": 5}}
    attacks = build_attacks(specs, eps=0.15, norm="linf", seed=0)
    report = evaluate_robustness(model, x, labels, attacks)
    assert report.clean_accuracy == 0.0
    checks = run_checks(
        model, x, labels, report, attacks, eps=0.15, norm="linf", num_classes=10, seed=0, batch_size=256
    )
    assert [c.verdict for c in checks] == ["N/A"] * 6
    assert not any(c.passed for c in checks) and all("no image of" in c.detail for c in checks)
    assert checks[2].name == "apgd_ce with 2x steps and +1 restart leaves the worst case unchanged"


@pytest.mark.parametrize("cascade", [True, False])
def test_the_sweeps_run_at_the_evaluations_eps_counts_in_its_worst_case(cascade: bool) -> None:
    """A stranger's walk: `--sweep 0.1` printed 0.8333 at eps 0.1 under a headline of 0.85.
    The sweep's second, differently seeded run breaks some images the first missed: an image
    either run breaks is broken, so the headline is the curve's point at that eps."""
    model, x, y = _linear_digits_model(quantise=True)  # masked gradients: runs disagree
    result = sat_toolkit.evaluate(
        model, x, y, eps=0.15, suite=None, attacks=["pgd:steps=3,random_start_fraction=1"],
        sweep=[0.05, 0.15], checks=False, cascade=cascade,
    )  # fmt: skip
    report = result.report
    assert set(report.attacks) == {
        "pgd_steps3_random_start_fraction1",
        "pgd_steps3_random_start_fraction1/sweep",
    }
    assert result.sweep[0.15]["robust_accuracy"] == report.robust_accuracy
    first, second = (outcome.robust for outcome in report.attacks.values())
    assert torch.equal(report.worst_case, report.clean_correct & first & second)
    assert "pgd_steps3_random_start_fraction1/sweep" not in result.sweep[0.05]["attacks"]


def test_masking_checks_that_need_a_robust_image_say_not_applicable_when_none_is_left() -> None:
    """A stranger's walk: L2 eps 8 on 8x8 digits broke every image, and every check said PASS;
    the curve went to eps 16, past the largest L2 distance of two such images (8), and the
    "large eps" check ran at 4, below the evaluation's own eps."""
    model, x, y = _linear_digits_model(quantise=False)
    specs = {"apgd_ce": {"name": "apgd_ce", "steps": 5}}
    attacks = build_attacks(specs, eps=8.0, norm="l2", seed=0)
    report = evaluate_robustness(model, x, y, attacks)
    assert report.clean_accuracy > 0.5 and report.robust_accuracy == 0.0
    checks = run_checks(
        model, x, y, report, attacks, eps=8.0, norm="l2", num_classes=10, seed=0, batch_size=256
    )
    verdicts = {c.name: c.verdict for c in checks}
    assert verdicts == {
        "robust accuracy falls as eps grows": "PASS",
        "large eps drives robust accuracy to chance": "N/A",
        "apgd_ce with 2x steps and +1 restart leaves the worst case unchanged": "N/A",
        "worst case is at least as strong as every attack": "N/A",
        "input gradients are rarely exactly zero": "PASS",
        "gradient-free Square does not beat the white-box suite": "N/A",
    }
    assert list(checks[0].numbers["curve"]) == ["4", "8"]  # 16 lies beyond the L2 limit of 8


def test_attack_option_parsing() -> None:
    assert parse_attack_option("pgd:steps=50,eps=8/255") == (
        "pgd_steps50_eps8-255",
        {"name": "pgd", "steps": 50, "eps": "8/255"},
    )
    with pytest.raises(SatError, match="key=value"):
        parse_attack_option("pgd:steps")
    with pytest.raises(SatError, match="an empty parameter between commas"):
        parse_attack_option("pgd:steps=2,,seed=1")
    assert parse_attack_option("pgd:steps=2,")[1] == {"name": "pgd", "steps": 2}  # a trailing comma
    assert parse_attack_option("pgd:")[1] == {"name": "pgd"}
    # a qualified plugin name: the package, then the name, then the parameters
    qualified = "smooth-adversarial-training:pgd"
    assert parse_attack_option(f"{qualified}:steps=3")[1] == {"name": qualified, "steps": 3}
    assert parse_attack_option(qualified)[1] == {"name": qualified}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_engine import tiny_recipe

    run_dir = tmp_path_factory.mktemp("eval") / "run"
    sat_toolkit.run(tiny_recipe(run_dir, checkpoint={"every_steps": 0}), show_progress=False)
    return run_dir


def test_eval_cli_names_a_report_by_what_was_evaluated(trained_run: Path) -> None:
    """A run's model on its recorded data gets the plain name; on images given by --data a
    name of their own, so neither report replaces the other."""
    base = ["eval", str(trained_run), "--suite", "none", "--attack", "pgd:steps=2", "--samples", "20",
            "--no-checks"]  # fmt: skip
    for extra in ([], ["--data", "digits:limit_test=300"]):
        result = CliRunner().invoke(cli, base + extra)
        assert result.exit_code == 0, result.output
    names = sorted(p.name for p in trained_run.glob("eval-none+pgd_steps2-*.json"))
    plain = "eval-none+pgd_steps2-linf-eps0.1-n20-seed0.json"
    assert len(names) == 2 and plain in names
    (other,) = set(names) - {plain}
    assert re.fullmatch(r"eval-none\+pgd_steps2-linf-eps0\.1-n20-seed0-[0-9a-f]{8}\.json", other)


def test_eval_cli_writes_a_complete_report_and_sweep_plot(trained_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "report.json"
    result = CliRunner().invoke(cli, [
        "eval", str(trained_run), "--suite", "quick", "--attack", "pgd:steps=10", "--samples", "60",
        "--sweep", "0.05,0.1,0.2", "--square-queries", "100", "--output", str(output),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(output.read_text())
    assert report["threat_model"] == "Linf" and report["eps"] == pytest.approx(0.1)
    assert report["n_examples"] == 60 and report["seed"] == 0
    assert report["activation"] == {"name": "silu"} and report["dataset"]["name"] == "digits"
    # the sweep's run at the evaluation's eps 0.1 counts in its worst case
    assert set(report["attacks"]) == {"apgd_ce", "pgd_steps10", "apgd_ce/sweep", "pgd_steps10/sweep"}
    worst = report["robust_acc"]
    assert worst == pytest.approx(min(a["robust_accuracy"] for a in report["attacks"].values()), abs=1 / 60)
    assert worst <= report["clean_acc"]
    sweep = [row["robust_accuracy"] for row in report["sweep"]]
    assert sweep == sorted(sweep, reverse=True)
    assert Path(report["sweep_plot"]).read_bytes()[:4] == b"\x89PNG"
    assert len(report["checks"]) == 6 and all("passed" in c for c in report["checks"])
    assert "worst case" in result.output and "PASS" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eps", "-1"], "--eps must be >= 0"),
        (["--eps", "four"], "not a number or fraction"),
        (["--suite", "strong"], "unknown suite 'strong'"),
        (["--attack", "pgdd"], "unknown attack 'pgdd'"),
    ],
)
def test_eval_cli_bad_input_is_one_line_exit_2(trained_run: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["eval", str(trained_run), "--no-checks", "--samples", "10", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_eval_cli_missing_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such run directory or model file" in result.output


def _poisson_quantile(mean: float, level: float) -> int:
    """Smallest k with P(K <= k) > level for K ~ Poisson(mean), summed term by term here."""
    k = 0
    while sum(math.exp(-mean) * mean**i / math.factorial(i) for i in range(k + 1)) <= level:
        k += 1
    return k


@pytest.mark.parametrize("n", [0, 40, 100, 359, 1000, 10000])
def test_masking_check_tolerance_counts_images_by_sample_size(n: int) -> None:
    allowed = allowed_images(n)
    assert allowed == _poisson_quantile(0.005 * n, 0.95)
    assert {359: 4, 1000: 9}.get(n, allowed) == allowed  # the values the docs quote


def test_masking_check_tolerance_is_finite_where_the_poisson_terms_underflow() -> None:
    mean = 0.005 * 200_000  # exp(-1000) is 0 in floating point
    assert mean < allowed_images(200_000) < mean + 3 * math.sqrt(mean)


class _StepsAttack:
    """Shifts every pixel up by ``steps / 1000``: more steps break samples with larger margins."""

    name = "steps_attack"
    norm = "linf"

    def __init__(self, eps: float = 0.1, steps: int = 20, restarts: int = 1) -> None:
        self.eps, self.steps, self.restarts = eps, steps, restarts

    def hparams(self) -> dict:
        return {"eps": self.eps, "steps": self.steps, "restarts": self.restarts}

    def perturb(self, model, x, y, *, eps=None):
        budget = self.eps if eps is None else eps
        return AttackResult(x_adv=(x + min(budget, self.steps / 1000)).clamp(0, 1), eps=budget)


def _margin_samples(n: int, fragile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n class-0 images below the 0.5 threshold: ``fragile`` of them 0.03 below, the rest 0.08."""
    margins = torch.full((n,), 0.08)
    margins[:fragile] = 0.03  # broken by a 40-step shift (0.04), not by a 20-step one (0.02)
    x = (0.5 - margins).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    return x, torch.zeros(n, dtype=torch.long)


def _convergence_check(fragile: int, attacks: dict) -> CheckResult:
    """The convergence check on 359 samples of which ``fragile`` only a 40-step shift breaks."""
    x, y = _margin_samples(359, fragile)
    model = _ThresholdModel(torch.arange(359))
    report = evaluate_robustness(model, x, y, attacks)
    checks = run_checks(
        model, x, y, report, attacks, eps=0.1, norm="linf", num_classes=2, seed=0, batch_size=512,
        square_queries=5,
    )  # fmt: skip
    return next(c for c in checks if "2x steps" in c.name)


@pytest.mark.parametrize(("fragile", "passes"), [(2, True), (4, True), (10, False)])
def test_convergence_check_counts_images_the_stronger_attack_adds_to_the_worst_case(
    fragile: int, passes: bool
) -> None:
    """At n = 359, 2 more broken images (0.56 points) used to fail a fixed half-point bar."""
    converged = _convergence_check(fragile, {"steps": _StepsAttack()})
    assert converged.numbers["newly_broken"] == fragile
    assert converged.passed is passes


def test_convergence_check_is_about_the_worst_case_not_one_member() -> None:
    """Images the stronger first attack adds are no failure when another member breaks them already."""
    converged = _convergence_check(10, {"steps": _StepsAttack(), "strong": _StepsAttack(steps=50)})
    assert converged.numbers["newly_broken"] == 0 and converged.passed


def test_eval_cli_prints_a_cost_estimate_before_a_long_evaluation(trained_run: Path, tmp_path: Path) -> None:
    from sat_toolkit.evaluation.cost import MIN_IMAGES_TO_PROBE

    def run(samples: int) -> str:
        output = tmp_path / f"report{samples}.json"
        args = ["eval", str(trained_run), "--suite", "none", "--attack", "pgd:steps=2", "--attack", "fgsm"]
        args += ["--no-checks", "--samples", str(samples), "--output", str(output)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert json.loads(output.read_text())["n_examples"] == samples
        return result.output

    long = run(MIN_IMAGES_TO_PROBE)
    assert "estimated time: at most" in long and "[pgd_steps2 " in long and ", fgsm " in long
    assert "estimated time" not in run(MIN_IMAGES_TO_PROBE - 1)


def test_the_final_evaluations_bar_shows_each_attacks_own_rate() -> None:
    """The bar restarted under an attack's label after its first batch: over a run's APGD-CE
    on 238 images it showed 191970 image/s."""
    import time

    from sat_toolkit.engine.evaluation import _AttackProgress

    class Slow:
        norm, eps = "linf", 0.1

        def perturb(self, model, xb, yb, *, eps=None):
            time.sleep(0.05)
            return AttackResult(x_adv=xb.clone(), eps=0.1)

    x = torch.full((8, 1, 2, 2), 0.55) + torch.arange(8).view(-1, 1, 1, 1) * 1e-3
    y = torch.ones(8, dtype=torch.long)
    rates = {}
    with _AttackProgress(enabled=True) as progress:

        def follow(label: str, done: int, total: int) -> None:
            progress(label, done, total)
            rates[label] = progress.bar.format_dict["rate"]

        started = time.perf_counter()
        evaluate_robustness(_ThresholdModel(torch.arange(8)), x, y, {"a": Slow(), "b": Slow()}, batch_size=4,
                            progress=follow)  # fmt: skip
        elapsed = time.perf_counter() - started
    # two batches of 4 images per attack, 0.05 s each: at most 80 image/s, less on a slow machine
    assert all(0 < rate <= 8 / (0.05 * 2) * 1.5 for rate in rates.values()), (rates, elapsed)
