#!/usr/bin/env bash
# The accuracy runs on a GPU: DSA at the published protocol (docs/semantics.md §5), ipc 1, 1000
# iterations, 20 evaluation models (1000 epochs each), via `python3 -m dsa_fast.condense`, for
#   mnist    MNIST         strategy color_crop_cutout_scale_rotate       (no flip for digits)
#   fashion  FashionMNIST  strategy color_crop_cutout_flip_scale_rotate
#
# First it builds the extension in place and stops with a message when dsa_fast has no CUDA kernels
# (tools/check_cuda_build.py). The jobs take longer than one call may: each call runs the unfinished
# jobs in order until its time budget is spent (build included), resuming a job from its checkpoint
# when its run folder has one, and stops cleanly before the budget ends (SIGINT via
# `timeout -s INT`; the iterations since the last checkpoint, at most --checkpoint-every, are redone
# next time). Call it again with the same run root to continue; a finished job only prints its results.
#
# usage: bash benchmarks/accuracy_gpu.sh [--data-path DIR] --run-root DIR [--budget SECONDS] [options]
#   --data-path DIR     a data folder with MNIST/raw/*.gz and FashionMNIST/raw/*.gz (torchvision
#                       layout; default: $DSA_FAST_DATA)
#   --run-root DIR      where the run folders live: DIR/mnist-ipc1, DIR/fashion-ipc1
#   --budget SECONDS    wall time this call may use, build and all jobs together (default 420)
#   --jobs a,b          which jobs, in order (default mnist,fashion)
#   --python PY         the Python with torch (default: $PYTHON, else python3)
#   --device DEV        (default cuda; another device skips the CUDA kernel check)
#   --seed N            (default 0)
#   --iterations N      (default 1000)   --eval-models N (default 20)   --eval-epochs N (default 1000)
#   --eval-every N      evaluate also every N iterations (default 0: only after the last, which is
#                       the published number; the official code also evaluates at 0 and 500)
#   --checkpoint-every N (default 10)
# Exit status: 0 every job is complete; 3 the budget ran out (call again); 1 a job failed or the
# extension has no CUDA kernels.
# Results: each run folder's summary.json (accuracy_mean/std over the evaluation models, and the
# random-real baseline) and metrics.jsonl; printed at the end of every call for the finished jobs.
set -uo pipefail

DATA=${DSA_FAST_DATA:-}
RUN_ROOT=""
BUDGET=420
JOBS="mnist,fashion"
PY=${PYTHON:-python3}
DEVICE=cuda
SEED=0
ITERATIONS=1000
EVAL_MODELS=20
EVAL_EPOCHS=1000
EVAL_EVERY=0
CKPT_EVERY=10
MARGIN=20   # seconds kept back: SIGINT this long before the budget ends
GRACE=15    # after SIGINT, SIGKILL this much later if the run has not stopped

die() { echo "accuracy_gpu: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "$1 needs a value"
  case "$1" in
    --data-path) DATA=$2 ;;
    --run-root) RUN_ROOT=$2 ;;
    --budget) BUDGET=$2 ;;
    --jobs) JOBS=$2 ;;
    --python) PY=$2 ;;
    --device) DEVICE=$2 ;;
    --seed) SEED=$2 ;;
    --iterations) ITERATIONS=$2 ;;
    --eval-models) EVAL_MODELS=$2 ;;
    --eval-epochs) EVAL_EPOCHS=$2 ;;
    --eval-every) EVAL_EVERY=$2 ;;
    --checkpoint-every) CKPT_EVERY=$2 ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
  shift 2
