"""What a multi-process condensation divides, replicates and communicates per outer step, from the sizes.

    PYTHONPATH=. python benchmarks/dist_sizes.py [--channels 3 --size 32 --classes 100 --ipc 50
        --batch-real 256 --batch-train 256 --inner-loop 10 --model ConvNet]

FLOPs are counted, not estimated: torch.utils.flop_counter.FlopCounterMode over the real matching code
(``matching.match_loss`` for one class; ``evaluate.train_epoch`` for the inner loop) at small batch
sizes on the CPU, fitted as F = a + b * (real images) + c * (synthetic images) (exactly linear: the
layers are per-sample), then scaled to the asked sizes. Augmentation is left out (strategy 'none';
elementwise work, no matmul/convolution FLOPs). Bytes are float32 tensor sizes; an all-reduce by ring
sends and receives 2 (K - 1) / K times the tensor per process.
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from dsa_fast.condense.dm import dm_loss
from dsa_fast.condense.evaluate import train_epoch
from dsa_fast.condense.matching import match_loss
from dsa_fast.condense.networks import get_network


def matching_flops(net, shape, classes: int, n_real: int, n_syn: int) -> int:
    """FLOPs of one class's matching loss and its backward to the synthetic images."""
    real = torch.randn(n_real, *shape)
    syn = torch.randn(n_syn, *shape, requires_grad=True)
    with FlopCounterMode(display=False) as count:
        loss = match_loss(net, [real], [syn], [classes - 1], [0], "none")
        loss.backward(inputs=[syn])
    return count.get_total_flops()


def dm_flops(net, shape, n_real: int, n_syn: int) -> int:
    """FLOPs of one class's distribution-matching loss and its backward to the synthetic images."""
    real = torch.randn(n_real, *shape)
    syn = torch.randn(n_syn, *shape, requires_grad=True)
    with FlopCounterMode(display=False) as count:
        dm_loss(net, [real], [syn], [0], "none").backward(inputs=[syn])
    return count.get_total_flops()


def train_flops(net, shape, classes: int, n: int) -> int:
    """FLOPs of one SGD step of the inner loop on ``n`` images (forward, backward)."""
    x = torch.randn(n, *shape)
    y = torch.randint(0, classes, (n,))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with FlopCounterMode(display=False) as count:
        train_epoch(net, x, y, opt, n, "none", None)
    return count.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--ipc", type=int, default=50)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--batch-train", type=int, default=256)
    p.add_argument("--inner-loop", type=int, default=10)
    p.add_argument("--model", default="ConvNet")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8])
    a = p.parse_args()
    shape = (a.channels, a.size, a.size)
    torch.manual_seed(0)
    net = get_network(a.model, a.channels, a.classes, (a.size, a.size))
    params = sum(q.numel() for q in net.parameters())

    f_44 = matching_flops(net, shape, a.classes, 4, 4)
    b = (matching_flops(net, shape, a.classes, 8, 4) - f_44) / 4  # per real image
    c = (matching_flops(net, shape, a.classes, 4, 8) - f_44) / 4  # per synthetic image
    const = f_44 - 4 * b - 4 * c
    per_class = const + b * a.batch_real + c * a.ipc
    matching = a.classes * per_class
    per_image_train = (train_flops(net, shape, a.classes, 8) - train_flops(net, shape, a.classes, 4)) / 4
    inner = a.inner_loop * a.classes * a.ipc * per_image_train
    image_bytes = a.classes * a.ipc * a.channels * a.size * a.size * 4
    frozen = get_network(a.model, a.channels, a.classes, (a.size, a.size)).requires_grad_(False)
    d_44 = dm_flops(frozen, shape, 4, 4)
    dm_b = (dm_flops(frozen, shape, 8, 4) - d_44) / 4
    dm_c = (dm_flops(frozen, shape, 4, 8) - d_44) / 4
    dm = a.classes * (d_44 - 4 * dm_b - 4 * dm_c + dm_b * a.batch_real + dm_c * a.ipc)

    print(f"{a.model} on {a.channels}x{a.size}x{a.size}, {a.classes} classes, ipc {a.ipc}, "
          f"{a.batch_real} real images per class, inner loop {a.inner_loop} epochs")
    print(f"network parameters: {params:,} ({params * 4 / 1e6:.2f} MB)")
    print(f"matching FLOPs per class: {per_class / 1e9:.1f} GFLOP ({b / 1e6:.1f} MFLOP per real image, "
          f"{c / 1e6:.1f} MFLOP per synthetic image, {const / 1e6:.2f} MFLOP for the distance)")
    print(f"per outer step: matching {matching / 1e12:.2f} TFLOP (divided), inner loop {inner / 1e12:.2f} TFLOP "
          f"(replicated; {per_image_train / 1e6:.1f} MFLOP per image and epoch), image gradient "
          f"{image_bytes / 1e6:.2f} MB")
    print(f"DM, per iteration: {dm / 1e12:.2f} TFLOP, all divided ({dm_b / 1e6:.1f} MFLOP per real image, "
          f"{dm_c / 1e6:.1f} MFLOP per synthetic image), image gradient {image_bytes / 1e6:.2f} MB")
    print("\n| processes K | FLOPs per process per outer step | bytes sent per process (all-reduce + network) "
          "| FLOP per byte | speed-up bound (FLOPs) |\n|---|---|---|---|---|")
    for k in a.processes:
        flops = matching / k + inner
        sent = 0 if k == 1 else 2 * (k - 1) / k * image_bytes + (params * 4 if a.inner_loop else 0)
        ratio = "-" if sent == 0 else f"{matching / k / sent:,.0f}"
        print(f"| {k} | {flops / 1e12:.2f} TFLOP ({matching / k / 1e12:.2f} divided) | {sent / 1e6:.1f} MB | {ratio} "
              f"| {(matching + inner) / flops:.2f}x |")


if __name__ == "__main__":
    main()
