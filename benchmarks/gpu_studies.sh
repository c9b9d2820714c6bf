#!/usr/bin/env bash
# Run studies on a lent GPU machine (the `device` tool), in one call, and bring back every
# cell that finished.
#
# Why: on the 2-core CPUs these studies ran on so far (fp32, one thread per cell), one
# 6-epoch Fashion-MNIST cell takes 1.5-1.8 h on an AVX2-only AMD EPYC and about 40 min on
# one with AVX512-BF16; a 12-epoch TRADES or MART cell in bf16 about 2.5 h on the latter
# (the converged studies' protocol: 12 epochs, bf16, PGD-2 for PGD-AT). The programme of
# docs/results/README.md is a few hundred cell-hours. A GPU should take minutes per cell
# (an estimate: no study has run on one yet), so a few device calls can finish what would
# take weeks of sessions here.
#
# 1. Here, once:     bash benchmarks/gpu_studies.sh prepare
#    Puts the wheels the device image lacks into .whl/ and the Fashion-MNIST IDX files into
#    .data/fashion-mnist/ (both git-ignored through .git/info/exclude; about 31 MB).
# 2. On the device (carry [".whl", ".data"], timeout_s 600):
#       bash benchmarks/gpu_studies.sh run 500 recipes/studies/fashion_mnist_budget.toml ...
#    installs what is missing, puts the data where the fashion_mnist plugin looks, runs each
#    study into docs/results/<study name> with --jobs ${JOBS:-4} and --reuse docs/results
#    until 500 s have passed, then packs the studies' records (recipes, metrics, logs,
#    study.json, reports; no weights or checkpoints) into $OUT/studies.tgz.
#    SET="KEY=VALUE ..." adds --set to every study. The shipped Fashion-MNIST studies pin
#    their precision themselves (optimizer.mixed_precision: "no" for the protocol ablation
#    and the budget sweep, "bf16" for the overfitting study and the converged studies), so
#    on a GPU they still plan the runs their published cells are.
# 3. Here:           tar -xzf <files_at>/studies.tgz   (then --report-only, and commit)
#    The archive holds only the studies the call ran, each whole: it replaces their
#    study.json here, so do not run those studies here while the device runs them.
#
# A cell killed at the deadline is lost (its checkpoints stay on the device); the studies'
# ledgers say so (outcome "interrupted"), and the next run starts it again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

prepare() {
    mkdir -p .git/info .whl .data
    for ignored in /.whl/ /.data/; do
        grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >>.git/info/exclude
    done
    # datasets and the two packages it needs that the device image (Python 3.12) lacks.
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        -d .whl "datasets==5.2.0" "dill==0.4.1" "multiprocess==0.70.19"
    mkdir -p .data/fashion-mnist
    cp -u /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
    du -sh .whl .data
}

run() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    local out=${OUT:-/tmp/gpu_studies_out}
    mkdir -p "$out" docs/results
    if ! "$PYTHON" -c "import datasets" 2>/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    # The project itself, with its entry points (the built-in plugins register through them).
    if ! "$PYTHON" -c "import importlib.metadata as m; m.distribution('smooth-adversarial-training')" 2>/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
        mkdir -p /usr/share/datasets/fashion-mnist
        cp .data/fashion-mnist/*.gz /usr/share/datasets/fashion-mnist/
    fi
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
    local sets=() ran=()
    for item in ${SET:-}; do sets+=(--set "$item"); done
    for study in "$@"; do
        local left=$((deadline - SECONDS))
        if [ "$left" -le 30 ]; then
            echo "deadline reached: $study not started"
            continue
        fi
        local name
        name=$("$PYTHON" -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['study']['name'])" "$study")
        echo "== $study -> docs/results/$name (at most $left s)"
        ran+=("docs/results/$name")
        timeout --signal=TERM --kill-after=20 "$left" "$PYTHON" -m sat_toolkit study "$study" \
            --jobs "${JOBS:-4}" --output-dir "docs/results/$name" --reuse docs/results "${sets[@]}" \
            || echo "== $study stopped (exit $?)"
    done
    [ "${#ran[@]}" -gt 0 ] || { echo "no study ran" && return 1; }
    tar -czf "$out/studies.tgz" --exclude=checkpoints --exclude=model.safetensors --exclude=tensorboard \
        --exclude=.lock --exclude=.study.json.lock "${ran[@]}"
    echo "packed: $out/studies.tgz ($(du -h "$out/studies.tgz" | cut -f1))"
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift && run "$@" ;;
    *) echo "usage: $0 prepare | run SECONDS STUDY.toml..." >&2 && exit 2 ;;
esac
