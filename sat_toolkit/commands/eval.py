"""``sat-toolkit eval``: credible robustness numbers for a trained model, ours or anyone's.

MODEL is a sat-toolkit run directory or export (the model rebuilds itself from the config
stored with its weights and knows its dataset and threat model), or, with ``--arch``, a
weights file of a timm architecture trained anywhere. Either way the evaluation itself is
:func:`sat_toolkit.evaluate`, the same as from Python.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from torch import nn

from sat_toolkit.commands.table import format_table
from sat_toolkit.errors import SatError
from sat_toolkit.evaluation.suites import DEFAULT_SUITE, suite_names
from sat_toolkit.parsing import loads_json
from sat_toolkit.recipe.rundir import MODEL_FILE, write_refused

#: What --eps takes, for the errors that ask for it.
EPS_HINT = "in [0, 1] pixels (L-inf: 8/255 is CIFAR's usual budget, 4/255 ImageNet's)"


@dataclasses.dataclass
class _LoadedModel:
    """The model to evaluate and what it says about itself (nothing, for foreign weights)."""

    model: nn.Module
    file: Path
    description: dict[str, Any]  # architecture, activation, ... for the report
    dataset: dict[str, Any] | None  # the dataset plugin spec it was trained on
    train_attack: dict[str, Any]  # its training attack (eps, norm), if recorded
    num_classes: int | None
    plugins: Any = None  # the model file's record of the plugins it was made with


@click.command("eval")
@click.argument("model_path", metavar="[MODEL]", type=click.Path(path_type=Path), required=False)
@click.option(
    "--suite",
    default=DEFAULT_SUITE,
    show_default=True,
    help=f"Attack suite: {suite_names()}, none (autoattack: AutoAttack's standard version; "
    "aa-core: its APGD-CE + APGD-T).",
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
@click.option(
    "--device", "device_name", help="cpu, cuda, cuda:1, mps, ... (default: the accelerator if there is one)."
)
@click.option(
    "--data",
    metavar="NAME[:k=v,...]",
    help="Dataset plugin and its parameters, e.g. hub:image_column=img,image_size=32,augmentation=crop_flip "
    "(default: the one the model was trained on).",
)
@click.option("--data-path", help="Dataset location, for plugins that read files.")
@click.option(
    "--arch",
    metavar="NAME[:k=v,...]",
    help="MODEL is a weights file of this timm architecture: resnet18, vit_tiny_patch16_224:img_size=32.",
)
@click.option(
    "--activation",
    metavar="NAME[:k=v,...]",
    help="With --arch: the activation the weights were trained with, swapped into the architecture as "
    "create_timm_model does (default: the architecture's own, e.g. ReLU for resnet18).",
)
@click.option(
    "--num-classes", type=click.IntRange(min=2), help="With --arch: classes (default: the dataset's)."
)
@click.option(
    "--mean", help="With --arch: the input normalisation's mean, per channel, e.g. 0.4914,0.4822,0.4465."
)
@click.option(
    "--std", help="With --arch: the input normalisation's std, per channel (--mean 0 --std 1: none)."
)
@click.option(
    "--sweep", "sweep_text", help="Comma-separated eps values for a robustness-vs-eps curve (PNG + JSON)."
)
@click.option(
    "--checks/--no-checks", default=True, show_default=True, help="Run the gradient-masking checks."
)
@click.option("--square-queries", default=1000, show_default=True, help="Query budget of the Square check.")
@click.option(
    "--cascade/--no-cascade",
    default=True,
    show_default=True,
    help="Each attack attacks only the images every earlier one failed on (AutoAttack's way: same worst "
    "case, less time; an attack's row is the accuracy after it). --no-cascade: every attack on every image.",
)
@click.option(
    "--output", type=click.Path(path_type=Path), help="JSON report path (default: next to the model)."
)
@click.option(
    "--compare",
    nargs=2,
    type=click.Path(path_type=Path),
    metavar="A.json B.json",
    help="Compare two reports of the same images image by image (paired difference); evaluates nothing.",
)
def eval_command(
    model_path: Path | None,
    suite: str,
    attacks: tuple[str, ...],
    eps_text: str | None,
    norm: str | None,
    samples: int,
    seed: int,
    batch_size: int,
    device_name: str | None,
    data: str | None,
    data_path: str | None,
    arch: str | None,
    activation: str | None,
    num_classes: int | None,
    mean: str | None,
    std: str | None,
    sweep_text: str | None,
    checks: bool,
    square_queries: int,
    cascade: bool,
    output: Path | None,
    compare: tuple[Path, Path] | None,
) -> None:
    """Evaluate MODEL: a run directory, an exported .safetensors file, or (with --arch) any weights file.

    Reports clean accuracy, robust accuracy under each attack and the per-sample worst
    case over all of them, on the same seeded test images; then the gradient-masking
    checks, each pass/fail (N/A where it has nothing to test) with its numbers. Writes a
    JSON report with every setting and each image's outcome; --compare A.json B.json pairs
    two such reports image by image.
    """
    if compare:
        if model_path is not None:
            raise SatError("--compare A.json B.json compares two reports; give no MODEL with it")
        _print_comparison(*compare)
        return
    if model_path is None:
        raise SatError(
            "give MODEL (a run directory or .safetensors file) to evaluate, or --compare A.json B.json"
        )
    from sat_toolkit.data import create_dataset
    from sat_toolkit.devices import resolve_device
    from sat_toolkit.engine.evaluation import fixed_test_subset
    from sat_toolkit.evaluation.evaluate import (
        check_budget,
        evaluate,
        images_fingerprint,
        refuse_attacks_beyond_classes,
        resolve_attacks,
    )
    from sat_toolkit.evaluation.suites import resolve_suite
    from sat_toolkit.evaluation.sweep import parse_eps_list, plot_sweep

    if samples < 0:
        raise SatError("--samples must be >= 0 (0 = the whole test split)")
    if arch is None and (num_classes is not None or mean is not None or std is not None):
        raise SatError("--num-classes, --mean and --std describe a foreign weights file; give --arch too")
    if arch is None and activation is not None:
        raise SatError(
            "--activation describes a foreign weights file (with --arch); a sat-toolkit model file "
            "records its own activation"
        )
    if output is not None:
        check_writable(output)
    chosen = resolve_suite(None if suite == "none" else suite, attacks)  # a misspelt suite fails first
    from sat_toolkit.plugins import get_plugin_host

    for spec in chosen.values():  # and so does a misspelt --attack name, before any loading
        get_plugin_host().get("attack", spec["name"])
    device = resolve_device(device_name)
    sweep_values = parse_eps_list(sweep_text) if sweep_text else None

    if arch is not None and data is None:
        raise SatError(
            "--arch: say which dataset to evaluate on with --data NAME (e.g. --data fashion_mnist)"
        )
    if arch is not None and eps_text is None:
        raise SatError(
            f"--arch: a weights file does not say which eps it was trained for; pass --eps, {EPS_HINT}"
        )
    with _data_option_hints(data):  # a dataset's "set image_column" means --data NAME:image_column= here
        if arch is None:
            loaded = _load_sat_model(model_path)
            dataset_spec = _dataset_spec(loaded.dataset, data, data_path)
            source = _recorded_dataset(dataset_spec, None if data else loaded.plugins)
            _check_served_data(source.info(), loaded.model.sat_config["data_info"])
        else:
            dataset_spec = _dataset_spec(None, data, data_path)
            source = create_dataset(dataset_spec)
            loaded = _load_foreign_model(model_path, arch, activation, source.info(), num_classes, mean, std)
        eps, norm = _threat_model(loaded.train_attack, eps_text, norm)
        if eps_text is not None:
            check_budget(eps, norm, tuple(source.info().input_shape), "--eps")  # before the announcement
        test_split = source.load("test")
        if arch is not None:  # weights from elsewhere: how the pipeline serves its images is news
            _note_resized(test_split, source, dataset_spec)
        x, y = fixed_test_subset(test_split, samples, seed)
    # Every attack built once here, as evaluate() will: a bad parameter or an attack that needs
    # more classes than the model has stops before the announcement, in one line.
    planned = resolve_attacks(
        None if suite == "none" else suite, list(attacks), eps=eps, norm=norm, seed=seed
    )
    if loaded.num_classes is not None:
        refuse_attacks_beyond_classes(
            planned, loaded.num_classes, "leave it out (e.g. --suite none --attack apgd_ce)"
        )
    given = {"arch": arch, "activation": activation, "num_classes": num_classes, "mean": mean, "std": std}
    reading = {key: value for key, value in given.items() if value is not None}
    if data is not None or data_path is not None:
        reading["images"] = images_fingerprint(x, y)
    path = _output_path(output, loaded.file, suite, attacks, norm, eps, len(y), seed, reading)
    check_writable(path)  # before the evaluation, which can take hours: its results are never lost
    if sweep_values:
        check_writable(_sweep_plot_path(path), "the --sweep plot beside the report,", plot=True)
    if arch is not None and activation is None:  # nothing in the weights tells activations apart
        click.echo(
            f"note: --arch {arch} is built with its own activations; weights trained with another "
            "(create_timm_model's) need --activation NAME",
            err=True,
        )
    click.echo(
        f"evaluating {loaded.file} on {len(y)} test images, {norm} eps {eps:.6g}, on {device}", err=True
    )
    evaluation = evaluate(
        loaded.model, x, y, eps=eps, norm=norm, suite=suite, attacks=attacks,
        checks=checks, seed=seed, batch_size=batch_size, device=device, num_classes=loaded.num_classes,
        sweep=sweep_values, square_queries=square_queries, return_examples=False, cascade=cascade,
        progress=_progress_printer(), on_estimate=_estimate_printer(cascade, checks),
    )  # fmt: skip
    report = evaluation.report
    rows = [("clean", f"{report.clean_accuracy:.4f}", f"{len(y)}", "", "")]
    for label, outcome in report.attacks.items():
        zero = "-" if outcome.zero_grad_fraction is None else f"{outcome.zero_grad_fraction:.4f}"
        shown = f"after {label}" if report.cascade else label
        rows.append(
            (shown, f"{outcome.robust_accuracy:.4f}", f"{outcome.attacked}", zero, f"{outcome.seconds:.1f}")
        )
    rows.append(("worst case", f"{report.robust_accuracy:.4f}", "", "", ""))
    click.echo(format_table(("attack", "accuracy", "attacked", "zero-grad", "seconds"), rows))

    result: dict[str, Any] = {"model": str(loaded.file), **loaded.description, "dataset": dataset_spec}
    result["input_shape"] = list(source.info().input_shape)  # the images as served: C x H x W
    result.update(evaluation.to_dict())
    result["plugins"] = _with_dataset(result["plugins"], dataset_spec)
    if evaluation.sweep:
        plot_path = _sweep_plot_path(path)
        plot_sweep(
            evaluation.sweep,
            report.clean_accuracy,
            plot_path,
            f"{loaded.file.parent.name}: {suite} suite, {norm}",
        )
        result["sweep_plot"] = str(plot_path)
        curve = [(f"{e:.6g}", f"{v['robust_accuracy']:.4f}") for e, v in evaluation.sweep.items()]
        click.echo(format_table(("eps", "robust accuracy"), curve))
    if evaluation.checks:
        click.echo(
            format_table(
                ("check", "result", "numbers"),
                [(c.name, c.verdict, c.detail) for c in evaluation.checks],
            )
        )
        with_checks = evaluation.robust_accuracy_with_checks
        if with_checks is not None and with_checks < report.robust_accuracy:
            broken = round((report.robust_accuracy - with_checks) * len(y))
            click.echo(
                f"worst case counting the checks' own attacks: {with_checks:.4f} ({broken} more image"
                f"{'' if broken == 1 else 's'} broken; robust_acc is the evaluation's attacks', as "
                "AutoAttack reports it; the report's robust_acc_with_checks is this one)"
            )
        if not evaluation.passed_checks:
            click.echo("warning: some checks failed; the robust accuracy above may be overstated", err=True)
    _write_report(path, json.dumps(result, indent=2, default=str) + "\n")
    click.echo(f"report: {path}")


def _sweep_plot_path(report: Path) -> Path:
    return report.with_name(report.stem + "-sweep.png")


def _write_report(path: Path, text: str) -> None:
    """Write the report; where that fails after all, keep it in the temp directory and say where.

    The location was checked before the evaluation, but a file system can still refuse
    (a full disk, a pseudo-file system): the evaluation's result is not thrown away.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        with tempfile.NamedTemporaryFile(
            "w", suffix=".json", prefix="sat-eval-", delete=False, encoding="utf-8"
        ) as kept:
            kept.write(text)
        raise SatError(
            f"--output {path}: could not write the report ({error.strerror or error}); "
            f"it is saved in {kept.name}"
        ) from None


