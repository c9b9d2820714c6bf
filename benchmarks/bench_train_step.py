"""What does the training engine cost on top of a hand-written adversarial training step?

Run by hand (not a test): ``python benchmarks/bench_train_step.py`` (about 2 minutes on 2
idle cores). It measures, in one process, one SAT training step (PGD-1 with a uniform
random start and step = eps = 0.1, then an SGD update; batch 128 of 1x28x28 Fashion-MNIST
images) on the same model, two ways:

(a) **the real engine**: :func:`sat_toolkit.engine.trainer.train` itself, stopped with
    ``stop_after_steps``. The trainer calls ``bar.update(1)`` once per optimiser step; the
    benchmark wraps the (disabled) progress bar so that each call also reads the meters.
    From one call to the next is one step of the real loop: data loading, per-step
    seeding, lr/eps schedules, the attack plugin, ``accelerator.accumulate`` /
    ``backward`` / ``reduce``, the optimiser step, the metrics window and the
    checkpoint/stop checks. As a cross-check the *difference method* gives (wall time of
    ``train()`` for N2 steps - for N1 steps) / (N2 - N1), which removes the fixed set-up
    cost (Accelerator, model, optimiser, run directory).

(b) **a minimal hand-written step**: the same architecture with the same initial weights
    (seeded as the engine seeds), a fixed batch of the same data, hand-written PGD-1 (random
    start, one signed-gradient step, projection onto the eps-ball and [0, 1], BatchNorm in
    eval mode for the attack), cross-entropy, ``loss.backward()``, ``opt.step()``.

The machine may be shared, so (a) and (b) are interleaved step by step: inside the
wrapped ``bar.update`` one hand-written step runs (measured on its own and excluded from
the engine's intervals and wall time), so every engine step has a hand-written step next
to it under the same load. Meters:

* **wall** (``perf_counter``): what a run takes. Other processes slow single steps down
  several-fold in bursts (2 OpenMP threads on 2 shared cores wait for each other), so
  medians are over the *quiet* pairs: both steps within ``--quiet-factor`` x the fastest
  of their kind.
* **cpu** (``process_time``, all threads of the process): the work done; little affected
  by sharing with one thread (with two, OpenMP's spin-waiting counts too).
* **faults**: minor page faults per step (``getrusage``). glibc's malloc hands large
  freed blocks back to the kernel, so every step faults its activations in afresh, which
  is slow in a VM. ``--malloc`` measures with glibc's defaults (``default``), with
  ``mallopt`` keeping freed memory in the heap (``tuned``: M_MMAP_THRESHOLD and
  M_TRIM_THRESHOLD = 1 GiB, what ``MALLOC_MMAP_THRESHOLD_=1073741824
  MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment does), or ``both`` (default
  first: tuning cannot be undone in the process).

Engine overhead = median over pairs of (a)/(b) - 1; the goal is at most 3%. SiLU/ReLU is
the ratio of the engine's median step times; activations run in ABBA order (relu, silu,
silu, relu, ...) so a linear drift in load cancels.

**Settings** (``--settings``, each applied to both (a) and (b), so the overhead compares
like with like): ``fp32`` (full precision, contiguous), ``bf16`` (the recipe's
``optimizer.mixed_precision = "bf16"``: autocast for the training forward and, since the
training attack follows it, for the attack's forward too; the hand-written step wraps both
forwards in ``torch.autocast("cpu", torch.bfloat16)``), ``bf16_cl`` (bf16 plus
``train.channels_last``: weights and batches in channels_last memory format),
``bf16_cl_compile`` (bf16_cl plus ``train.compile``: the training step and the training
attack call ``torch.compile(model)``; the hand-written step compiles its model the same
way). torch's compile cache is reset before every ``train()`` run, so each run compiles
its own model in its first step (a warm-up step, not measured) instead of running into
dynamo's recompile limit and falling back to eager. The speedup
line compares the engine's fastest setting with the hand-written *fp32* step of the same
model, activation and threads, measured in the same run (goal: >= 2x on a CPU with bf16
support, e.g. AVX512-BF16 or AMX).

Nothing in the engine is replaced except ``_build_data``, which returns a dataset loaded
once for the whole benchmark instead of re-reading the IDX files in every ``train()``
(set-up only; random tensors when Fashion-MNIST is not installed). Not timed: the metrics
flush (one extra clean forward every ``train.log_every_steps`` steps) and checkpoints.

Writes ``benchmarks/results/train_step_cpu.json`` and ``.md`` (``--out-dir`` to change).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import accelerate
import torch
import torch.nn.functional as F

from sat_toolkit.data import TensorImageDataset, create_dataset
from sat_toolkit.engine import trainer
from sat_toolkit.errors import SatError
from sat_toolkit.models import create_model
from sat_toolkit.recipe import load_recipe
from sat_toolkit.study.ledger import cpu_model

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

GOAL = 0.03
SPEEDUP_GOAL = 2.0
SETTINGS: dict[str, dict[str, Any]] = {
    "fp32": {"bf16": False, "channels_last": False, "compile": False},
    "bf16": {"bf16": True, "channels_last": False, "compile": False},
    "bf16_cl": {"bf16": True, "channels_last": True, "compile": False},
    "bf16_cl_compile": {"bf16": True, "channels_last": True, "compile": True},
}
MIN_QUIET = 4
EPS = 0.1
BATCH = 128
SEED = 0
LR = 0.05
MODELS: dict[str, dict[str, Any]] = {
    "small_cnn": {"name": "small_cnn"},  # default width 32
    "preact_resnet18": {"name": "preact_resnet18", "width": 16},
}
RESULTS = Path(__file__).resolve().parent / "results"
METERS = ("wall", "cpu", "faults")
Reading = tuple[float, float, float]  # wall s, cpu s, minor page faults


def meters() -> Reading:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource is not None else 0
    return time.perf_counter(), time.process_time(), float(faults)


def elapsed(start: Reading, end: Reading) -> Reading:
    return end[0] - start[0], end[1] - start[1], end[2] - start[2]


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap (no munmap/trim, so no page faults on reuse)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


# -- environment ---------------------------------------------------------------------------
def hardware() -> dict[str, Any]:
    cpu = cpu_model()
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
        "libc": " ".join(platform.libc_ver()),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# -- data ----------------------------------------------------------------------------------
class _RandomFashion:
    """Fashion-MNIST-shaped random images, for machines without the dataset."""

    def __init__(self) -> None:
        from sat_toolkit.data.fashion_mnist import FashionMNIST

        self._info = FashionMNIST().info()
        g = torch.Generator().manual_seed(SEED)
        self._splits = {
            split: TensorImageDataset(
                torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
            )
            for split, n in (("train", 60 * BATCH), ("test", 2 * BATCH))
        }

    def info(self) -> Any:
        return self._info

    def load(self, split: str) -> TensorImageDataset:
        return self._splits[split]


def load_source() -> tuple[Any, str]:
    try:
        source = create_dataset({"name": "fashion_mnist", "hub": False})
        source.load("train"), source.load("test")
        return source, "fashion_mnist (real data)"
    except SatError:
        return _RandomFashion(), "random 1x28x28 tensors (Fashion-MNIST not installed)"


# -- (b) a minimal hand-written step -------------------------------------------------------
class HandWritten:
    """The step people write by hand, on a model initialised exactly as the engine's."""

    def __init__(self, source: Any, model_spec: dict[str, Any], activation: str, setting: str) -> None:
        torch.manual_seed(SEED)  # what the engine's set_seed(run.seed) does before create_model
        self.model = create_model(model_spec, source.info(), activation)
        self.bf16 = SETTINGS[setting]["bf16"]
        channels_last = SETTINGS[setting]["channels_last"]
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.compiled = torch.compile(self.model) if SETTINGS[setting]["compile"] else self.model
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
        train = source.load("train")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SEED))[:BATCH]
        self.x, self.y = train[order]
        if channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.compiled(x)

    def step(self) -> Reading:
        model, opt, x, y = self.model, self.opt, self.x, self.y
        start = meters()
        model.eval()  # BatchNorm on running statistics while attacking (the engine's bn_mode="eval")
        x_adv = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp_(0.0, 1.0).requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(self.forward(x_adv).float(), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + EPS * grad.sign(), x - EPS), x + EPS).clamp_(0.0, 1.0)
        model.train()
        loss = F.cross_entropy(self.forward(x_adv).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return elapsed(start, meters())


# -- (a) the real engine -------------------------------------------------------------------
class _StampingBar:
    """The trainer's progress bar; each ``update`` (one per optimiser step) reads the meters.

    ``between`` (if given) runs right after the reading, and the meters are read again when
    it returns, so what it costs belongs to neither neighbouring engine step.
    """

    def __init__(self, bar: Any, between: Callable[[], None] | None) -> None:
        self._bar = bar
        self._between = between
        self.ends: list[Reading] = []
        self.resumes: list[Reading] = []

    def update(self, n: int = 1) -> Any:
        result = self._bar.update(n)
        self.ends.append(meters())
        if self._between is not None:
            self._between()
        self.resumes.append(meters())
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)

    def __enter__(self) -> _StampingBar:  # the trainer opens its bar with `with`
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self._bar.__exit__(*exc)

    def intervals(self) -> list[Reading]:
        """The engine's steps 2, 3, ... (the first step has no start reading)."""
        return [elapsed(resume, end) for resume, end in zip(self.resumes, self.ends[1:], strict=False)]

    def paused(self) -> float:
        """Wall seconds spent in ``between``."""
        return sum(resume[0] - end[0] for end, resume in zip(self.ends, self.resumes, strict=True))


