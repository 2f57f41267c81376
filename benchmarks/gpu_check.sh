#!/usr/bin/env bash
# One command for the GPU machine (one H200, torch preinstalled for its python3, nvcc, no network):
# build the extension from source in place, check the CUDA kernels, run the CUDA tests, time the
# CUDA benchmarks and print the report. Everything lands under ${OUT:-benchmarks/out}:
#   gpu_check.log    every stage's output, in order, with a status line per stage
#   bench-main.json  pytest-benchmark JSON, shape 256x3x32x32 (the targets' shape)
#   bench-rest.json  pytest-benchmark JSON, the other four shapes
#   report.md        the full markdown report (benchmarks/report.py)
#   report-brief.md  the short report, also printed last
# Each stage runs under `timeout` inside one overall budget (default 460 s: the whole script stays
# under 8 minutes); a failing stage is recorded and the next one still runs; the exit status is 1
# if any stage failed (a missed performance target is reported, not a stage failure).
set -uo pipefail

STAGES="env build check tests-cuda tests-fused bench-main bench-rest report"

usage() {
  cat <<EOF
usage: bash benchmarks/gpu_check.sh [options]
  --out DIR          where to write logs, JSON and reports (default: \$OUT, else benchmarks/out)
  --python PY        the Python with torch (default: \$PYTHON, else python3)
  --budget SECONDS   overall time budget; each stage's timeout is cut to fit (default: 460)
  --shared DIR       the shared material (golden vectors, bench/reference-dsa-h200.json); default:
                     \$DSA_FAST_SHARED, else ./shared, else ../shared when present
  --reference FILE   the official timings JSON (default: <shared>/bench/reference-dsa-h200.json)
  --only S1,S2       run only these stages; --skip S1,S2 skips them
                     stages: ${STAGES// /, }
  -h, --help         this text
Environment: DSA_GPU_CHECK_BENCH_DEVICES (default cuda; 'cpu' makes a dry run of the benchmark
stages on a machine without a GPU), DSA_BENCH_* (benchmarks/conftest.py).
The ../shared beside a checkout does not travel to the GPU machine: copy what is needed into a
git-ignored folder of the repo, carry it, and pass --shared (see benchmarks/README.md).
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

OUT_DIR=${OUT:-$ROOT/benchmarks/out}
PY=${PYTHON:-python3}
BUDGET=460
SHARED=${DSA_FAST_SHARED:-}
REFERENCE=""
ONLY=""
SKIP=""

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "gpu_check: $1 needs a value" >&2; usage >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) need_value "$@"; OUT_DIR=$2; shift 2 ;;
    --python) need_value "$@"; PY=$2; shift 2 ;;
    --budget) need_value "$@"; BUDGET=$2; shift 2 ;;
    --shared) need_value "$@"; SHARED=$2; shift 2 ;;
    --reference) need_value "$@"; REFERENCE=$2; shift 2 ;;
    --only) need_value "$@"; ONLY=$2; shift 2 ;;
    --skip) need_value "$@"; SKIP=$2; shift 2 ;;
    --out=*) OUT_DIR=${1#*=}; shift ;;
    --python=*) PY=${1#*=}; shift ;;
    --budget=*) BUDGET=${1#*=}; shift ;;
    --shared=*) SHARED=${1#*=}; shift ;;
    --reference=*) REFERENCE=${1#*=}; shift ;;
    --only=*) ONLY=${1#*=}; shift ;;
    --skip=*) SKIP=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

case "$BUDGET" in
  '' | *[!0-9]*) echo "gpu_check: --budget must be a whole number of seconds, got '$BUDGET'" >&2; exit 2 ;;
esac
for s in ${ONLY//,/ } ${SKIP//,/ }; do
  case " $STAGES " in
    *" $s "*) ;;
    *) echo "gpu_check: unknown stage '$s' (stages: $STAGES)" >&2; exit 2 ;;
  esac
