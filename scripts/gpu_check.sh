#!/usr/bin/env bash
# GPU readiness check: everything that needs a CUDA device, in one run of under 8 minutes.
#
#   scripts/gpu_check.sh OUTDIR [DATA_ROOT]        # DATA_ROOT (or $DATA_ROOT): holds MNIST/raw; default ../shared/data
#
# On a CUDA machine it runs, each step with its own time limit (all limits together stay
# under 8 minutes):
#   env           torch / device facts                        -> OUTDIR/env.json
#   cuda_tests    the tests that need CUDA (pytest -m "" -k cuda) -> OUTDIR/cuda_tests.xml
#   bench_layers  scripts/bench_layers.py on CUDA, fp32 and bf16 -> OUTDIR/bench_layers.json
#   bench_pack    scripts/bench_pack.py on CUDA: K = 1..32, MNIST and CIFAR-10, CNN and FCN,
#                 fp32 and bf16, peak memory per K, and the JAX ConvLocal anchor if JAX
#                 imports                                     -> OUTDIR/bench_pack.json
#   sweep         packed `experiment=paper_translate budget=small` on real MNIST, trainer=gpu
#                                                             -> OUTDIR/paper_translate_small/
#   report        weightshare-report of that sweep            -> OUTDIR/report/
# Without CUDA it says so and runs the smallest case of each step on CPU (no CUDA tests),
# so a test can run it. Every step's output goes to OUTDIR/<step>.log; a failing or
# timed-out step does not stop the others, and OUTDIR/summary.json records each step's
# exit status (124: timed out), time and limit. The exit status is 0 when every step that
# ran passed, 1 otherwise.
#
# On a GPU node without internet: on a machine with internet, `make wheelhouse
# PYTHON_VERSION=<the node's, e.g. 311> PLATFORM="manylinux_2_28_x86_64 manylinux2014_x86_64"` (a wheel of every
# dependency but torch, the dev tools included, and the project's own); copy the checkout
# with its wheelhouse/ to the node; there, in a virtual environment that has the node's
# CUDA torch: `python -m pip install --no-index --find-links wheelhouse "weightshare[wandb,dev]"`,
# then `PYTHON=$(command -v python) scripts/gpu_check.sh OUTDIR DATA_ROOT`.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 OUTDIR [DATA_ROOT]" >&2
    exit 2
fi
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_ROOT=${2:-${DATA_ROOT:-$REPO/../shared/data}}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
cd "$REPO"
export PYTHONWARNINGS=ignore

BUDGET_S=${GPU_CHECK_BUDGET_S:-470}   # all steps together (8 minutes less start-up)
START=$SECONDS
STEPS_FILE=$OUT/.steps.tsv
: >"$STEPS_FILE"

# step NAME LIMIT_S CMD...: run CMD with a time limit (cut to what is left of the budget),
# output to OUTDIR/NAME.log, exit status recorded; never stops the script.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - (SECONDS - START)))
    if ((left < limit)); then limit=$left; fi
    if ((limit < 5)); then
        echo "== $name: skipped, the time budget is spent"
        printf '%s\t%s\t%s\t%s\n' "$name" "skipped" 0 "$limit" >>"$STEPS_FILE"
        return 0
    fi
    echo "== $name (limit ${limit} s): $*"
    local t0=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    echo "   exit status $rc after $((SECONDS - t0)) s ($OUT/$name.log)"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$STEPS_FILE"
}

skip() {
    echo "== $1: skipped ($2)"
    printf '%s\t%s\t%s\t%s\n' "$1" "skipped" 0 0 >>"$STEPS_FILE"
}

CUDA=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)

step env 15 "$PYTHON" -c '
import json, sys, torch
cuda = torch.cuda.is_available()
info = {"torch": torch.__version__, "cuda": cuda, "python": sys.version.split()[0]}
if cuda:
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                device_count=torch.cuda.device_count(), bf16=torch.cuda.is_bf16_supported(),
                cuda_version=torch.version.cuda)
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
' "$OUT/env.json"

if [[ -f $DATA_ROOT/MNIST/raw/train-images-idx3-ubyte.gz ]]; then
    DATA=("data=mnist" "data.root=$DATA_ROOT")
else
    echo "no real MNIST under $DATA_ROOT/MNIST/raw: the sweep uses data=synthetic"
    DATA=("data=synthetic" "data.options.size=512")
fi
SWEEP=(train.py -m experiment=paper_translate budget=small "${DATA[@]}" hydra/launcher=packed
    "hydra.sweep.dir=$OUT/paper_translate_small")

if [[ $CUDA == 1 ]]; then
    echo "CUDA device found: running the GPU checks"
    command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/nvidia_smi.log" 2>&1 || true
    step cuda_tests 60 "$PYTHON" -m pytest -m "" -k cuda -q -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml" tests
    step bench_layers 50 "$PYTHON" scripts/bench_layers.py --device cuda --dtypes fp32 bf16 --rounds 5 \
        --json "$OUT/bench_layers.json"
    # MNIST and CIFAR-10, CNN and FCN, fp32 and bf16, K = 1..32: 8 configurations, 3 rounds of 2 steps
    step bench_pack 180 "$PYTHON" scripts/bench_pack.py --device cuda --dtypes fp32 bf16 --rounds 3 --steps 2 \
        --warmup 1 --jax --json "$OUT/bench_pack.json"
    step sweep 150 "$PYTHON" "${SWEEP[@]}" trainer=gpu
else
    echo "no CUDA device: running the smallest case of each step on CPU (the GPU numbers need a CUDA machine)"
    skip cuda_tests "no CUDA device"
    step bench_layers 120 "$PYTHON" scripts/bench_layers.py --device cpu --nets mnist --dtypes fp32 --depth 2 \
        --rounds 1 --steps 1 --warmup 1 --threads 1 --no-memory --json "$OUT/bench_layers.json"
    step bench_pack 120 "$PYTHON" scripts/bench_pack.py --device cpu --threads 1 --nets mnist --models cnn \
        --dtypes fp32 --ks 1 2 --rounds 1 --steps 1 --warmup 0 --json "$OUT/bench_pack.json"
    step sweep 240 "$PYTHON" "${SWEEP[@]}" trainer=cpu threads=1 "aug.translate=0,0.3" trainer.max_epochs=1 \
        data.limit_train=256 data.limit_val=128
fi
if [[ -d $OUT/paper_translate_small ]]; then
    step report 25 "$PYTHON" -m weightshare.report "$OUT/paper_translate_small" --out "$OUT/report"
else
    skip report "the sweep left no directory"
fi

"$PYTHON" - "$STEPS_FILE" "$OUT/summary.json" "$CUDA" "$((SECONDS - START))" <<'EOF'
import json, sys
steps_file, out, cuda, total = sys.argv[1:]
steps = {}
for line in open(steps_file):
    name, rc, secs, limit = line.rstrip("\n").split("\t")
    steps[name] = {
        "exit_status": None if rc == "skipped" else int(rc),
        "skipped": rc == "skipped",
        "timed_out": rc in ("124", "137"),
        "seconds": int(secs),
        "limit_s": int(limit),
    }
ran = [s for s in steps.values() if not s["skipped"]]
summary = {"cuda": cuda == "1", "total_s": int(total), "ok": all(s["exit_status"] == 0 for s in ran), "steps": steps}
json.dump(summary, open(out, "w"), indent=2)
print(json.dumps(summary, indent=2))
sys.exit(0 if summary["ok"] else 1)
EOF