def engine_recipe(model: dict[str, Any], activation: str, setting: str, output_dir: Path) -> dict[str, Any]:
    bf16, channels_last = SETTINGS[setting]["bf16"], SETTINGS[setting]["channels_last"]
    compile_model = SETTINGS[setting]["compile"]
    return {
        "run": {"name": "bench", "seed": SEED, "output_dir": str(output_dir)},
        "data": {"name": "fashion_mnist", "batch_size": BATCH},
        "model": model,
        "activation": activation,
        "attack": {
            "train": {
                "name": "pgd",
                "eps": EPS,
                "steps": 1,
                "rel_step_size": 1.0,
                "random_start_fraction": 1.0,
            },
            "eval": {"samples": 1},
        },
        "optimizer": {
            "name": "sgd",
            "lr": LR,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 5e-4,
            "mixed_precision": "bf16" if bf16 else "no",  # the training attack follows it
        },
        "schedule": {"lr": {"name": "cosine", "warmup_fraction": 0.05}},
        "train": {
            "epochs": 1,
            "validate_every_epochs": 0,
            "log_every_steps": 10_000,
            "channels_last": channels_last,
            "compile": compile_model,
        },
        "checkpoint": {"every_steps": 0, "keep_last": 1},
        "logging": {"tensorboard": False},
    }