done

selected() {
  local s=$1
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$s,"* ]]; then return 1; fi
  if [ -n "$SKIP" ] && [[ ",$SKIP," == *",$s,"* ]]; then return 1; fi
  return 0
}

# Paths given on the command line are relative to where the script was called from.
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
OUT_DIR=$(abspath "$OUT_DIR")
[ -n "$SHARED" ] && SHARED=$(abspath "$SHARED")
[ -n "$REFERENCE" ] && REFERENCE=$(abspath "$REFERENCE")
case "$PY" in */*) PY=$(abspath "$PY") ;; esac
cd "$ROOT" || exit 2

if [ -n "$SHARED" ] && [ ! -d "$SHARED" ]; then
  echo "gpu_check: --shared $SHARED is not a directory" >&2
  exit 2
fi
if [ -z "$SHARED" ]; then
  for d in "$ROOT/shared" "$ROOT/../shared"; do
    if [ -d "$d" ]; then SHARED=$(cd "$d" && pwd); break; fi
  done
fi
[ -n "$SHARED" ] && export DSA_FAST_SHARED="$SHARED"
if [ -z "$REFERENCE" ] && [ -n "$SHARED" ]; then REFERENCE="$SHARED/bench/reference-dsa-h200.json"; fi

mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"

export ROOT OUT_DIR PY REFERENCE
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}

# pytest-benchmark settings of the GPU run: warm-up calls, then rounds of one synchronised call
# until max-time (at least min-rounds); the report reads the median.
export BENCH_MAIN_ARGS="--benchmark-max-time=0.1 --benchmark-min-rounds=15"
export BENCH_REST_ARGS="--benchmark-max-time=0.05 --benchmark-min-rounds=15"
export BENCH_COMMON_ARGS="-q -p no:cacheprovider --benchmark-sort=name --benchmark-columns=min,median,iqr,rounds"

# ---------------------------------------------------------------------------------------------
# Stages (each a function run under `timeout` in a child bash)
# ---------------------------------------------------------------------------------------------

stage_env() {
  local rc=0
  echo "date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "host: $(uname -srm), $(nproc) cores"
  echo "repo: $ROOT (git commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo "shared: ${DSA_FAST_SHARED:-not found}; reference timings: ${REFERENCE:-not found}"
  nvidia-smi || { echo "nvidia-smi failed"; rc=1; }
  "$PY" - <<'EOF' || rc=1
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version(), "| cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu:", p.name, f"sm_{p.major}{p.minor}", f"{p.total_memory / 2**30:.0f} GiB", p.multi_processor_count, "SMs")
try:
    import pytest, pytest_benchmark
    print("pytest", pytest.__version__, "| pytest-benchmark", pytest_benchmark.__version__)
except ImportError as e:
    print("missing:", e)
    raise SystemExit(1)
EOF
  if [ -x "$CUDA_HOME/bin/nvcc" ]; then "$CUDA_HOME/bin/nvcc" --version | tail -n 2; else echo "no nvcc at $CUDA_HOME/bin/nvcc"; rc=1; fi
  return $rc
}

stage_build() {
  # MAX_JOBS unset: ninja uses every core (16 there). Build in place against this machine's torch.
  unset MAX_JOBS
  echo "CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-(from the visible GPU)}"
  "$PY" setup.py -q build_ext --inplace --build-temp build/gpu || return 1
  ls -l dsa_fast/_C*.so
}

stage_check() {
  "$PY" - <<'EOF'
import sys

import torch

import dsa_fast
from dsa_fast import DiffAugment, ParamDiffAug

FULL = "color_crop_cutout_flip_scale_rotate"
ok = True
print("dsa_fast", dsa_fast.__version__, "from", dsa_fast.__file__)
print("has_ops:", dsa_fast.has_ops())
if not dsa_fast.has_ops():
    print("  ", dsa_fast._ops._LOAD_ERROR)
    sys.exit(1)
for op in ("augment", "augment_backward"):
    for key in ("CPU", "CUDA"):
        has = torch._C._dispatch_has_kernel_for_dispatch_key(f"dsa_fast::{op}", key)
        print(f"dsa_fast::{op} {key} kernel registered: {has}")
        ok &= bool(has)
if not ok:
    print("FAIL: the dsa_fast ops lack a CUDA kernel (was the extension built without CUDA?)")
    sys.exit(1)
if not torch.cuda.is_available():
    print("FAIL: torch.cuda.is_available() is False")
    sys.exit(1)

# One quick comparison per mode on the GPU (the tests do the thorough job): fused vs reference,
# output and input gradient under a random upstream gradient, relative to the reference's norm.
g = torch.Generator().manual_seed(1)
x = torch.rand(64, 3, 32, 32, generator=g).cuda()
up = torch.randn(64, 3, 32, 32, generator=g).cuda()
for rng in ("compat", "device"):
    for mode in ("S", "M"):
        outs = {}
        for backend in ("fused", "reference"):
            xr = x.clone().requires_grad_()
            y = DiffAugment(xr, FULL, seed=5, param=ParamDiffAug(aug_mode=mode, rng=rng), backend=backend)
            (dx,) = torch.autograd.grad(y, xr, up)
            outs[backend] = (y.detach(), dx)
        ey = ((outs["fused"][0] - outs["reference"][0]).norm() / outs["reference"][0].norm()).item()
        eg = ((outs["fused"][1] - outs["reference"][1]).norm() / outs["reference"][1].norm()).item()
        good = ey < 1e-4 and eg < 1e-4  # float32 arithmetic lands far under this
        ok &= good
        print(f"cuda rng={rng} mode={mode}: rel err y {ey:.2e}, dx {eg:.2e} {'ok' if good else 'FAIL'}")

# Information, not a failure: does a seeded rng='device' call run without a host synchronisation?
for mode in ("S", "M"):
    param = ParamDiffAug(aug_mode=mode, rng="device")
    DiffAugment(x, FULL, seed=1, param=param, backend="fused")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        DiffAugment(x, FULL, seed=2, param=param, backend="fused")
        verdict = "no host synchronisation"
    except RuntimeError as e:
        verdict = f"SYNCHRONISES ({str(e).splitlines()[0]})"
    finally:
        torch.cuda.set_sync_debug_mode(0)
    print(f"info: rng=device mode={mode} fused forward: {verdict}")
sys.exit(0 if ok else 1)
EOF
}

stage_tests_cuda() {
  "$PY" -m pytest -q -p no:cacheprovider tests -m needs_cuda
}

stage_tests_fused() {
  if [ ! -f tests/test_fused.py ]; then
    echo "tests/test_fused.py is missing"
    return 1
  fi
  "$PY" -m pytest -q -p no:cacheprovider tests/test_fused.py
}

run_bench() {  # json shapes extra-args...
  local json=$1 shapes=$2
  shift 2
  rm -f "$json"
  # shellcheck disable=SC2086
  DSA_BENCH_DEVICES=${DSA_GPU_CHECK_BENCH_DEVICES:-cuda} DSA_BENCH_SHAPES="$shapes" "$PY" -m pytest $BENCH_COMMON_ARGS "$@" \
    benchmarks/test_bench_augment.py --benchmark-json="$json"
  local rc=$?
  if [ ! -s "$json" ]; then
    echo "no benchmark JSON written to $json"
    return 1
  fi
  return $rc
}

stage_bench_main() {
  # shellcheck disable=SC2086
  run_bench "$OUT_DIR/bench-main.json" 256x3x32x32 $BENCH_MAIN_ARGS
}

stage_bench_rest() {
  # shellcheck disable=SC2086
  run_bench "$OUT_DIR/bench-rest.json" 10x3x32x32,100x3x32x32,500x3x32x32,256x1x28x28 $BENCH_REST_ARGS
}

stage_report() {
  local jsons=()
  for f in "$OUT_DIR/bench-main.json" "$OUT_DIR/bench-rest.json"; do
    [ -s "$f" ] && jsons+=("$f")
  done
  if [ ${#jsons[@]} -eq 0 ]; then
    echo "no benchmark JSON in $OUT_DIR"
    return 1
  fi
  local ref=()
  [ -n "$REFERENCE" ] && ref=(--reference "$REFERENCE")
  "$PY" benchmarks/report.py "${jsons[@]}" "${ref[@]}" --require-reference \
    --output "$OUT_DIR/report.md" --brief >"$OUT_DIR/report-brief.md"
  local rc=$?
  echo "report.py exit status $rc; wrote $OUT_DIR/report.md and $OUT_DIR/report-brief.md"
  return $rc
}

export -f stage_env stage_build stage_check stage_tests_cuda stage_tests_fused run_bench \
  stage_bench_main stage_bench_rest stage_report

# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------

START=$(date +%s)
FAILED=0
SUMMARY=()

say() { echo "$*" | tee -a "$LOG"; }

run_stage() {  # name cap_s reserve_s: the stage's timeout is min(cap, budget left - reserve)
  local name=$1 cap=$2 reserve=$3
  if ! selected "$name"; then
    SUMMARY+=("$(printf '%-12s skipped' "$name")")
    return 0
  fi
  local left=$((BUDGET - ($(date +%s) - START) - reserve))
  local t=$cap
  [ "$left" -lt "$t" ] && t=$left
  if [ "$t" -lt 5 ]; then
    FAILED=1
    SUMMARY+=("$(printf '%-12s FAIL (no time left in the %ss budget)' "$name" "$BUDGET")")
    say "== [$name] not run: no time left in the ${BUDGET}s budget"
    return 0
  fi
  say "== [$name] $(date -u +%T) timeout ${t}s"
  local before t0 rc dt status
  before=$(wc -l <"$LOG")
  t0=$(date +%s)
  # SIGINT first: pytest then ends its session and pytest-benchmark still writes the JSON.
  timeout -s INT -k 15 "$t" bash -c "stage_${name//-/_}" >>"$LOG" 2>&1
  rc=$?
  dt=$(($(date +%s) - t0))
  if [ $rc -eq 0 ]; then
    status="ok"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    status="FAIL (timed out after ${t}s)"
    FAILED=1
  else
    status="FAIL (exit status $rc)"
    FAILED=1
  fi
  tail -n +"$((before + 1))" "$LOG" | tail -n 4 | sed 's/^/   | /'
  say "   -> [$name] $status in ${dt}s"
  SUMMARY+=("$(printf '%-12s %-36s %4ss' "$name" "$status" "$dt")")
}

say "gpu_check: out=$OUT_DIR python=$PY budget=${BUDGET}s stages=${ONLY:-all}${SKIP:+ (skip $SKIP)}"
run_stage env 30 0
run_stage build 330 120
run_stage check 60 100
run_stage tests-cuda 90 100
run_stage tests-fused 120 90
run_stage bench-main 120 30
run_stage bench-rest 240 25
run_stage report 30 0

{
  echo
  echo "== gpu_check summary ($(($(date +%s) - START))s, budget ${BUDGET}s; files in $OUT_DIR)"
  printf '  %s\n' "${SUMMARY[@]}"
  if [ $FAILED -ne 0 ]; then echo "gpu_check: FAILED (a stage failed; see $LOG)"; else echo "gpu_check: all stages ok"; fi
} | tee -a "$LOG"
# The table last: the end of the output is what a remote run returns.
if selected report && [ -s "$OUT_DIR/report-brief.md" ]; then
  echo
  cat "$OUT_DIR/report-brief.md"
fi
[ $FAILED -eq 0 ]