def _print_comparison(path_a: Path, path_b: Path) -> None:
    """The paired difference B - A of two reports of the same images, clean and robust."""
    from sat_toolkit.evaluation.compare import compare_reports, read_report

    comparison = compare_reports(read_report(path_a), read_report(path_b))
    click.echo(f"A: {path_a}\nB: {path_b}")
    for note in comparison.notes:
        click.echo(f"note: {note}", err=True)
    rows = []
    for metric in (comparison.clean, comparison.robust):
        low, high = metric.interval
        rows.append((
            metric.name, f"{metric.a / metric.n:.4f}", f"{metric.b / metric.n:.4f}",
            f"{100 * metric.difference:+.2f}", f"[{100 * low:+.2f}, {100 * high:+.2f}]",
            f"{metric.only_a}", f"{metric.only_b}", f"{metric.p_value:.3g}",
        ))  # fmt: skip
    headers = ("accuracy", "A", "B", "B - A (points)", "95% CI", "only A", "only B", "McNemar p")
    click.echo(format_table(headers, rows))
    robust = comparison.robust
    verdict = "beyond chance" if robust.p_value < 0.05 else "within chance"
    click.echo(
        f"{robust.n} paired images; robust difference {100 * robust.difference:+.2f} points is {verdict} "
        f"(p = {robust.p_value:.3g}; only the {robust.only_a + robust.only_b} discordant images count)"
    )


