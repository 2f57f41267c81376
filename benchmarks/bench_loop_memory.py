"""Peak CPU memory of one matching step: the batched and grouped class matching against the
per-class loop.

One step = the matching loss over 10 classes (CIFAR10 shapes 3x32x32), its backward to the
synthetic images and the SGD step on them, on the CPU. Peak = the largest running sum of the
tensor allocations and frees the torch profiler records (``profile_memory=True``) during the step,
above what was allocated before it (to the granularity of one op: an op's own net allocation
counts at its start).

    PYTHONPATH=. python benchmarks/bench_loop_memory.py --width 128 --real 256

A measurement script, not a test.
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from dsa_fast import ParamDiffAug
from dsa_fast.condense.batched import match_loss_batched, match_loss_grouped
from dsa_fast.condense.matching import match_loss
from dsa_fast.condense.networks import ConvNet

CLASSES = 10
STRATEGY = "color_crop_cutout_flip_scale_rotate"


def peak_bytes(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each op's own net allocation (children excluded) and the frees recorded outside any op, in
    # the order they started: a running sum whose maximum is the step's peak (to op granularity).
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    now = peak = 0
    for e in events:
        now += e.self_cpu_memory_usage
        peak = max(peak, now)
    return peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--real", type=int, default=256)
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    args = ap.parse_args()
    print(f"torch {torch.__version__}; ConvNet width {args.width}, {args.real} real images per class")
    for ipc in args.ipc:
        g = torch.Generator().manual_seed(0)
        reals = [torch.randn(args.real, 3, 32, 32, generator=g) for _ in range(CLASSES)]
        torch.manual_seed(0)
        net = ConvNet(3, CLASSES, (32, 32), width=args.width)
        row = {}
        rows = (("per-class loop", match_loss), ("batched (vmap)", match_loss_batched),
                ("grouped", match_loss_grouped), ("grouped, real chunk 1", lambda *a: match_loss_grouped(*a, real_chunk=1)))
        for name, loss_fn in rows:
            syn = torch.randn(CLASSES * ipc, 3, 32, 32, generator=g).requires_grad_(True)
            opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)

            def step():
                syns = [syn[c * ipc:(c + 1) * ipc] for c in range(CLASSES)]
                loss = loss_fn(net, reals, syns, list(range(CLASSES)), list(range(CLASSES)), STRATEGY,
                               ParamDiffAug(), "ours")
                opt.zero_grad(set_to_none=True)
                loss.backward(inputs=[syn])
                opt.step()

            step()  # warm-up: the optimiser's state exists before the measured step
            row[name] = peak_bytes(step)
        base = row["per-class loop"]
        print(f"ipc {ipc:3d}: peak MiB " + "  ".join(f"{k} {v / 2**20:.1f} ({v / base:.2f}x)" for k, v in row.items()),
              flush=True)


if __name__ == "__main__":
    main()
