"""What do the smooth activations cost on the CPU, torch's own kernels against ours?

Run by hand (not a test): ``python benchmarks/bench_activation_kernels.py`` (about a
minute). ELU, CELU, softplus, parametric softplus and SmoothReLU need expm1 or log1p,
which torch's CPU kernels compute several times slower than exp or sigmoid; the built-in
activations compute them through ``sat_toolkit.activations.cpu_math`` instead (exp and
log, torch's own backward). This measures, in one process, both paths:

* **op**: forward + backward of each function on one activation-sized tensor (128 x 64 x
  14 x 14, the second stage of ``small_cnn`` at batch 128), float32 and bfloat16, against
  SiLU, the cheap smooth activation;
* **model**: a training-shaped step of ``small_cnn`` with the fc head (the Fashion-MNIST
  recipes' model, batch 128, 1 x 28 x 28, train mode, bf16 autocast as the studies run it):
  three forward + backward passes, as a PGD-2 training step makes (two attack steps, one
  update), for every built-in activation with torch's kernels ("native") and ours.

Times are the CPU time of this thread (``time.thread_time``), the best of ``--repeats``,
so other processes on a shared machine do not inflate them; paths alternate (ABBA) in the
model part. One torch thread. Writes ``benchmarks/results/activation_kernels_cpu.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from sat_toolkit.activations import cpu_math
from sat_toolkit.data.fashion_mnist import FashionMNIST
from sat_toolkit.engine.memory import keep_freed_memory
from sat_toolkit.models import create_model
from sat_toolkit.study.ledger import cpu_features, cpu_model

RESULTS = Path(__file__).parent / "results" / "activation_kernels_cpu.json"
FASHION_MNIST = FashionMNIST().info()  # shape and statistics only: no data is read
SMOOTH_WITH_EXPM1_OR_LOG1P = [
    {"name": "elu"},
    {"name": "celu"},
    {"name": "softplus"},
    {"name": "parametric_softplus"},
    {"name": "smoothrelu"},
]


@contextlib.contextmanager
def torch_kernels() -> Iterator[None]:
    """Route cpu_math's functions to torch's own ops, as the activations called them before."""
    saved = cpu_math.elu, cpu_math.softplus, cpu_math.log1p_nonnegative
    cpu_math.elu = lambda x, alpha=1.0, input_scale=1.0: torch.ops.aten.elu(x, alpha, 1.0, input_scale)
    cpu_math.softplus = lambda x, beta=1.0: F.softplus(x, beta=beta)
    cpu_math.log1p_nonnegative = torch.log1p
    try:
        yield
    finally:
        cpu_math.elu, cpu_math.softplus, cpu_math.log1p_nonnegative = saved


def best_cpu_ms(work: Callable[[], object], repeats: int) -> float:
    work()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        work()
        best = min(best, time.thread_time() - start)
    return round(best * 1e3, 3)


def forward_backward(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    def work() -> None:
        leaf = x.detach().requires_grad_()
        out = function(leaf)
        out.backward(torch.ones_like(out))

    return work


def op_table(repeats: int) -> list[dict[str, object]]:
    x32 = torch.randn(128, 64, 14, 14, generator=torch.Generator().manual_seed(0)) * 2
    functions = {
        "silu": (F.silu, F.silu),
        "elu": (F.elu, cpu_math.elu),
        "celu (alpha 0.7)": (lambda x: F.celu(x, 0.7), lambda x: cpu_math.elu(x, 0.7, 1 / 0.7)),
        "softplus": (F.softplus, cpu_math.softplus),
        "softplus (beta 10)": (lambda x: F.softplus(x, 10.0), lambda x: cpu_math.softplus(x, 10.0)),
        "log1p (smoothrelu)": (lambda x: torch.log1p(x.abs()), lambda x: cpu_math.log1p_nonnegative(x.abs())),
    }
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        x = x32.to(dtype)
        for name, (native, ours) in functions.items():
            native_ms = best_cpu_ms(forward_backward(native, x), repeats)
            ours_ms = best_cpu_ms(forward_backward(ours, x), repeats)
            rows.append(
                {
                    "function": name,
                    "dtype": str(dtype).removeprefix("torch."),
                    "torch_ms": native_ms,
                    "ours_ms": ours_ms,
                    "speedup": round(native_ms / ours_ms, 2),
                }
            )
            print(f"  op {name:20s} {rows[-1]['dtype']:8s} torch {native_ms:7.2f} ms  ours {ours_ms:7.2f} ms")
    return rows


def model_step(activation: dict[str, object], batch: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = create_model({"name": "small_cnn", "head": "fc"}, FASHION_MNIST, activation).train()
    images = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(2))

    def work() -> None:
        for _ in range(3):  # two attack steps and the update of a PGD-2 training step
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(images), labels)
            loss.backward()

    return work


def model_table(repeats: int, batch: int) -> list[dict[str, object]]:
    rows = []
    for activation in [{"name": "relu"}, {"name": "silu"}, {"name": "gelu"}, *SMOOTH_WITH_EXPM1_OR_LOG1P]:
        step = model_step(activation, batch)
        times: dict[str, list[float]] = {"torch": [], "ours": []}
        for order in (("torch", "ours"), ("ours", "torch")):  # ABBA
            for path in order:
                with torch_kernels() if path == "torch" else contextlib.nullcontext():
                    times[path].append(best_cpu_ms(step, repeats))
        torch_ms, ours_ms = min(times["torch"]), min(times["ours"])
        rows.append(
            {
                "activation": activation["name"],
                "torch_ms": torch_ms,
                "ours_ms": ours_ms,
                "speedup": round(torch_ms / ours_ms, 2),
            }
        )
        print(f"  model {activation['name']:20s} torch {torch_ms:8.1f} ms  ours {ours_ms:8.1f} ms")
    silu = next(row["ours_ms"] for row in rows if row["activation"] == "silu")
    for row in rows:
        row["torch_vs_silu"] = round(row["torch_ms"] / silu, 2)
        row["ours_vs_silu"] = round(row["ours_ms"] / silu, 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as the trainer does
    print("ops (forward + backward, CPU ms):")
    ops = op_table(args.repeats)
    print("small_cnn, fc head, bf16, 3 forward + backward passes (CPU ms):")
    models = model_table(max(3, args.repeats // 3), args.batch)
    payload = {
        "what": "CPU time of activation kernels, torch's own against sat_toolkit.activations.cpu_math",
        "machine": {
            "cpu": cpu_model(),
            "cpu_features": cpu_features(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": 1,
        },
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_activation_kernels.py",
        "ops": ops,
        "small_cnn_step": models,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
