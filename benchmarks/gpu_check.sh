#!/usr/bin/env bash
# The CUDA path in one prepared check: correctness first (the CUDA tests compare every CUDA result
# with the CPU reference), then the throughput that prices the paper's plan. Needs no network.
#
#   bash benchmarks/gpu_check.sh OUT          one H100/H200: at most 8 minutes (GPU_CHECK_BUDGET=450 s)
#   bash benchmarks/gpu_check.sh --dry OUT    tiny sizes on the CPU (a minute or two): checks the script
#
# Without CUDA the dry mode is chosen by itself. Everything goes to OUT: env.json (nvidia-smi, torch),
# cuda_tests.{txt,xml} (pytest -m cuda), cli_run/ (a two-epoch `linpath train` of the paper's base
# recipe on CIFAR-10-format files of random images), the figures of `python -m linpath.bench train`
# (train_single / train_packs / train_pack10.json: plain loop, fast loop, packs of 2, 4 and 10 seeds)
# and of `python -m linpath.bench paths --cifar` (paths.json), one log per stage, stages.tsv and
# summary.md, the table printed at the end. Each stage runs under its own time limit and the next one
# runs whatever the earlier ones did; the table says which stage failed, timed out or was not run.
set -u

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
REPO="$(cd "$(dirname "$SELF")/.." && pwd)"
PY="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHONPATH="$REPO/workflow${PYTHONPATH:+:$PYTHONPATH}"  # runs from a checkout, installed or not
export PYTHONUNBUFFERED=1

START=$(date +%s)
INTERNAL=""
if [[ "${1:-}" == "--internal" ]]; then  # one stage, started by `stage` below under its time limit
  INTERNAL=1; shift
  OUT="$GPU_CHECK_OUT"; WORK="$GPU_CHECK_WORK"; DRY="$GPU_CHECK_DRY"
else
  DRY=""
  if [[ "${1:-}" == "--dry" ]]; then DRY=1; shift; fi
  if [[ $# -ne 1 ]]; then
    echo "usage: bash benchmarks/gpu_check.sh [--dry] OUT_FOLDER" >&2
    exit 2
  fi
  mkdir -p "$1"
  OUT="$(cd "$1" && pwd)"
  WORK="$(mktemp -d)"  # data files and run states: large, not part of the report
  trap 'rm -rf "$WORK"' EXIT
  if [[ -z "$DRY" ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "no CUDA device visible to $PY: running the dry mode (tiny sizes on the CPU)"
    DRY=1
  fi
  export GPU_CHECK_OUT="$OUT" GPU_CHECK_WORK="$WORK" GPU_CHECK_DRY="$DRY"
fi
cd "$REPO"

if [[ -n "$DRY" ]]; then
  MODE=dry; DEVICE=cpu; BUDGET="${GPU_CHECK_BUDGET:-300}"
  N_TRAIN=200; N_TEST=40; WIDTH=(--width 4)  # a CIFAR-shaped run of 2 steps per epoch
  BENCH=(--images 128 --batch-size 64 --epochs 1 --warmup-steps 1 --agree-steps 2 --threads 2)
  BENCH_COMPILE=(--no-compile)
  PATHS=(--train-samples 256 --test-samples 128 --width 4 --alphas 3 --threads 2)
else
  MODE=gpu; DEVICE=cuda; BUDGET="${GPU_CHECK_BUDGET:-450}"
  N_TRAIN=50000; N_TEST=10000; WIDTH=()
  BENCH=(--images 50000 --epochs 1)
  BENCH_COMPILE=(--compile)
  PATHS=()
fi
RESERVE=10    # seconds kept for the summary
MIN_STAGE=20  # a stage with less time left is not started

# stage NAME CAP COMMAND...: run COMMAND under min(CAP, time left) seconds, output to OUT/NAME.log,
# one line in OUT/stages.tsv: name, status, exit status, seconds, log.
stage() {
  local name=$1 cap=$2; shift 2
  local left=$(( DEADLINE - $(date +%s) - RESERVE ))
  local limit=$(( cap < left ? cap : left ))
  if (( limit < MIN_STAGE )); then
    printf '%s\t%s\t-\t0\t-\n' "$name" "not run (time budget spent)" >> "$OUT/stages.tsv"
    echo "== $name: not run (${left}s left of the budget)"
    return
  fi
  echo "== $name (limit ${limit}s)"
  local t0 rc status
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" bash "$SELF" --internal "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="timed out after ${limit}s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')" \
    "$name.log" >> "$OUT/stages.tsv"
  tail -n 4 "$OUT/$name.log" | sed 's/^/   /'
  echo "   -> $status"
}

environment() {
  nvidia-smi || echo "nvidia-smi: not available"
  "$PY" benchmarks/gpu_check.py env "$OUT/env.json"
}

# The paper's base recipe as the workflow resolves it (config.yaml + paper.yaml, seed 0), for the CLI
# run (2 epochs, data under $WORK) and for the training benchmark (its model and batch options).
paper_settings() {
  "$PY" benchmarks/gpu_check.py paper-run "$OUT/paper_run.yaml" --root "$WORK/data" --epochs 2 --device "$DEVICE" \
    "${WIDTH[@]}" --bench-args "$OUT/bench_args.txt"
}

cuda_tests() {
  "$PY" -m pytest tests/test_cuda.py -m cuda -rA -p no:cacheprovider --junitxml "$OUT/cuda_tests.xml" \
    | tee "$OUT/cuda_tests.txt"
  return "${PIPESTATUS[0]}"
}

# `linpath train` through the real CLI on CIFAR-10 files in the official on-disk format; the run's
# small files are kept in OUT/cli_run (its states stay in $WORK).
cli_train() {
  "$PY" benchmarks/gpu_check.py cifar-files "$WORK/data" --train "$N_TRAIN" --test "$N_TEST" \
    --record "$OUT/cli_run/data.json" || return
  "$PY" -m linpath train --config "$OUT/paper_run.yaml" --out "$WORK/cli_run" --no-progress
  local rc=$?
  for f in run.yaml summary.yaml metrics.parquet outcome.yaml failed.yaml; do
    [[ -f "$WORK/cli_run/$f" ]] && cp "$WORK/cli_run/$f" "$OUT/cli_run/"
  done
  return $rc
}

bench_paths() {
  "$PY" -m linpath.bench paths --cifar --device "$DEVICE" "${PATHS[@]}" --json "$OUT/paths.json"
}

bench_train() {  # bench_train JSON_NAME OPTIONS...
  local name=$1; shift
  local model
  read -r -a model < "$OUT/bench_args.txt" || return
  "$PY" -m linpath.bench train "${model[@]}" "${BENCH[@]}" --device "$DEVICE" "$@" \
    --json "$OUT/$name.json"
}

if [[ -n "$INTERNAL" ]]; then
  "$@"
  exit $?
fi

DEADLINE=$(( START + BUDGET ))
: > "$OUT/stages.tsv"
echo "gpu_check ($MODE mode, device $DEVICE, budget ${BUDGET}s) -> $OUT"

stage env 30 environment
stage settings 60 paper_settings
stage cuda-tests 150 cuda_tests
stage cli-train 90 cli_train
stage bench-train 120 bench_train train_single --packs "" "${BENCH_COMPILE[@]}"
stage bench-paths 110 bench_paths
stage bench-packs 110 bench_train train_packs --packs 2,4 --no-compile
stage bench-pack10 100 bench_train train_pack10 --packs 10 --no-compile

echo
echo "== summary ($MODE mode; $(( $(date +%s) - START ))s) -> $OUT/summary.md"
"$PY" benchmarks/gpu_check.py summary "$OUT"