done
[ -n "$DATA" ] || die "no data folder: pass --data-path DIR or set DSA_FAST_DATA"
[ -n "$RUN_ROOT" ] || die "--run-root is required"
START=$SECONDS
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
DATA=$(abspath "$DATA")
RUN_ROOT=$(abspath "$RUN_ROOT")
case "$PY" in */*) PY=$(abspath "$PY") ;; esac
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RUN_ROOT" || die "cannot create $RUN_ROOT"

# The extension, built in place against this machine's torch (a no-op when up to date; every core unless MAX_JOBS says otherwise).
echo "accuracy_gpu: building the extension ($(date -u +%T))"
(cd "$ROOT" && CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" "$PY" setup.py -q build_ext --inplace \
  --build-temp build/gpu) || die "the extension did not build (see above)"
if [[ "$DEVICE" == cuda* ]]; then
  (cd "$ROOT" && "$PY" tools/check_cuda_build.py) || die "STOP: dsa_fast has no CUDA kernels (dsa_fast.has_ops() is False or the ops have no CUDA kernel); the runs would not use the fused kernels"
fi
LAUNCH='import runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = ["dsa_fast.condense"] + sys.argv[1:]
runpy.run_module("dsa_fast.condense", run_name="__main__", alter_sys=True)'

job_dataset() { case "$1" in mnist) echo MNIST ;; fashion) echo FashionMNIST ;; *) return 1 ;; esac; }
job_strategy() { case "$1" in mnist) echo color_crop_cutout_scale_rotate ;; fashion) echo color_crop_cutout_flip_scale_rotate ;; esac; }

is_done() { [ -f "$1/summary.json" ]; }

print_result() {
  local dir=$1
  echo "== $dir: summary.json"
  cat "$dir/summary.json"; echo
  if [ -f "$dir/metrics.jsonl" ]; then echo "== $dir: metrics.jsonl"; cat "$dir/metrics.jsonl"; fi
}

status=0
IFS=',' read -r -a JOB_LIST <<< "$JOBS"
for job in "${JOB_LIST[@]}"; do
  dataset=$(job_dataset "$job") || die "unknown job $job (expected mnist, fashion)"
  [ -f "$DATA/$dataset/raw/train-images-idx3-ubyte.gz" ] || die "$DATA/$dataset/raw/ has no dataset files"
  dir="$RUN_ROOT/$job-ipc1"
  if is_done "$dir"; then
    echo "accuracy_gpu: $job: complete"
    continue
  fi
  left=$(( BUDGET - (SECONDS - START) - MARGIN ))
  if [ "$left" -lt 60 ]; then
    echo "accuracy_gpu: $job: not started, $left s left in the budget; call again"
    status=3
    break
  fi
  if [ -f "$dir/checkpoint.pt" ] && [ -f "$dir/config.json" ]; then
    echo "accuracy_gpu: $job: resuming $dir ($left s)"
    cmd=("$PY" -m dsa_fast.condense --resume "$dir" --device "$DEVICE")
  else
    if [ -e "$dir" ]; then  # started but interrupted before its first checkpoint: start again
      stale="$dir.stale-$(date +%s)"
      echo "accuracy_gpu: $job: $dir has no checkpoint; moved to $stale"
      mv "$dir" "$stale" || die "cannot move $dir aside"
    fi
    echo "accuracy_gpu: $job: starting $dir ($left s)"
    cmd=("$PY" -m dsa_fast.condense --dataset "$dataset" --data-path "$DATA" --ipc 1 --iterations "$ITERATIONS"
         --eval-models "$EVAL_MODELS" --eval-epochs "$EVAL_EPOCHS" --eval-every "$EVAL_EVERY"
         --strategy "$(job_strategy "$job")" --out "$dir" --checkpoint-every "$CKPT_EVERY"
         --device "$DEVICE" --seed "$SEED" --no-progress)
  fi
  echo "+ ${cmd[*]}"
  # NB: a background job of a non-interactive shell starts with SIGINT ignored, and Python keeps it
  # ignored then (timeout's SIGINT would do nothing): the launcher puts Python's handler back.
  timeout -s INT -k "$GRACE" "$left" "${cmd[0]}" -c "$LAUNCH" "${cmd[@]:3}" < /dev/null
  rc=$?
  if is_done "$dir"; then
    echo "accuracy_gpu: $job: complete (rc $rc)"
  elif [ $rc -eq 124 ] || [ $rc -eq 130 ] || [ $rc -eq 137 ]; then
    echo "accuracy_gpu: $job: stopped at the budget (rc $rc); call again to resume from $dir/checkpoint.pt"
    status=3
    break
  else
    echo "accuracy_gpu: $job: failed (rc $rc)" >&2
    status=1
    break
  fi
done

echo "accuracy_gpu: $(( SECONDS - START )) s used of $BUDGET"
for job in "${JOB_LIST[@]}"; do
  dir="$RUN_ROOT/$job-ipc1"
  if is_done "$dir"; then print_result "$dir"; else echo "== $dir: not complete"; fi
done
exit $status
