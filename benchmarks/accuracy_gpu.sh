#!/usr/bin/env bash
# The prepared accuracy runs for the GPU machine (issue 5, part 5): DSA at the published protocol,
# ipc 1, 1000 iterations, 20 evaluation models (1000 epochs each), for
#   mnist    MNIST         strategy color_crop_cutout_scale_rotate       (no flip for digits)
#   fashion  FashionMNIST  strategy color_crop_cutout_flip_scale_rotate
# via `python3 -m dsa_fast.condense`.
#
# GPU time comes in slices (15 minutes per session): each call runs the unfinished jobs in order
# until the time budget is spent, resuming a job from its checkpoint when its run folder has one,
# and stops cleanly before the budget runs out (SIGINT via `timeout -s INT`; what was done since the
# last checkpoint, at most --checkpoint-every iterations, is redone next time). Call it again with
# the same run root in the next slice; a finished job only prints its results.
#
# The ../shared/data beside a checkout does not travel to the GPU machine: copy the dataset folders
# into a git-ignored folder of the repository, carry it, and pass it with --data-path, e.g.
#   here:   mkdir -p data_gpu && cp -r ../shared/data/MNIST ../shared/data/FashionMNIST data_gpu/
#   device: bash benchmarks/accuracy_gpu.sh --data-path data_gpu --run-root runs_gpu --budget 780
#           (carry data_gpu and runs_gpu; $OUT/... also works as run root if the runs must come back:
#           then copy the run folders back into runs_gpu before the next slice)
#
# usage: bash benchmarks/accuracy_gpu.sh --data-path DIR --run-root DIR --budget SECONDS [options]
#   --data-path DIR     root with MNIST/raw/*.gz and FashionMNIST/raw/*.gz (torchvision layout)
#   --run-root DIR      where the run folders live: DIR/mnist-ipc1, DIR/fashion-ipc1
#   --budget SECONDS    wall time this call may use, all jobs together (default 780)
#   --jobs a,b          which jobs, in order (default mnist,fashion)
#   --python PY         the Python with torch (default: $PYTHON, else python3)
#   --device DEV        (default cuda)
#   --seed N            (default 0)
#   --iterations N      (default 1000)   --eval-models N (default 20)   --eval-epochs N (default 1000)
#   --eval-every N      evaluate also every N iterations (default 0: only after the last, which is
#                       the published number; the official code also evaluates at 0 and 500)
#   --checkpoint-every N (default 10)
# Exit status: 0 every job is complete; 3 the budget ran out (call again); 1 a job failed.
# Results: each run folder's summary.json (accuracy_mean/std over the evaluation models, and the
# random-real baseline) and metrics.jsonl; printed at the end of every call for the finished jobs.
set -uo pipefail

DATA=""
RUN_ROOT=""
BUDGET=780
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
[ -n "$DATA" ] || die "--data-path is required"
[ -n "$RUN_ROOT" ] || die "--run-root is required"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RUN_ROOT" || die "cannot create $RUN_ROOT"
START=$SECONDS
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