def run_engine(
    recipe_dict: dict[str, Any], steps: int, between: Callable[[], None] | None = None
) -> tuple[float, _StampingBar]:
    """(engine wall seconds of ``train()`` stopped after ``steps``, the stamping bar)."""
    recipe = load_recipe(recipe_dict)
    original = trainer.progress_bar
    bars: list[_StampingBar] = []

    def stamping_bar(*args: Any, **kwargs: Any) -> _StampingBar:
        bars.append(_StampingBar(original(*args, **kwargs), between))
        return bars[-1]

    trainer.progress_bar = stamping_bar
    try:
        start = time.perf_counter()
        trainer.train(recipe, show_progress=False, stop_after_steps=steps)
        wall = time.perf_counter() - start
    finally:
        trainer.progress_bar = original
    (bar,) = bars
    if len(bar.ends) != steps:
        raise RuntimeError(f"expected {steps} optimiser steps, the trainer made {len(bar.ends)}")
    return wall - bar.paused(), bar


# -- the measurement -----------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values)


def abba(activations: list[str], repeats: int) -> list[str]:
    """relu, silu, silu, relu, relu, silu, ...: each activation ``repeats`` times."""
    order: list[str] = []
    for rep in range(repeats):
        order.extend(activations if rep % 2 == 0 else reversed(activations))
    return order


