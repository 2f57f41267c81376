#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU, torch (CUDA build) for its python3,
# pytest + pytest-benchmark, and nvcc; no network needed. Everything it uses is in the repository:
# it builds the extension in place, checks the CUDA kernels (and stops when they are missing), runs
# every CUDA test once, times the CUDA benchmarks and the condensation loop's iterations, and prints
# the report against the official H200 timings (benchmarks/official_h200.json). Files under
# ${OUT:-benchmarks/out}:
#   gpu_check.log    every stage's output, in order, with a status line per stage
#   bench-main.json  pytest-benchmark JSON, shape 256x3x32x32 (the targets' shape)
#   bench-rest.json  pytest-benchmark JSON, the other four shapes
#   loop-time.md     seconds and peak memory per loop iteration at ipc 1/10/50 (--compile off, on)
#   report.md        the full markdown report (benchmarks/report.py)
#   report-brief.md  the short report, also printed last
# Time: each stage has its own budget (see --dry-run), 450 s in all, so the whole script stays
# under 8 minutes; time a stage leaves unused goes to the stages after it. A stage that runs out of
# its time is stopped and reported as CUT. Exit status: 0 when every selected stage ran and passed;
# 1 when a stage failed (a failure of env, build or check stops the run: nothing after them can
# work); 3 when none failed but a stage was cut or not reached for time; 2 for bad arguments.
# A missed performance target is reported in the table, not counted as a failure.
set -uo pipefail

STAGES="env build check tests-cuda bench-main bench-rest loop-time report"
# Seconds per stage; they sum to the default budget. env: a cold start of CUDA on a fresh machine
# (torch import, the context, cuDNN) takes tens of seconds. build: the cold CUDA build for the
# visible GPU's architecture, 8 translation units that ninja compiles side by side, so about the
# slowest of them plus the link; never yet measured on the GPU machine, so the budget is generous
# (a build that ends early hands its time to the stages after it). loop-time runs its
# settings in order (--compile off at ipc 1, 10, 50, then on) and skips those that would start
# after its budget.
declare -A CAP=([env]=60 [build]=220 [check]=25 [tests-cuda]=75 [bench-main]=25 [bench-rest]=15 [loop-time]=20
  [report]=10)
CRITICAL=" env build check "

