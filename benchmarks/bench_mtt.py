"""One trajectory-matching iteration (``--method mtt``): memory and time of the plain unroll
against the checkpointed one, and dispatched ops against the reference code's structure.

One iteration = ``syn_steps`` student steps (unseeded DiffAugment, cross-entropy, a gradient with
the graph kept), the normalised parameter distance, its backward to the images and α, and the two
SGD steps (images, α). CIFAR10 shapes (3x32x32, 10 classes), ipc 1, batch_syn the whole set.

``--rows memory``: at N = 10, 20, 40 student steps, ConvNet width ``--width``, the plain unroll
(every step's activations kept for the backward) and ``--mtt-checkpoint on`` (each step's forward
recomputed in the backward, ``torch.utils.checkpoint``): peak memory (``bench_loop_memory.peak_bytes``:
the torch profiler's allocations on the CPU, ``max_memory_allocated`` on CUDA) and the median wall
time of ``--repeats`` iterations (after one warm-up).

``--rows ops``: dispatched aten ops of one iteration (a TorchDispatchMode: every op that reaches a
kernel; and without views and other metadata-only ops, which launch nothing on a GPU:
``bench_loop_ops.is_metadata_op``), N = 20, for
  dsa_fast    the iteration as ``--method mtt`` runs it (``mtt.mtt_loss``, DiffAugment one op call),
  reference   the same iteration as the reference code structures it: the functional flat-vector
              network and, per step, DiffAugment of the official form (``backend='reference'``:
              one aten op per tensor operation of the official code).
The network's op count does not depend on its width; in 'S' mode the reference's count depends on
which families the draws pick.

    PYTHONPATH=. python benchmarks/bench_mtt.py --rows memory --width 32
    PYTHONPATH=. python benchmarks/bench_mtt.py --rows ops

A measurement script, not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_evaluate import CountOps  # noqa: E402
from bench_loop_memory import peak_bytes  # noqa: E402
from bench_loop_ops import is_metadata_op  # noqa: E402

from dsa_fast import DiffAugment, ParamDiffAug  # noqa: E402
from dsa_fast.condense.functional import FlatNetwork  # noqa: E402
from dsa_fast.condense.methods.mtt import mtt_loss  # noqa: E402
from dsa_fast.condense.networks import ConvNet  # noqa: E402

STRATEGY = "color_crop_cutout_flip_scale_rotate"
CLASSES = 10
ARGS = argparse.Namespace(aug_mode="S")  # the command line's settings the iteration reads


def _problem(width: int, ipc: int, device: torch.device):
    torch.manual_seed(0)
    fnet = FlatNetwork(ConvNet(3, CLASSES, (32, 32), width=width).to(device))
    start = fnet.flatten()
    target = start + 0.01 * torch.randn_like(start)
    images = torch.randn(CLASSES * ipc, 3, 32, 32, device=device).requires_grad_(True)
    labels = torch.arange(CLASSES, device=device).repeat_interleave(ipc)
    syn_lr = torch.tensor(0.01, device=device).requires_grad_(True)
    opt_img = torch.optim.SGD([images], lr=1000.0, momentum=0.5)
    opt_lr = torch.optim.SGD([syn_lr], lr=1e-5, momentum=0.5)
    return fnet, start, target, images, labels, syn_lr, opt_img, opt_lr


def _iteration(problem, steps: int, checkpointed: bool, backend: str):
    """One iteration; ``backend`` None: no augmentation (to count what the augmentation adds)."""
    fnet, start, target, images, labels, syn_lr, opt_img, opt_lr = problem
    param = ParamDiffAug(align_corners=True, aug_mode=ARGS.aug_mode)

    def augment(x):
        return x if backend is None else DiffAugment(x, STRATEGY, seed=-1, param=param, backend=backend)

    def step():
        loss = mtt_loss(fnet, start, target, images, labels, syn_lr, syn_steps=steps, batch_syn=images.shape[0],
                        augment=augment, checkpointed=checkpointed)
        opt_img.zero_grad(set_to_none=True)
        opt_lr.zero_grad(set_to_none=True)
        loss.backward(inputs=[images, syn_lr])
        opt_img.step()
        opt_lr.step()

    return step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_rows(args, device) -> None:
    print(f"| N | plain peak | checkpointed peak | ratio | plain s/it | checkpointed s/it | time ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for steps in args.steps:
        peaks, times = {}, {}
        for checkpointed in (False, True):
            problem = _problem(args.width, args.ipc, device)
            step = _iteration(problem, steps, checkpointed, "auto")
            step()  # warm-up
            peaks[checkpointed] = peak_bytes(step, device)
            ts = []
            for _ in range(args.repeats):
                _sync(device)
                t0 = time.perf_counter()
                step()
                _sync(device)
                ts.append(time.perf_counter() - t0)
            times[checkpointed] = statistics.median(ts)
        mib = {k: v / 2**20 for k, v in peaks.items()}
        print(f"| {steps} | {mib[False]:.1f} MiB | {mib[True]:.1f} MiB | {mib[True] / mib[False]:.2f}x | "
              f"{times[False]:.3f} | {times[True]:.3f} | {times[True] / times[False]:.2f}x |", flush=True)


def ops_rows(args, device) -> None:
    counts = {}
    for name, backend in (("dsa_fast", "auto"), ("reference", "reference"), ("none", None)):
        step = _iteration(_problem(args.width, args.ipc, device), args.ops_steps, False, backend)
        step()  # warm-up (lazy initialisations are not part of an iteration)
        with CountOps() as c:
            step()
        total = sum(c.ops.values())
        views = sum(n for f, n in c.ops.items() if is_metadata_op(f))
        counts[name] = (total, total - views)
    (a, an), (b, bn), (z, zn) = counts["dsa_fast"], counts["reference"], counts["none"]
    print(f"N = {args.ops_steps}, ipc {args.ipc}, aug_mode {args.aug_mode}: dispatched ops per iteration "
          f"(the augmentation's share: the count minus that of the same iteration without augmentation)")
    print("| count | reference structure | dsa_fast | ratio | augmentation: reference | augmentation: dsa_fast |")
    print("|---|---:|---:|---:|---:|---:|")
    for what, (r, d, n) in (("all ops", (b, a, z)), ("non-view ops", (bn, an, zn))):
        print(f"| {what} | {r} | {d} | {r / d:.2f}x | {r - n} ({(r - n) / args.ops_steps:.1f} per step) | "
              f"{d - n} ({(d - n) / args.ops_steps:.1f} per step) |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", choices=("memory", "ops"), nargs="+", default=["memory", "ops"])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--ops-steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--aug-mode", choices=("S", "M"), default="S",
                   help="DiffAugment's aug_mode (S: one family per call, the published setting)")
    args = p.parse_args()
    ARGS.aug_mode = args.aug_mode
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, width {args.width}, ipc {args.ipc}, threads {args.threads}")
    if "ops" in args.rows:
        ops_rows(args, device)
    if "memory" in args.rows:
        memory_rows(args, device)


if __name__ == "__main__":
    main()
