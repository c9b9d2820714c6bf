"""Suites named for what they are, the RobustBench-ready report, and ``eval --compare``.

A report must say what was run (threat model, eps, images, suite members, seed, library
version) and each image's outcome, so that two reports of the same images can be compared
image by image; the paired numbers are checked against counts made here and against
scipy's exact binomial test.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from digits_cnn import trained_digits_cnn
from scipy.stats import binomtest
from torch import nn

import sat_toolkit
from sat_toolkit.attacks import create_attack
from sat_toolkit.cli import cli
from sat_toolkit.errors import SatError
from sat_toolkit.evaluation.compare import compare_reports, mcnemar_p
from sat_toolkit.evaluation.evaluate import images_fingerprint
from sat_toolkit.evaluation.suites import SUITES

EPS = 0.1


@pytest.fixture(scope="module")
def two_models() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """The digits CNN trained briefly and longer: same images, different robustness."""
    short, x, y = trained_digits_cnn(steps=30)
    long, _, _ = trained_digits_cnn(steps=80)
    return short, long, x[1200:1400], y[1200:1400]


def _quick_pgd() -> dict[str, object]:
    return {"pgd5": create_attack({"name": "pgd", "steps": 5, "eps": EPS, "seed": 0})}


def test_the_suites_say_what_they_contain() -> None:
    assert list(SUITES["autoattack"].attacks) == ["apgd_ce", "apgd_t", "fab_t", "square"]
    autoattack = SUITES["autoattack"].attacks
    assert autoattack["apgd_t"]["n_target_classes"] == autoattack["fab_t"]["n_target_classes"] == 9
    assert autoattack["square"]["queries"] == 5000
    assert list(SUITES["aa-core"].attacks) == ["apgd_ce", "apgd_t"]
    for retired, hint in (("standard", "'aa-core'"), ("plus", "'autoattack'")):
        with pytest.raises(SatError, match=hint):
            sat_toolkit.evaluate(
                nn.Flatten(), torch.zeros(2, 1, 2, 2), torch.zeros(2), eps=0.1, suite=retired
            )


def test_retired_suite_on_the_command_line_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "missing"), "--suite", "standard"])
    assert result.exit_code == 2
    assert "now called 'aa-core'" in result.output and "Traceback" not in result.output


def test_report_carries_what_robustbench_needs_and_each_image(two_models) -> None:
    model, _, x, y = two_models
    evaluation = sat_toolkit.evaluate(model, x, y, eps=EPS, suite="aa-core", attacks=_quick_pgd(), seed=3)
    report = evaluation.to_dict()
    assert (report["threat_model"], report["eps"], report["n_examples"], report["seed"]) == (
        "Linf",
        EPS,
        200,
        3,
    )
    assert report["library"] == {"name": "smooth-adversarial-training", "version": sat_toolkit.__version__}
    assert report["suite"]["name"] == "aa-core" and report["suite"]["members"] == ["apgd_ce", "apgd_t"]
    assert "autoattack_acc" not in report  # only the autoattack suite earns that field
    outcome = report["per_image"]["outcome"]
    assert report["per_image"]["images_sha256"] == images_fingerprint(x, y)
    assert len(outcome) == 200
    assert outcome.count("robust") == round(report["robust_acc"] * 200)
    assert outcome.count("misclassified") == round((1 - report["clean_acc"]) * 200)
    # Each broken image names the first attack, in order, whose example fools the model.
    robust_after = evaluation.report.clean_correct.clone()
    for label, attack in evaluation.report.attacks.items():
        newly = robust_after & ~attack.robust
        assert [outcome[i] for i in newly.nonzero().flatten().tolist()] == [label] * int(newly.sum())
        robust_after &= attack.robust
    assert {o for o in outcome} <= {"robust", "misclassified", "apgd_ce", "apgd_t", "pgd5"}
    json.dumps(report)  # plain JSON


def test_compare_pairs_two_reports_image_by_image(two_models, tmp_path) -> None:
    short, long, x, y = two_models
    paths = []
    for name, model in (("a", short), ("b", long)):
        evaluation = sat_toolkit.evaluate(model, x, y, eps=EPS, suite=None, attacks=_quick_pgd())
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(evaluation.to_dict()), encoding="utf-8")
        paths.append(path)
    a, b = (json.loads(p.read_text()) for p in paths)
    robust_a = [o == "robust" for o in a["per_image"]["outcome"]]
    robust_b = [o == "robust" for o in b["per_image"]["outcome"]]
    only_a = sum(p and not q for p, q in zip(robust_a, robust_b, strict=True))
    only_b = sum(q and not p for p, q in zip(robust_a, robust_b, strict=True))
    assert only_a + only_b > 5, "the two models should differ on some images"

    comparison = compare_reports(a, b)
    assert (comparison.robust.only_a, comparison.robust.only_b) == (only_a, only_b)
    assert comparison.robust.difference == pytest.approx(b["robust_acc"] - a["robust_acc"], abs=1e-9)
    assert comparison.robust.p_value == pytest.approx(
        binomtest(only_a, only_a + only_b, 0.5).pvalue, rel=1e-9
    )
    low, high = comparison.robust.interval
    assert low < comparison.robust.difference < high

    result = CliRunner().invoke(cli, ["eval", "--compare", str(paths[0]), str(paths[1])])
    assert result.exit_code == 0, result.output
    assert f"{100 * comparison.robust.difference:+.2f}" in result.output
    assert f"{comparison.robust.p_value:.3g}" in result.output
    assert not comparison.notes and "images_sha256" not in result.output

    # A report without its images' fingerprint (edited, or from another tool) still pairs,
    # but says the pairing rests on an assumption it cannot check.
    del b["per_image"]["images_sha256"]
    assert compare_reports(a, b).notes == [
        "B record(s) no per_image.images_sha256, so that both evaluated the same images cannot be "
        "checked: the pairing assumes it"
    ]


def test_mcnemar_p_matches_scipy_for_large_counts() -> None:
    for only_a, only_b in ((0, 0), (0, 7), (40, 60), (1200, 1310), (5, 5)):
        expected = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue
        assert mcnemar_p(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_compare_refuses_what_cannot_be_paired(two_models, tmp_path) -> None:
    model, _, x, y = two_models
    first = sat_toolkit.evaluate(model, x[:100], y[:100], eps=EPS, suite=None, attacks=_quick_pgd()).to_dict()
    other = sat_toolkit.evaluate(model, x[100:], y[100:], eps=EPS, suite=None, attacks=_quick_pgd()).to_dict()
    old = {key: value for key, value in first.items() if key != "per_image"}
    files = {}
    for name, report in (("first", first), ("other", other), ("old", old)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(report), encoding="utf-8")
    (tmp_path / "garbage.json").write_text("{not json", encoding="utf-8")
    cases = [
        ([str(files["first"]), str(files["other"])], "evaluate different images"),
        ([str(files["first"]), str(files["old"])], "no per-image outcome"),
        ([str(files["first"]), str(tmp_path / "garbage.json")], "not a JSON evaluation report"),
        ([str(files["first"]), str(tmp_path / "absent.json")], "no such file"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, ["eval", "--compare", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["eval", str(files["first"]), "--compare", *args])
    assert result.exit_code == 2 and "give no MODEL" in result.output
    result = CliRunner().invoke(cli, ["eval"])
    assert result.exit_code == 2 and "give MODEL" in result.output


def test_square_in_the_suite_answers_the_gradient_free_check(two_models) -> None:
    model, _, x, y = two_models
    attacks = {
        "fgsm": create_attack({"name": "fgsm", "eps": EPS, "seed": 0}),
        "square": create_attack({"name": "square", "queries": 40, "eps": EPS, "seed": 0}),
    }
    evaluation = sat_toolkit.evaluate(model, x, y, eps=EPS, suite=None, attacks=attacks, checks=True)
    check = next(c for c in evaluation.checks if c.name.startswith("gradient-free Square"))
    report = evaluation.report
    white_box_robust = report.clean_correct & report.attacks["fgsm"].robust
    expected = int((white_box_robust & ~report.attacks["square"].robust).sum())
    assert check.numbers["square_in_suite"] is True
    assert check.numbers["queries"] == 40
    assert check.numbers["extra_broken_images"] == expected