usage() {
  cat <<EOF
usage: bash benchmarks/gpu_check.sh [options]
  --out DIR          where to write logs, JSON and reports (default: \$OUT, else benchmarks/out)
  --python PY        the Python with torch (default: \$PYTHON, else python3)
  --budget SECONDS   overall time budget (default: 450); the stage budgets are scaled to it
  --reference FILE   the official timings JSON (default: benchmarks/official_h200.json)
  --data DIR         the original MNIST/FashionMNIST files (sets DSA_FAST_DATA for the tests;
                     without it the tests that need them are skipped)
  --only S1,S2       run only these stages; --skip S1,S2 skips them
                     stages: ${STAGES// /, }
  --dry-run          print the plan (stages, time budgets, commands) and exit
  -h, --help         this text
Environment: DSA_GPU_CHECK_BENCH_DEVICES (default cuda; 'cpu' runs the benchmark stages on the CPU,
to try the flow without a GPU), DSA_BENCH_* (benchmarks/conftest.py).
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

OUT_DIR=${OUT:-$ROOT/benchmarks/out}
PY=${PYTHON:-python3}
BUDGET=450
REFERENCE=""
DATA=""
ONLY=""
SKIP=""
DRY_RUN=0

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "gpu_check: $1 needs a value" >&2; usage >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) need_value "$@"; OUT_DIR=$2; shift 2 ;;
    --python) need_value "$@"; PY=$2; shift 2 ;;
    --budget) need_value "$@"; BUDGET=$2; shift 2 ;;
    --reference) need_value "$@"; REFERENCE=$2; shift 2 ;;
    --data) need_value "$@"; DATA=$2; shift 2 ;;
    --only) need_value "$@"; ONLY=$2; shift 2 ;;
    --skip) need_value "$@"; SKIP=$2; shift 2 ;;
    --out=*) OUT_DIR=${1#*=}; shift ;;
    --python=*) PY=${1#*=}; shift ;;
    --budget=*) BUDGET=${1#*=}; shift ;;
    --reference=*) REFERENCE=${1#*=}; shift ;;
    --data=*) DATA=${1#*=}; shift ;;
    --only=*) ONLY=${1#*=}; shift ;;
    --skip=*) SKIP=${1#*=}; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
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

# The selected stages' budgets, scaled so that they sum to BUDGET.
CAP_SUM=0
for s in $STAGES; do selected "$s" && CAP_SUM=$((CAP_SUM + CAP[$s])); done
declare -A STAGE_BUDGET
for s in $STAGES; do
  STAGE_BUDGET[$s]=0
  if selected "$s" && [ "$CAP_SUM" -gt 0 ]; then STAGE_BUDGET[$s]=$((CAP[$s] * BUDGET / CAP_SUM)); fi
done
reserved_after() {  # the budgets of the stages after $1
  local after=0 s total=0
  for s in $STAGES; do
    [ $after -eq 1 ] && total=$((total + STAGE_BUDGET[$s]))
    [ "$s" = "$1" ] && after=1
  done
  echo $total
}

# Paths given on the command line are relative to where the script was called from.
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
OUT_DIR=$(abspath "$OUT_DIR")
if [ -n "$REFERENCE" ]; then REFERENCE=$(abspath "$REFERENCE"); else REFERENCE="$ROOT/benchmarks/official_h200.json"; fi
[ -n "$DATA" ] && DATA=$(abspath "$DATA")
case "$PY" in */*) PY=$(abspath "$PY") ;; esac
cd "$ROOT" || exit 2

if [ -n "$DATA" ]; then
  [ -d "$DATA" ] || { echo "gpu_check: --data $DATA is not a directory" >&2; exit 2; }
  export DSA_FAST_DATA="$DATA"
fi

describe() {  # what a stage runs, for the plan and the log
  case "$1" in
    env) echo "nvidia-smi; torch, CUDA and GPU as $PY sees them; pytest-benchmark; nvcc (CUDA_HOME, /usr/local/cuda or PATH) and its version against torch's" ;;
    build) echo "nvcc version check, then $PY setup.py -q build_ext --inplace --build-temp build/gpu (CUDA_HOME=${CUDA_HOME:-the nvcc found}, every core)" ;;
    check) echo "$PY tools/check_cuda_build.py (has_ops and CPU + CUDA kernels, else STOP); fused vs reference on the GPU" ;;
    tests-cuda) echo "$PY -m pytest -q tests -m needs_cuda (every CUDA test once; data tests: ${DSA_FAST_DATA:-skipped, no --data})" ;;
    bench-main) echo "pytest benchmarks/test_bench_augment.py on ${DSA_GPU_CHECK_BENCH_DEVICES:-cuda}, 256x3x32x32 -> bench-main.json" ;;
    bench-rest) echo "pytest benchmarks/test_bench_augment.py on ${DSA_GPU_CHECK_BENCH_DEVICES:-cuda}, the other four shapes -> bench-rest.json" ;;
    loop-time) echo "$PY benchmarks/bench_loop_iteration.py --device ${DSA_GPU_CHECK_BENCH_DEVICES:-cuda} --ipc 1 10 50 (s and peak memory per iteration) -> loop-time.md" ;;
    report) echo "$PY benchmarks/report.py --reference ${REFERENCE#"$ROOT"/} -> report.md, report-brief.md" ;;
  esac
}

if [ $DRY_RUN -eq 1 ]; then
  echo "gpu_check plan: budget ${BUDGET}s, out $OUT_DIR"
  for s in $STAGES; do
    if selected "$s"; then
      printf '  %-11s %4ss  %s\n' "$s" "${STAGE_BUDGET[$s]}" "$(describe "$s")"
    else
      printf '  %-11s  skip\n' "$s"
    fi
  done
  echo "A stage may use the time left minus the budgets of the stages after it."
  exit 0
fi

mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"

export ROOT OUT_DIR PY REFERENCE
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# The CUDA toolkit: CUDA_HOME when it holds nvcc, else /usr/local/cuda, else the nvcc on PATH (its
# real location's parent folder, as torch's cpp_extension finds it). Empty when there is none.
find_cuda_home() {
  local nvcc
  if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then echo "$CUDA_HOME"; return 0; fi
  if [ -x /usr/local/cuda/bin/nvcc ]; then echo /usr/local/cuda; return 0; fi
  nvcc=$(command -v nvcc 2>/dev/null) || return 1
  nvcc=$(readlink -f "$nvcc")
  dirname "$(dirname "$nvcc")"
}
if [ -n "${CUDA_HOME:-}" ] && [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  echo "gpu_check: CUDA_HOME=$CUDA_HOME has no bin/nvcc; looking in /usr/local/cuda and on PATH"
fi
CUDA_HOME=$(find_cuda_home || true)
export CUDA_HOME

# nvcc's CUDA major version must be torch's (torch.utils.cpp_extension refuses another major
# version at the first compile): one clear line and a failure before anything is compiled.
check_nvcc() {
  local nvcc_release torch_cuda
  if [ -z "$CUDA_HOME" ]; then
    echo "FAIL: no nvcc: not in \$CUDA_HOME/bin, /usr/local/cuda/bin, nor on PATH; install the CUDA toolkit or set CUDA_HOME"
    return 1
  fi
  nvcc_release=$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)
  torch_cuda=$("$PY" -c "import torch; print(torch.version.cuda or '')") || return 1
  echo "nvcc: $CUDA_HOME/bin/nvcc, CUDA ${nvcc_release:-unknown}; torch built with CUDA ${torch_cuda:-none}"
  if [ -z "$torch_cuda" ]; then
    echo "FAIL: $PY's torch is not a CUDA build"
    return 1
  fi
  if [ -z "$nvcc_release" ]; then
    echo "FAIL: could not read a release number from $CUDA_HOME/bin/nvcc --version"
    return 1
  fi
  if [ "${nvcc_release%%.*}" != "${torch_cuda%%.*}" ]; then
    echo "FAIL: nvcc is CUDA $nvcc_release but torch was built with CUDA $torch_cuda: the major versions must match (set CUDA_HOME to a CUDA ${torch_cuda%%.*}.x toolkit)"
    return 1
  fi
}

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
  echo "official timings: $REFERENCE; data for the data tests: ${DSA_FAST_DATA:-none (those tests skip)}"
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
  check_nvcc || rc=1
  return $rc
}

stage_build() {
  # MAX_JOBS unset: ninja uses every core. Built in place against this machine's torch.
  unset MAX_JOBS
  check_nvcc || return 1
  echo "CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-(from the visible GPU)}"
  "$PY" setup.py -q build_ext --inplace --build-temp build/gpu || return 1
  ls -l dsa_fast/_C*.so
}

stage_check() {
  "$PY" tools/check_cuda_build.py || {
    echo "FAIL: dsa_fast.has_ops() is False or the ops have no CUDA kernel (an extension built without CUDA?)"
    return 1
  }
  "$PY" - <<'EOF'
import sys

import torch

from dsa_fast import DiffAugment, ParamDiffAug

FULL = "color_crop_cutout_flip_scale_rotate"
if not torch.cuda.is_available():
    print("FAIL: torch.cuda.is_available() is False")
    sys.exit(1)

# One quick comparison per mode on the GPU (the tests do the thorough job): fused vs reference,
# output and input gradient under a random upstream gradient, relative to the reference's norm.
ok = True
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
  # tests/conftest.py marks every test that runs on CUDA needs_cuda (also the "cuda" rows of tests
  # parametrised over the devices); the CPU rows are the CPU suite's job.
  "$PY" -m pytest -q -p no:cacheprovider tests -m needs_cuda
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

stage_loop_time() {
  # Settings that would start after two thirds of the stage's time are skipped (printed as not
  # run), so the rows that finished are kept in loop-time.md.
  "$PY" benchmarks/bench_loop_iteration.py --device "${DSA_GPU_CHECK_BENCH_DEVICES:-cuda}" --ipc 1 10 50 \
    --warmup 1 --iterations 2 --budget $((STAGE_SECONDS * 2 / 3)) | tee "$OUT_DIR/loop-time.md"
  return "${PIPESTATUS[0]}"
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
  "$PY" benchmarks/report.py "${jsons[@]}" --reference "$REFERENCE" --require-reference \
    --output "$OUT_DIR/report.md" --brief >"$OUT_DIR/report-brief.md"
  local rc=$?
  echo "report.py exit status $rc; wrote $OUT_DIR/report.md and $OUT_DIR/report-brief.md"
  return $rc
}

export -f check_nvcc stage_env stage_build stage_check stage_tests_cuda run_bench stage_bench_main stage_bench_rest stage_loop_time \
  stage_report

# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------

START=$(date +%s)
FAILED=0    # a stage failed
CUT=0       # a stage was cut, or not reached, for time
STOPPED=""  # the critical stage whose failure ended the run
SUMMARY=()

say() { echo "$*" | tee -a "$LOG"; }

run_stage() {
  local name=$1
  if ! selected "$name"; then
    SUMMARY+=("$(printf '%-11s skipped' "$name")")
    return 0
  fi
  if [ -n "$STOPPED" ]; then
    SUMMARY+=("$(printf '%-11s NOT RUN (stopped: %s did not pass)' "$name" "$STOPPED")")
    return 0
  fi
  # The time left minus what the later stages' budgets reserve: at least this stage's own budget
  # when the earlier stages kept to theirs.
  local t=$((BUDGET - ($(date +%s) - START) - $(reserved_after "$name")))
  if [ "$t" -lt 5 ]; then
    CUT=1
    SUMMARY+=("$(printf '%-11s NOT RUN (no time left in the %ss budget)' "$name" "$BUDGET")")
    say "== [$name] not run: no time left in the ${BUDGET}s budget"
    return 0
  fi
  say "== [$name] $(date -u +%T) budget ${t}s: $(describe "$name")"
  local before t0 rc dt status
  before=$(wc -l <"$LOG")
  t0=$(date +%s)
  # SIGINT first: pytest then ends its run and pytest-benchmark still writes the JSON.
  STAGE_SECONDS=$t timeout -s INT -k 15 "$t" bash -c "stage_${name//-/_}" >>"$LOG" 2>&1
  rc=$?
  dt=$(($(date +%s) - t0))
  if [ $rc -eq 0 ]; then
    status="ok"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    status="CUT (out of its ${t}s budget)"
    CUT=1
  else
    status="FAIL (exit status $rc)"
    FAILED=1
  fi
  tail -n +"$((before + 1))" "$LOG" | tail -n 4 | sed 's/^/   | /'
  say "   -> [$name] $status in ${dt}s"
  SUMMARY+=("$(printf '%-11s %-32s %4ss' "$name" "$status" "$dt")")
  if [ "$status" != ok ] && [[ "$CRITICAL" == *" $name "* ]]; then
    STOPPED=$name
    FAILED=1
    say "gpu_check: STOP: [$name] did not pass and every later stage needs it (see $LOG)"
    if [ "$name" = check ]; then
      say "gpu_check: the dsa_fast CUDA kernels are not available: dsa_fast.has_ops() is False, no CUDA kernel is registered, or no GPU is visible"
    fi
  fi
}

say "gpu_check: out=$OUT_DIR python=$PY budget=${BUDGET}s stages=${ONLY:-all}${SKIP:+ (skip $SKIP)}"
for s in $STAGES; do run_stage "$s"; done

{
  echo
  echo "== gpu_check summary ($(($(date +%s) - START))s, budget ${BUDGET}s; files in $OUT_DIR)"
  printf '  %s\n' "${SUMMARY[@]}"
  if [ $FAILED -ne 0 ]; then
    echo "gpu_check: FAILED (see $LOG)"
  elif [ $CUT -ne 0 ]; then
    echo "gpu_check: INCOMPLETE: every stage that ran passed, but a stage was cut or not reached for time"
  else
    echo "gpu_check: all stages ran and passed"
  fi
} | tee -a "$LOG"
# The table last: the end of the output is what a remote run returns.
if selected report && [ -s "$OUT_DIR/report-brief.md" ]; then
  echo
  cat "$OUT_DIR/report-brief.md"
fi
if [ $FAILED -ne 0 ]; then exit 1; fi
if [ $CUT -ne 0 ]; then exit 3; fi
exit 0