def _with_dataset(plugins: list[dict[str, Any]], dataset_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluation's plugins plus the dataset plugin the test images came from."""
    from sat_toolkit.plugins.provenance import describe_plugins, merge_plugins

    return merge_plugins(plugins, describe_plugins([("dataset", dataset_spec["name"])]))


def _load_sat_model(model_path: Path) -> _LoadedModel:
    from sat_toolkit.export import load_model, resolve_model_file

    model_file = resolve_model_file(model_path)
    model = load_model(model_file)
    config = model.sat_config
    return _LoadedModel(
        model=model,
        file=model_file,
        description={
            "architecture": config.get("model"),
            "activation": config.get("activation"),
            "normalization": {key: config["data_info"][key] for key in ("mean", "std")},
        },
        dataset=config.get("dataset"),
        train_attack=dict(config.get("train_attack") or {}),
        num_classes=int(config["data_info"]["num_classes"]),
        plugins=config.get("plugins"),
    )


def _load_foreign_model(
    weights: Path,
    arch: str,
    activation: str | None,
    info: Any,
    num_classes: int | None,
    mean: str | None,
    std: str | None,
) -> _LoadedModel:
    from sat_toolkit.models.external import build_timm_model, check_forward, load_weights, read_state_dict

    if mean is None or std is None:
        raise SatError(
            "--arch: give the normalisation your weights were trained with, --mean and --std per channel "
            "(--mean 0 --std 1 if the model normalises nothing)"
        )
    architecture, arch_kwargs = _arch_option(arch)
    if "act_layer" in arch_kwargs:
        raise SatError(f"--arch {arch}: give the activation with --activation NAME, not act_layer")
    act = None
    if activation is not None:
        from sat_toolkit.evaluation.suites import parse_plugin_option

        act = parse_plugin_option(activation, "--activation", "parametric_softplus:alpha=10")[1]
    if num_classes is not None and num_classes < info.num_classes:
        raise SatError(
            f"--num-classes {num_classes}: the dataset's labels run to {info.num_classes - 1}, beyond the "
            f"model's outputs; give --num-classes {info.num_classes}, or the dataset the weights were "
            "trained on"
        )
    classes = num_classes or info.num_classes
    if classes > info.num_classes:
        click.echo(
            f"note: the model has {classes} outputs and the dataset {info.num_classes} classes: its labels "
            f"0..{info.num_classes - 1} are read as the model's first {info.num_classes} classes, and a "
            "prediction of any other counts as wrong",
            err=True,
        )
    model = build_timm_model(
        architecture, arch_kwargs, num_classes=classes, channels=info.channels,
        mean=_numbers(mean, "--mean"), std=_numbers(std, "--std"), activation=act,
    )  # fmt: skip
    check_forward(model, architecture, info.input_shape)
    load_weights(model.body, read_state_dict(weights), str(weights))
    description = {
        "architecture": {"name": "timm", "architecture": architecture, **arch_kwargs},
        "weights": str(weights),
        "activation": act,  # None: the architecture's own
        "normalization": model.normalization,
    }
    return _LoadedModel(model.eval(), weights, description, None, {}, classes)


def _arch_option(text: str) -> tuple[str, dict[str, Any]]:
    """``"vit_tiny_patch16_224:img_size=32"`` -> ``("vit_tiny_patch16_224", {"img_size": 32})``."""
    from sat_toolkit.evaluation.suites import parse_plugin_option

    _, spec = parse_plugin_option(text, "--arch", "resnet18:drop_rate=0.1")
    name = spec.pop("name")
    return name, spec


def _numbers(text: str, option: str) -> list[float]:
    from sat_toolkit.recipe import parse_number

    try:
        return [float(parse_number(part.strip())) for part in text.split(",")]
    except (TypeError, ValueError):
        raise SatError(
            f"{option} {text!r}: give comma-separated numbers, e.g. {option} 0.5,0.5,0.5"
        ) from None


def _recorded_dataset(spec: dict[str, Any], recorded_plugins: Any) -> Any:
    """The dataset a model file names, or what to install where its plugin is missing."""
    from sat_toolkit.data import create_dataset
    from sat_toolkit.errors import PluginLoadError, UnknownPluginError
    from sat_toolkit.plugins.provenance import missing_plugin_message

    try:
        return create_dataset(spec)
    except (UnknownPluginError, PluginLoadError):
        entries = [e for e in recorded_plugins or [] if isinstance(e, dict) and e.get("kind") == "dataset"]
        missing = missing_plugin_message(entries)
        if missing is None:
            raise
        raise SatError(f"evaluating on the model's own data {missing} (or pass --data NAME)") from None


def _dataset_spec(
    trained_on: dict[str, Any] | None, data: str | None, data_path: str | None
) -> dict[str, Any]:
    if data is not None:
        from sat_toolkit.evaluation.suites import parse_plugin_option

        spec: dict[str, Any] = parse_plugin_option(data, "--data", "hub:image_column=img,image_size=32")[1]
        statistics = [key for key in ("mean", "std") if key in spec]
        if statistics:  # the dataset's statistics reach a model only when it is built, for training
            raise SatError(
                f"--data: {statistics[0]} does not change an evaluation: the model applies the normalisation "
                "it was trained with (its file records it; weights for --arch take --mean and --std); "
                "leave it out"
            )
        if trained_on is not None and trained_on.get("name") == spec.get("name"):
            # The same dataset: --data changes what it names and keeps the rest the model was
            # trained with (its image size, augmentation), which the plugin's defaults are not.
            spec = {**trained_on, **spec}
    elif trained_on is not None:
        spec = dict(trained_on)
        recorded = spec.get("path")
        moved = isinstance(recorded, str) and recorded and not Path(recorded).expanduser().exists()
        if data_path is None and moved:
            where = (
                "which is not on this machine"
                if Path(recorded).expanduser().is_absolute()
                else f"a path relative to where the run was started, not found from {Path.cwd()}"
            )
            raise SatError(
                f"the model was trained on {spec.get('name', 'its')} data in '{recorded}', {where}; "
                "pass --data-path DIR, the folder of that dataset here"
            )
    else:
        raise SatError("this model file does not say which dataset it was trained on; pass --data NAME")
    if data_path is not None:
        spec["path"] = data_path
    return spec


def _check_served_data(served: Any, trained: dict[str, Any]) -> None:
    """The images and classes the dataset serves must be those the model was trained on: a
    32 px CIFAR model scored on 224 px crops gives numbers that look normal and mean nothing,
    and a CIFAR-10 model's ten outputs say nothing about CIFAR-100's labels."""
    from sat_toolkit.data.info import DatasetInfo

    recorded = DatasetInfo.from_dict(trained)
    want = tuple(recorded.input_shape)
    got = tuple(served.input_shape)
    if got != want:
        raise SatError(
            f"the dataset serves {'x'.join(map(str, got))} images but the model was trained on "
            f"{'x'.join(map(str, want))} (its file records them); give --data the dataset's "
            f"image_size and channels (e.g. --data NAME:image_size={want[1]},channels={want[0]})"
        )
    if served.num_classes != recorded.num_classes:
        raise SatError(
            f"the dataset has {served.num_classes} classes but the model was trained on "
            f"{recorded.num_classes} (its file records them); evaluate it on the dataset it was trained "
            "on (with hub data, check --data's label_column)"
        )


def _threat_model(train_attack: dict[str, Any], eps_text: str | None, norm: str | None) -> tuple[float, str]:
    """eps and norm: the options where given, else the training attack's.

    ``--eps`` alone keeps the model's norm: an L2 model is never silently scored under L-inf.
    """
    from sat_toolkit.attacks.projections import PROJECTIONS

    trained = str(train_attack.get("norm", "linf"))
    if norm is None and trained not in PROJECTIONS:
        raise SatError(
            f"the model file records training norm {trained!r}, which no attack here knows "
            f"({', '.join(PROJECTIONS.names())}); pass --norm and --eps"
        )
    if eps_text is not None:
        return _parse_eps(eps_text), norm or trained
    if "eps" not in train_attack:
        raise SatError(f"the model file does not record its training eps; pass --eps, {EPS_HINT}")
    # A hand-edited file's budget was blamed on the first attack ("attack 'apgd_ce': eps must be >= 0").
    recorded = train_attack["eps"]
    if isinstance(recorded, bool) or not isinstance(recorded, (int, float)) or not 0 <= recorded < math.inf:
        raise SatError(
            f"the model file records training eps {recorded!r}, which is no budget to attack with; "
            f"pass --eps, {EPS_HINT}"
        )
    if norm is not None and norm != trained:
        raise SatError(
            f"--norm {norm}: the model was trained under {trained}, so its training eps "
            f"({float(train_attack['eps']):.6g}) is no {norm} budget; pass --eps too"
        )
    return float(train_attack["eps"]), trained


def _parse_eps(text: str) -> float:
    from sat_toolkit.recipe import parse_number

    try:
        value = float(parse_number(text))
    except (TypeError, ValueError):
        raise SatError(f"--eps {text!r}: not a number or fraction such as 4/255") from None
    if value < 0:
        raise SatError(f"--eps must be >= 0, got {text}")
    return value


#: The first bytes of every PNG file: what an earlier plot starts with.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Keys every evaluation report has; a JSON file without them is someone else's.
REPORT_KEYS = ("threat_model", "clean_acc", "robust_acc")


def check_writable(output: Path, option: str = "--output", *, plot: bool = False) -> None:
    """Refuse an unusable output file before the (long) work, not after it.

    An existing file is replaced only when it is this option's own kind of output from an
    earlier call (a report, a PNG): anything else, the weights being evaluated above all,
    is left as it is. A symbolic link is refused, since writing would follow it elsewhere.
    """
    if output.is_symlink():
        raise SatError(f"{option} {output}: is a symbolic link; give the path of a plain file")
    if output.is_file() and not _earlier_output(output, plot):
        what = "PNG plot" if plot else "evaluation report"
        raise SatError(
            f"{option} {output}: exists and is not an earlier {what}, so it is left as it is; "
            "give another file name, or delete it"
        )
    if output.is_dir():
        example = output / ("plot.png" if plot else "report.json")
        raise SatError(f"{option} {output}: is a directory; give a file name such as {example}")
    parent = output.parent if str(output.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir() or write_refused(existing) is not None:
        raise SatError(f"{option} {output}: cannot write there ({existing} is not a writable directory)")


def _earlier_output(path: Path, plot: bool) -> bool:
    """Whether ``path`` holds what an earlier eval or plot wrote there (a PNG, a report)."""
    try:
        if plot:
            with path.open("rb") as handle:
                return handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
        if path.stat().st_size > 512 * 2**20:  # reports are kilobytes to megabytes
            return False
        report = loads_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON (JSONDecodeError is a ValueError)
        return False
    return isinstance(report, dict) and all(key in report for key in REPORT_KEYS)


@contextlib.contextmanager
def _data_option_hints(data: str | None) -> Iterator[None]:
    """Say where eval takes the key a dataset's error asks to set.

    A dataset plugin words its errors for a recipe ("... set image_column"); on the command
    line that key goes into ``--data NAME:key=value`` (the folder into ``--data-path``),
    which the error then spells out with the user's own ``--data``.
    """
    try:
        yield
    except SatError as exc:
        hint = _data_option_for(exc.message, data)
        if hint is None:
            raise
        raise SatError(f"{exc.message} ({hint})") from None


def _data_option_for(message: str, data: str | None) -> str | None:
    from sat_toolkit.data.hints import asked_dataset_key

    asked = asked_dataset_key(message)
    if asked is None:
        return None
    name, key = asked
    if key == "path":
        return "with eval: --data-path DIR"
    mine = data is not None and data.partition(":")[0].strip() == name
    pairs = [p.strip() for p in data.partition(":")[2].split(",") if p.strip()] if mine else []
    kept = [p for p in pairs if p.partition("=")[0].strip() != key]
    return f"with eval: --data {name}:" + ",".join([*kept, f"{key}=..."])


def _note_resized(test_split: Any, source: Any, spec: dict[str, Any]) -> None:
    """Say how a decoding dataset changes the test images before the model sees them.

    Weights from elsewhere carry no image size or pipeline, and hub/imagefolder default to
    224 px through the ImageNet evaluation (resize, then a centre crop that cuts 1/16 of
    each side): a CIFAR copy is upscaled 7x, and 28 px images at ``image_size=28`` still
    lose their borders, so the number describes other inputs than the weights were trained
    on. The pipeline is the user's choice, so this only says so, with how to serve the
    images whole.
    """
    from sat_toolkit.data.transforms import CROP_FRACTION, Augmentation, DecodedImageDataset, eval_resize_size

    if not isinstance(test_split, DecodedImageDataset) or not len(test_split):
        return
    augmentation = getattr(source, "augmentation", None)  # what the dataset resolved from --data
    if not isinstance(augmentation, Augmentation) or augmentation.name != "imagenet":
        return  # crop_flip and none serve the images as they are (or refuse another size)
    width, height = test_split.load_image(0).size
    side = augmentation.image_size
    default = "" if "image_size" in spec else f" (dataset '{spec.get('name')}' defaults to image_size={side})"
    cut = (1 - CROP_FRACTION) / 2
    whole = (
        f"; to evaluate them whole at their own size, add image_size={width},augmentation=none to --data"
        if width == height
        else ""  # augmentation=none serves square images only
    )
    click.echo(
        f"note: the test images are {width}x{height}, served as augmentation=imagenet's evaluation does: "
        f"resized to a short side of {eval_resize_size(side)} and centre-cropped to {side}x{side}, "
        f"which cuts {cut:.2%} of each side{default}{whole}",
        err=True,
    )


def _output_path(
    output: Path | None,
    model_file: Path,
    suite: str,
    attacks: tuple[str, ...],
    norm: str,
    eps: float,
    n: int,
    seed: int,
    reading: dict[str, Any],
) -> Path:
    """``--output``, else a name next to the model that differs whenever the evaluation does.

    ``reading`` is what the command line changed about the data or how the weights are read
    (--data/--data-path as the evaluated images' fingerprint, --arch, --activation,
    --num-classes, --mean, --std): a digest of it ends the name, so evaluating the same
    weights on other images or with other statistics writes a report beside the first
    instead of replacing it.
    """
    if output is not None:
        return output
    from sat_toolkit.evaluation.suites import parse_attack_option

    # A run directory's model needs no name; any other file is named, so two weights files in
    # one folder never share a report.
    stem = "" if model_file.name == MODEL_FILE else model_file.name.replace(".", "_") + "-"
    what = "+".join([suite, *(parse_attack_option(text)[0] for text in attacks)])
    digest = ""
    if reading:
        text = json.dumps(reading, sort_keys=True, default=str)
        digest = "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return model_file.parent / f"eval-{stem}{what}-{norm}-eps{eps:.4g}-n{n}-seed{seed}{digest}.json"


def _estimate_printer(cascade: bool, checks: bool) -> Any:
    def report(estimate: Any) -> None:
        extra = (
            "; the masking checks come on top (the first attack at eps/2 and 2 eps and with 2x steps, "
            "and a Square run on every image unless the suite has one: more than a cheap suite itself; "
            "--no-checks skips them)"
            if checks
            else ""
        )
        click.echo(f"  {estimate.describe(cascade)}{extra}", err=True)

    return report


def _progress_printer() -> Any:
    last: dict[str, int] = {}

    def report(label: str, done: int, total: int) -> None:
        if (
            done
            and last.get(label) != done
            and (done == total or done - last.get(label, 0) >= max(total // 4, 1))
        ):
            click.echo(f"  {label}: {done}/{total}", err=True)
            last[label] = done

    return report
