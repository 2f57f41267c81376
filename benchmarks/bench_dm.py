"""Seconds per distribution-matching iteration: ``dm_loss`` (every class in one forward per side,
one sampled transform per class) against the per-class loop written literally from the algorithm
(per class: two DiffAugment calls with the class's seed, two embeddings), side by side in one
process, alternating, on MNIST shapes (10 classes, 1x28x28), ConvNet (width 128, instance norm).

One iteration = what ``methods.DistributionMatching`` does: a fresh network with frozen
parameters, the loss, its backward to the synthetic images, one SGD step on them. Random images
(the cost does not depend on their values); new seeds every iteration.

    PYTHONPATH=. python benchmarks/bench_dm.py                      # ipc 1, 10, 50; 1 warm-up, 3 repeats
    PYTHONPATH=. python benchmarks/bench_dm.py --ipc 10 --repeats 5 --width 32 --batch-real 64
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from dsa_fast import DiffAugment, ParamDiffAug, has_ops
from dsa_fast.condense.dm import dm_loss
from dsa_fast.condense.networks import get_network

CLASSES = 10
STRATEGY = "color_crop_cutout_flip_scale_rotate"


def literal_loss(net, reals, syns, seeds, param):
    loss = torch.zeros(())
    for real, syn, seed in zip(reals, syns, seeds):
        img_real = DiffAugment(real, STRATEGY, seed=seed, param=param)
        img_syn = DiffAugment(syn, STRATEGY, seed=seed, param=param)
        output_real = net.embed(img_real).detach()
        output_syn = net.embed(img_syn)
        loss = loss + torch.sum((torch.mean(output_real, dim=0) - torch.mean(output_syn, dim=0)) ** 2)
    return loss


def iteration(loss_fn, model, syn, opt, reals, ipc, seeds, param):
    net = get_network(model, 1, CLASSES, (28, 28))
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    syns = [syn[c * ipc:(c + 1) * ipc] for c in range(CLASSES)]
    loss = loss_fn(net, reals, syns, seeds, param)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch-real", type=int, default=256)
    args = ap.parse_args()
    model = f"ConvNetW{args.width}"
    rows = {"batched (dm_loss)": lambda *a: dm_loss(*a[:4], STRATEGY, a[4]), "per-class literal": literal_loss}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fused kernels: {has_ops()}, {model}, "
          f"{args.batch_real} real images per class, {CLASSES} classes, 1x28x28")
    g = torch.Generator().manual_seed(0)
    reals = [torch.randn(args.batch_real, 1, 28, 28, generator=g) for _ in range(CLASSES)]
    param = ParamDiffAug()
    for ipc in args.ipc:
        syn = torch.randn(CLASSES * ipc, 1, 28, 28, generator=g).requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=1.0, momentum=0.5)
        times = {name: [] for name in rows}
        for r in range(args.warmup + args.repeats):
            for name, fn in rows.items():
                seeds = torch.randint(0, 100000, (CLASSES,), generator=g).tolist()
                t0 = time.perf_counter()
                iteration(fn, model, syn, opt, reals, ipc, seeds, param)
                if r >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["per-class literal"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"ipc {ipc:3d}  {name:20s} median {med:8.3f} s/iteration  (min {min(ts):.3f}, max {max(ts):.3f}; "
                  f"{base / med:.2f}x vs per-class)")


if __name__ == "__main__":
    main()
