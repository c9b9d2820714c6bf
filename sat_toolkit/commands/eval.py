"""``sat-toolkit eval``: credible robustness numbers for a trained model."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import click
import torch

from sat_toolkit.commands.table import format_table
from sat_toolkit.errors import SatError


def _dataset_spec(model_config: dict[str, Any], data: str | None, data_path: str | None) -> dict[str, Any]:
    if data is not None:
        spec: dict[str, Any] = {"name": data}
    elif "dataset" in model_config:
        spec = dict(model_config["dataset"])
    else:
        raise SatError("this model file does not say which dataset it was trained on; pass --data NAME")
    if data_path is not None:
        spec["path"] = data_path
    return spec


def _default_eps(model_config: dict[str, Any]) -> tuple[float, str]:
    attack = model_config.get("train_attack") or {}
    if "eps" not in attack:
        raise SatError("the model file does not record its training eps; pass --eps (e.g. --eps 4/255)")
    return float(attack["eps"]), str(attack.get("norm", "linf"))


@click.command("eval")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.option(
    "--suite", default="standard", show_default=True, help="Attack suite: standard, plus, pgd, quick."
)
@click.option(
    "--attack", "attacks", multiple=True, metavar="SPEC", help="Extra attack, e.g. pgd:steps=50,restarts=2."
)
@click.option(
    "--eps", "eps_text", help="Perturbation budget in [0, 1] pixel space, e.g. 4/255 (default: training eps)."
)
@click.option(
    "--norm", type=click.Choice(["linf", "l2"]), help="Threat model (default: the training attack's)."
)
@click.option("--samples", default=1000, show_default=True, help="Test images to evaluate (0 = all).")
@click.option("--seed", default=0, show_default=True, help="Seed for the sample choice and the attacks.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--data", help="Dataset plugin (default: the one the model was trained on).")
@click.option("--data-path", help="Dataset location, for plugins that read files.")
@click.option(
    "--sweep", "sweep_text", help="Comma-separated eps values for a robustness-vs-eps curve (PNG + JSON)."
)
@click.option(
    "--checks/--no-checks", default=True, show_default=True, help="Run the gradient-masking checks."
)
@click.option("--square-queries", default=1000, show_default=True, help="Query budget of the Square check.")
@click.option(
    "--output", type=click.Path(path_type=Path), help="JSON report path (default: next to the model)."
)
def eval_command(
    model_path: Path,
    suite: str,
    attacks: tuple[str, ...],
    eps_text: str | None,
    norm: str | None,
    samples: int,
    seed: int,
    batch_size: int,
    data: str | None,
    data_path: str | None,
    sweep_text: str | None,
    checks: bool,
    square_queries: int,
    output: Path | None,
) -> None:
    """Evaluate MODEL (a run directory or an exported .safetensors file).

    Reports clean accuracy, robust accuracy under each attack and the per-sample worst
    case over all of them, on the same seeded test images; then the gradient-masking
    checks, each pass/fail with its numbers. Writes a JSON report with every setting.
    """
    from sat_toolkit.data import create_dataset
    from sat_toolkit.engine.evaluation import fixed_test_subset
    from sat_toolkit.evaluation import evaluate_robustness
    from sat_toolkit.evaluation.checks import run_checks
    from sat_toolkit.evaluation.suites import build_attacks, resolve_suite
    from sat_toolkit.evaluation.sweep import eps_sweep, parse_eps_list, plot_sweep
    from sat_toolkit.export import load_model, resolve_model_file
    from sat_toolkit.phase import true_gradients
    from sat_toolkit.recipe import parse_number

    if samples < 0 or batch_size < 1 or square_queries < 1:
        raise SatError("--samples must be >= 0, --batch-size and --square-queries >= 1")
    model_file = resolve_model_file(model_path)
    model = load_model(model_file)
    config = model.sat_config
    default_eps, default_norm = _default_eps(config) if eps_text is None else (None, "linf")
    eps = default_eps if eps_text is None else _parse_eps(eps_text, parse_number)
    norm = norm or default_norm
    sweep_values = parse_eps_list(sweep_text) if sweep_text else None
    specs = resolve_suite(suite if suite != "none" else None, attacks)
    attack_objects = build_attacks(specs, eps=eps, norm=norm, seed=seed)

    source = create_dataset(_dataset_spec(config, data, data_path))
    x, y = fixed_test_subset(source.load("test"), samples, seed)
    torch.manual_seed(seed)
    started = time.perf_counter()
    click.echo(f"evaluating {model_file} on {len(y)} test images, {norm} eps {eps:.6g}", err=True)
    report = evaluate_robustness(
        model, x, y, attack_objects, batch_size=batch_size, progress=_progress_printer()
    )
    result: dict[str, Any] = {
        "model": str(model_file),
        "architecture": config.get("model"),
        "activation": config.get("activation"),
        "dataset": _dataset_spec(config, data, data_path),
        "threat_model": {"linf": "Linf", "l2": "L2"}[norm],
        "eps": eps,
        "n_examples": len(y),
        "seed": seed,
        "suite": suite,
        "clean_acc": report.clean_accuracy,
        "robust_acc": report.robust_accuracy,
        "attacks": report.to_dict()["attacks"],
    }
    rows = [("clean", f"{report.clean_accuracy:.4f}", "", "")]
    for label, outcome in report.attacks.items():
        zero = "-" if outcome.zero_grad_fraction is None else f"{outcome.zero_grad_fraction:.4f}"
        rows.append((label, f"{outcome.robust_accuracy:.4f}", zero, f"{outcome.seconds:.1f}"))
    rows.append(("worst case", f"{report.robust_accuracy:.4f}", "", ""))
    click.echo(format_table(("attack", "accuracy", "zero-grad", "seconds"), rows))

    curve = None
    if sweep_values:
        sweep = eps_sweep(model, x, y, attack_objects, sweep_values, batch_size=batch_size)
        curve = {e: v["robust_accuracy"] for e, v in sweep.items()}
        result["sweep"] = [{"eps": e, **v} for e, v in sweep.items()]
        plot_path = _output_path(output, model_file, "sweep", suite, eps, len(y)).with_suffix(".png")
        plot_sweep(
            sweep, report.clean_accuracy, plot_path, f"{model_file.parent.name}: {suite} suite, {norm}"
        )
        result["sweep_plot"] = str(plot_path)
        click.echo(
            format_table(("eps", "robust accuracy"), [(f"{e:.6g}", f"{a:.4f}") for e, a in curve.items()])
        )
    if checks:
        num_classes = int(config["data_info"]["num_classes"])
        with true_gradients():  # the checks probe the function the model computes
            results = run_checks(
                model, x, y, report, attack_objects, eps=eps, norm=norm, num_classes=num_classes,
                seed=seed, batch_size=batch_size, sweep=curve, square_queries=square_queries,
            )  # fmt: skip
        result["checks"] = [c.to_dict() for c in results]
        click.echo(
            format_table(
                ("check", "result", "numbers"),
                [(c.name, "PASS" if c.passed else "FAIL", c.detail) for c in results],
            )
        )
        if not all(c.passed for c in results):
            click.echo("warning: some checks failed; the robust accuracy above may be overstated", err=True)
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["environment"] = {"torch": torch.__version__, "python": platform.python_version(), "device": "cpu"}
    path = _output_path(output, model_file, "eval", suite, eps, len(y))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    click.echo(f"report: {path}")


def _parse_eps(text: str, parse_number: Any) -> float:
    try:
        value = float(parse_number(text))
    except (TypeError, ValueError):
        raise SatError(f"--eps {text!r}: not a number or fraction such as 4/255") from None
    if value < 0:
        raise SatError(f"--eps must be >= 0, got {text}")
    return value


def _output_path(output: Path | None, model_file: Path, kind: str, suite: str, eps: float, n: int) -> Path:
    if output is not None:
        return output if kind == "eval" else output.with_name(output.stem + "-sweep.png")
    return model_file.parent / f"{kind}-{suite}-eps{eps:.4g}-n{n}.json"


def _progress_printer() -> Any:
    last: dict[str, int] = {}

    def report(label: str, done: int, total: int) -> None:
        if last.get(label) != done and (done == total or done - last.get(label, 0) >= max(total // 4, 1)):
            click.echo(f"  {label}: {done}/{total}", err=True)
            last[label] = done

    return report