def measure(
    label: str, setting: str, source: Any, activations: list[str], args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """One model in one setting: every activation, ``args.repeats`` runs each."""
    spec = MODELS[label]
    n2 = 1 + args.warmup + args.steps  # steps of a paired engine run
    n1 = 1 + args.warmup  # the short run of the difference method
    records: dict[str, dict[str, list[Any]]] = {
        act: {"engine": [], "hand": [], "difference": []} for act in activations
    }
    references = {act: HandWritten(source, spec, act, setting) for act in activations}
    for run, act in enumerate(abba(activations, args.repeats)):
        record, reference = records[act], references[act]
        hand_readings: list[Reading] = []

        def between(reference: HandWritten = reference, readings: list[Reading] = hand_readings) -> None:
            readings.append(reference.step())

        if SETTINGS[setting]["compile"]:
            torch._dynamo.reset()  # the engine's and the hand-written model compile afresh in step 1
        wall_n2, bar = run_engine(engine_recipe(spec, act, setting, workdir / f"run{run}"), n2, between)
        engine = bar.intervals()[args.warmup :]
        hand = hand_readings[1 + args.warmup :]  # the one right after engine step k pairs with step k
        record["engine"].extend(engine)
        record["hand"].extend(hand)
        if not args.no_difference:
            if SETTINGS[setting]["compile"]:
                torch._dynamo.reset()
            wall_n1, _ = run_engine(engine_recipe(spec, act, setting, workdir / f"run{run}-short"), n1)
            record["difference"].append((wall_n2 - wall_n1) / (n2 - n1))
        wall_ratio = median([e[0] / h[0] for e, h in zip(engine, hand, strict=True)]) - 1
        cpu_ratio = median([e[1] / h[1] for e, h in zip(engine, hand, strict=True)]) - 1
        print(
            f"  run {run + 1} {act:<5} engine {median([e[0] for e in engine]):.3f} s/step, hand-written "
            f"{median([h[0] for h in hand]):.3f} s/step; overhead {wall_ratio:+.1%} wall, "
            f"{cpu_ratio:+.1%} cpu",
            flush=True,
        )
    result: dict[str, Any] = {
        "model": spec,
        "activations": {act: summarize(record, args.quiet_factor) for act, record in records.items()},
    }
    acts = result["activations"]
    if "relu" in acts and "silu" in acts:
        result["silu_over_relu"] = {
            meter: {
                side: round(acts["silu"][meter][f"{side}_step"] / acts["relu"][meter][f"{side}_step"], 4)
                for side in ("engine", "hand_written")
            }
            for meter in ("wall", "cpu")
        }
    return result


def summarize(record: dict[str, list[Any]], factor: float) -> dict[str, Any]:
    """Per meter: medians of the per-step values and of the per-pair engine/hand ratios.

    Wall clock: over the *quiet* pairs only, both steps within ``factor`` x the fastest of
    their kind (a pair caught in a burst of other processes' work says nothing about the
    engine); with fewer than ``MIN_QUIET`` quiet pairs every pair is used and ``quiet`` is
    false. CPU time and page faults: over every pair.
    """
    engine, hand = record["engine"], record["hand"]
    out: dict[str, Any] = {"pairs": len(engine)}
    for index, meter in enumerate(METERS):
        pairs = [(e[index], h[index]) for e, h in zip(engine, hand, strict=True)]
        used = pairs
        if meter == "wall":
            fastest_engine, fastest_hand = min(e for e, _ in pairs), min(h for _, h in pairs)
            quiet = [(e, h) for e, h in pairs if e <= factor * fastest_engine and h <= factor * fastest_hand]
            used = quiet if len(quiet) >= MIN_QUIET else pairs
            out["quiet_pairs"], out["quiet"] = len(quiet), len(quiet) >= MIN_QUIET
        digits = 0 if meter == "faults" else 4
        summary = {
            "engine_step": round(median([e for e, _ in used]), digits),
            "hand_written_step": round(median([h for _, h in used]), digits),
            "engine_all": [round(e, digits) for e, _ in pairs],
            "hand_written_all": [round(h, digits) for _, h in pairs],
        }
        if meter != "faults":
            summary["overhead"] = round(median([e / h for e, h in used]) - 1, 4)
            summary["overhead_all_pairs"] = round(median([e / h for e, h in pairs]) - 1, 4)
            summary["overhead_pooled"] = round(summary["engine_step"] / summary["hand_written_step"] - 1, 4)
        out[meter] = summary
    difference = record["difference"]
    out["wall"]["engine_step_difference_method"] = round(median(difference), 4) if difference else None
    out["wall"]["difference_method_all"] = [round(t, 4) for t in difference]
    return out


# -- reporting -----------------------------------------------------------------------------
HEADER = (
    "model", "setting", "threads", "malloc", "act", "engine s", "hand s", "overhead", "quiet", "N2-N1 s",
    "overhead cpu", "faults engine", "faults hand",
)  # fmt: skip


def table_rows(results: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for entry in results:
        for act, r in entry["activations"].items():
            wall, cpu, faults = r["wall"], r["cpu"], r["faults"]
            diff = wall["engine_step_difference_method"]
            rows.append(
                (
                    entry["label"],
                    entry["setting"],
                    str(entry["threads"]),
                    entry["malloc"],
                    act,
                    f"{wall['engine_step']:.3f}",
                    f"{wall['hand_written_step']:.3f}",
                    f"{wall['overhead']:+.1%}",
                    f"{r['quiet_pairs']}/{r['pairs']}",
                    "-" if diff is None else f"{diff:.3f}",
                    f"{cpu['overhead']:+.1%}",
                    f"{faults['engine_step']:.0f}",
                    f"{faults['hand_written_step']:.0f}",
                )
            )
    return rows


def ratio_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for entry in results:
        if "silu_over_relu" in entry:
            wall, cpu = entry["silu_over_relu"]["wall"], entry["silu_over_relu"]["cpu"]
            lines.append(
                f"SiLU/ReLU step time, {entry['label']}, {entry['setting']}, {entry['threads']} thread(s), "
                f"{entry['malloc']} "
                f"malloc: {wall['engine']:.3f} wall, {cpu['engine']:.3f} cpu through the engine "
                f"({wall['hand_written']:.3f} / {cpu['hand_written']:.3f} hand-written)"
            )
    return lines


def speedups(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The engine's fastest setting against the hand-written fp32 step (per model, act, threads, malloc)."""
    out = []
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for entry in results:
        groups.setdefault((entry["label"], entry["threads"], entry["malloc"]), []).append(entry)
    for (label, threads, malloc), entries in groups.items():
        fp32 = next((e for e in entries if e["setting"] == "fp32"), None)
        if fp32 is None:
            continue
        for act, reference in fp32["activations"].items():
            hand_fp32 = reference["wall"]["hand_written_step"]
            best = min(entries, key=lambda e: e["activations"][act]["wall"]["engine_step"])
            engine_step = best["activations"][act]["wall"]["engine_step"]
            out.append({
                "model": label, "threads": threads, "malloc": malloc, "activation": act,
                "fastest_setting": best["setting"], "engine_step": engine_step,
                "hand_written_fp32_step": hand_fp32, "speedup": round(hand_fp32 / engine_step, 3),
            })  # fmt: skip
    return out


def speedup_lines(payload: dict[str, Any]) -> list[str]:
    return [
        f"{s['model']}, {s['activation']}, {s['threads']} thread(s), {s['malloc']} malloc: the engine in "
        f"{s['fastest_setting']} ({s['engine_step']:.3f} s/step) is {s['speedup']:.2f}x the hand-written "
        f"fp32 step ({s['hand_written_fp32_step']:.3f} s/step); goal >= {SPEEDUP_GOAL:.0f}x"
        for s in payload["speedups"]
    ]


def markdown(payload: dict[str, Any]) -> str:
    hw, settings = payload["hardware"], payload["settings"]
    lines = [
        "# Adversarial training step on CPU: engine vs hand-written, fp32 vs bf16 vs bf16 + channels_last "
        "(+ torch.compile)",
        "",
        f"{hw['date']}: {hw['cpu']}, {hw['cpus_available']} of {hw['logical_cpus']} CPUs, "
        f"torch {hw['torch']}, accelerate {hw['accelerate']}, Python {hw['python']}, {hw['libc']}; "
        f"load average {payload['load_average_before']} before, {payload['load_average_after']} after "
        "(other processes share the machine).",
        "",
        f"PGD-1 (random start, step = eps = {EPS}) + SGD step, batch {BATCH} of 1x28x28 ({payload['data']}); "
        f"{settings['repeats']} `train()` runs per activation (ABBA order) x {settings['steps']} measured "
        f"steps after {settings['warmup'] + 1} warm-up steps, each engine step paired with a hand-written "
        "step run right after it. overhead = median over pairs of engine / hand-written - 1 (goal <= "
        f"{GOAL:.0%}). Wall clock: medians over the quiet pairs (both steps within "
        f"{settings['quiet_factor']}x the fastest of their kind); N2-N1 = engine s/step by the difference "
        "method (all runs). overhead cpu: process CPU time (all threads), every pair. faults: median minor "
        "page faults per step. malloc: glibc defaults, or tuned with mallopt (no trimming / munmap of "
        "freed memory).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(payload["results"])]
    lines += ["", *[f"- {line}" for line in ratio_lines(payload["results"])]]
    lines += ["", *[f"- {line}" for line in speedup_lines(payload)]]
    if "bf16_cl_compile" in settings["settings"]:
        lines += [
            "",
            "In bf16_cl_compile the hand-written side is `torch.compile(model)` called inside "
            "`torch.autocast`, and it is slower than its own eager bf16_cl step, so that row's "
            "overhead compares with a slow reference; the engine (probably because accelerate puts "
            "autocast inside the model's forward, and torch.compile compiles that) is faster than its "
            "bf16_cl step.",
        ]
    return "\n".join(lines) + "\n"


def print_table(results: list[dict[str, Any]]) -> None:
    rows = [HEADER, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    for row in rows:
        cells = zip(row, widths, strict=True)
        print("  ".join(cell.ljust(w) if i < 4 else cell.rjust(w) for i, (cell, w) in enumerate(cells)))
    for line in ratio_lines(results):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="2", help="torch intra-op threads, comma-separated (default 2)")
    parser.add_argument("--malloc", choices=("default", "tuned", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3, help="train() runs per model and activation")
    parser.add_argument("--steps", type=int, default=8, help="measured (paired) steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps after the first one of a run")
    parser.add_argument(
        "--settings", default="fp32,bf16,bf16_cl", help=f"comma-separated from {', '.join(SETTINGS)}"
    )
    parser.add_argument("--models", default="small_cnn", help=f"comma-separated from {', '.join(MODELS)}")
    parser.add_argument("--activations", default="relu,silu")
    parser.add_argument(
        "--quiet-factor", type=float, default=1.5, help="a pair is quiet if both wall times are within this "
        "factor of the fastest of their kind (default 1.5)"
    )  # fmt: skip
    parser.add_argument("--no-difference", action="store_true", help="skip the N1-step runs (faster)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()

    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    activations = [a.strip() for a in args.activations.split(",") if a.strip()]
    mallocs = ["default", "tuned"] if args.malloc == "both" else [args.malloc]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if unknown := [m for m in models if m not in MODELS]:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    if unknown := [s for s in settings if s not in SETTINGS]:
        parser.error(f"unknown setting(s) {unknown}; choose from {list(SETTINGS)}")

    load_before = load_average()
    started = time.perf_counter()
    source, data_label = load_source()
    original_build_data = trainer._build_data
    trainer._build_data = lambda recipe: (source, source.load("train"), source.load("test"))
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_train_step_") as tmp:
            for malloc in mallocs:
                if malloc == "tuned" and not tune_malloc():
                    print("mallopt is not available (not glibc?): skipping malloc=tuned")
                    continue
                for label in models:
                    for count in threads:
                        for setting in settings:
                            torch.set_num_threads(count)
                            print(f"{label}, {setting}, {count} thread(s), {malloc} malloc", flush=True)
                            workdir = Path(tmp) / f"{malloc}-{label}-{count}-{setting}"
                            result = measure(label, setting, source, activations, args, workdir)
                            if torch.get_num_threads() != count:
                                print(
                                    f"warning: something changed torch's threads to {torch.get_num_threads()}"
                                )
                            results.append(
                                {
                                    "label": label,
                                    "setting": setting,
                                    "threads": count,
                                    "malloc": malloc,
                                    **result,
                                }
                            )
    finally:
        trainer._build_data = original_build_data

    payload = {
        "benchmark": "bench_train_step",
        "hardware": hardware(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "data": data_label,
        "settings": {
            "batch_size": BATCH,
            "eps": EPS,
            "attack": "pgd steps=1 rel_step_size=1.0 random_start_fraction=1.0 bn_mode=eval",
            "optimizer": f"sgd lr={LR} momentum=0.9 nesterov weight_decay=5e-4 (engine: cosine schedule)",
            "threads": threads,
            "malloc": mallocs,
            "settings": {name: SETTINGS[name] for name in settings},
            "repeats": args.repeats,
            "steps": args.steps,
            "warmup": args.warmup,
            "quiet_factor": args.quiet_factor,
            "goal_overhead": GOAL,
        },
        "results": results,
        "speedups": speedups(results),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print()
    print_table(results)
    for line in speedup_lines(payload):
        print(line)
    for entry in results:
        for act, r in entry["activations"].items():
            where = f"{entry['threads']} thread(s)/{entry['malloc']} malloc"
            name = f"{entry['label']}/{entry['setting']}/{act}/{where}"
            if not r["quiet"]:
                print(f"warning: {name}: fewer than {MIN_QUIET} quiet pairs, the wall figures are noisy")
            if r["wall"]["overhead"] > GOAL:
                print(f"{name}: engine overhead {r['wall']['overhead']:+.1%} (wall) is above {GOAL:.0%}")
    print(
        f"load average {load_before} -> {payload['load_average_after']}, {payload['total_seconds']} s in all"
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "train_step_cpu.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (args.out_dir / "train_step_cpu.md").write_text(markdown(payload), encoding="utf-8")
    print(f"wrote {args.out_dir / 'train_step_cpu.json'} and train_step_cpu.md")


if __name__ == "__main__":
    main()
