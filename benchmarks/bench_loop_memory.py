"""Peak memory of one matching step: the loop's step against the per-class loop, the batched
and the grouped class matching.

One step = the matching loss over 10 classes (CIFAR10 shapes 3x32x32), its gradient to the
synthetic images and the SGD step on them. Rows:
- ``per-class loop``: the official structure, ``matching.match_loss`` + ``backward`` + torch.optim;
- ``batched (vmap)``: ``batched.match_loss_batched`` (vmapped over classes) + ``backward`` + torch.optim;
- ``grouped`` (every class per real pass, the CUDA setting) and ``grouped, real chunk 1`` (one class
  per real pass, the CPU's ``--matching grouped``): ``batched.match_loss_grouped``, likewise;
- ``loop step``: ``steps.MatchingSteps.outer_step`` as the run takes it on the device (rng='device';
  ``match_loss_auto``: per-class matching on the CPU, grouped on CUDA), eager; with ``--compile``, also compiled
  (``loop step, compiled``; measured after its compilation).
Peak on the CPU: the largest running sum of the tensor allocations and frees the torch profiler
records (``profile_memory=True``) during the step, above what was allocated before it (to the
granularity of one op: an op's own net allocation counts at its start). On CUDA:
``torch.cuda.max_memory_allocated`` during the step above what was allocated before it.

    PYTHONPATH=. python benchmarks/bench_loop_memory.py --width 128 --real 256 [--device cuda --compile]

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
from dsa_fast.condense.steps import MatchingSteps

CLASSES = 10
LOSSES = {"per-class loop": match_loss, "batched (vmap)": match_loss_batched, "grouped": match_loss_grouped,
          "grouped, real chunk 1": lambda *a: match_loss_grouped(*a, real_chunk=1)}
STRATEGY = "color_crop_cutout_flip_scale_rotate"


def peak_bytes(fn, device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
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
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="also the compiled loop step")
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}; {device}; ConvNet width {args.width}, {args.real} real images per class")
    names = list(LOSSES) + ["loop step"] + (["loop step, compiled"] if args.compile else [])
    for ipc in args.ipc:
        g = torch.Generator().manual_seed(0)
        reals = [torch.randn(args.real, 3, 32, 32, generator=g).to(device) for _ in range(CLASSES)]
        torch.manual_seed(0)
        net = ConvNet(3, CLASSES, (32, 32), width=args.width).to(device)
        row = {}
        for name in names:
            syn = torch.randn(CLASSES * ipc, 3, 32, 32, generator=g).to(device).requires_grad_(True)
            opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
            if name.startswith("loop step"):
                steps = MatchingSteps(net, syn, opt, num_classes=CLASSES, ipc=ipc, strategy=STRATEGY,
                                      param=ParamDiffAug(rng="device"), metric="ours", lr_net=0.01, batch_train=256,
                                      compile="on" if "compiled" in name else "off")
                key = torch.zeros((), dtype=torch.int64, device=device)

                def step():
                    steps.outer_step(reals, key)
            else:
                loss_fn = LOSSES[name]

                def step():
                    syns = [syn[c * ipc:(c + 1) * ipc] for c in range(CLASSES)]
                    loss = loss_fn(net, reals, syns, list(range(CLASSES)), list(range(CLASSES)), STRATEGY,
                                   ParamDiffAug(), "ours")
                    opt.zero_grad(set_to_none=True)
                    loss.backward(inputs=[syn])
                    opt.step()

            for _ in range(3 if "compiled" in name else 1):  # warm-up: optimiser state, compilation, graphs
                step()
            row[name] = peak_bytes(step, device)
        base = row["per-class loop"]
        print(f"ipc {ipc:3d}: peak MiB " + "  ".join(f"{n} {row[n] / 2**20:8.1f} ({row[n] / base:.2f}x)"
                                                    for n in names), flush=True)


if __name__ == "__main__":
    main()
