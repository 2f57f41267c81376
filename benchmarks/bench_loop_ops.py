"""Dispatched aten ops of one DSA outer step: what a GPU pays in launches, counted on the CPU.

One outer step = the matching loss over 10 classes, its backward to the synthetic images, the SGD
step on them, and (every outer step but the last) ``inner_loop`` epochs of training the network on
the synthetic set. CIFAR10 shapes (3x32x32, 10 classes, 256 real images per class), ipc 1
(outer 1, inner 1: the only outer step is the last, no inner epochs) and ipc 10 (outer 10,
inner 50: an outer step that is not the last).

Two structures, counted with a TorchDispatchMode (every aten op that reaches a kernel):
  dsa_fast   what the loop runs on CUDA (methods.GradientMatching): grouped class matching
             (batched.match_loss_grouped: the network as one grouped copy per class, one pass for
             all real batches, one for all synthetic ones, the distance of all classes at once;
             one seeded draw per class applied to its real and synthetic batch), the synthetic
             set split per class with ``split``, the inner epochs by evaluate.train_epoch (an index
             of the device tensor per batch, no host round trip).
  official   the per-class loop of docs/semantics.md §5 (main.py): per class, a real batch chosen by a host
             permutation and indexed with it, two DiffAugment calls, two autograd.grad passes, the
             distance; ``loss.item()`` per outer step; inner epochs through a DataLoader over the
             synthetic set (default collate: one index per image and a stack) with
             ``output.cpu()`` and ``loss.item()`` per batch, as the official ``epoch()``.
Both use SGD with foreach=True (torch's default on CUDA; the CPU default is a per-tensor loop).

Two counts: every dispatched op, and the ops that are not views (a view, detach or in-place
unsqueeze changes metadata only and launches no kernel on a GPU). The official column counts the
official DiffAugment as 26 ops per call ('S' mode); the dsa_fast column counts every op, its
augmentation (draws and kernels) included, and says how many of them the augmentation made. The
ConvNet is width 8 here: the op count of a ConvNet does not depend on its width (the same layers,
the same ops).

    PYTHONPATH=. python benchmarks/bench_loop_ops.py
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import dsa_fast.condense.batched as batched
import dsa_fast.condense.evaluate as evaluate
from dsa_fast import DiffAugment, ParamDiffAug
from dsa_fast.condense.matching import class_gradients, gradient_distance
from dsa_fast.condense.networks import get_network

CLASSES = 10
REAL = 256
IMAGE = (3, 32, 32)
STRATEGY = "color_crop_cutout_flip_scale_rotate"
OFFICIAL_AUGMENT_OPS = 26  # the official DiffAugment, 'S' mode, per call
LOOPS = {1: (1, 1), 10: (10, 50)}


# Ops that only make a new view of a tensor's metadata (no kernel on a GPU), beyond those whose
# schema says they return a view (OpOverload.is_view).
_METADATA_OPS = {torch.ops.aten.detach.default, torch.ops.aten._unsafe_view.default,
                 torch.ops.aten.unsqueeze_.default, torch.ops.aten.squeeze_.dim, torch.ops.aten.t_.default,
                 torch.ops.aten.transpose_.default, torch.ops.aten.as_strided_.default}


def is_metadata_op(func) -> bool:
    return bool(getattr(func, "is_view", False)) or func in _METADATA_OPS


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()
        self.in_augment = 0
        self.augment_calls = 0
        self.augment_ops = 0
        self.augment_kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.in_augment:
            self.augment_ops += 1
            self.augment_kernels += not is_metadata_op(func)
        else:
            self.ops[func] += 1
        return func(*args, **(kwargs or {}))

    def kernels(self) -> int:
        """Non-augment ops that are not views (each a kernel launch on a GPU)."""
        return sum(n for f, n in self.ops.items() if not is_metadata_op(f))


def counted(counter: Count, fn):
    def aug(*args, **kw):
        counter.augment_calls += 1
        counter.in_augment += 1
        try:
            return fn(*args, **kw)
        finally:
            counter.in_augment -= 1
    return aug


def counted_augment(counter: Count):
    return counted(counter, DiffAugment)


@contextlib.contextmanager
def patched(counter: Count):
    """dsa_fast's modules augment through these names: count their calls and ops apart."""
    saved = batched.augment_pair, evaluate.DiffAugment
    batched.augment_pair = counted(counter, batched.augment_pair)
    evaluate.DiffAugment = counted_augment(counter)
    try:
        yield
    finally:
        batched.augment_pair, evaluate.DiffAugment = saved


def setup(ipc: int):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(CLASSES * 300, *IMAGE, generator=g)
    labels = torch.arange(CLASSES).repeat_interleave(300)
    indices = [torch.nonzero(labels == c).flatten() for c in range(CLASSES)]
    syn = torch.randn(CLASSES * ipc, *IMAGE, generator=g).requires_grad_(True)
    torch.manual_seed(0)
    net = get_network("ConvNetW8", 3, CLASSES, IMAGE[1:])
    return images, labels, indices, syn, net


def dsa_fast_step(ipc: int, counter: Count, last: bool) -> None:
    images, labels, indices, syn, net = setup(ipc)
    sampler = torch.Generator().manual_seed(1)
    opt_img = torch.optim.SGD([syn], lr=0.1, momentum=0.5, foreach=True)
    opt_net = torch.optim.SGD(net.parameters(), lr=0.01, foreach=True)
    label_syn = torch.arange(CLASSES).repeat_interleave(ipc)
    seeds = list(range(CLASSES))
    inner = LOOPS[ipc][1]
    with counter, patched(counter):
        reals = [images[idx[torch.randperm(idx.numel(), generator=sampler)[:REAL]]] for idx in indices]
        syns = list(syn.split(ipc))
        loss = batched.match_loss_grouped(net, reals, syns, list(range(CLASSES)), seeds, STRATEGY, ParamDiffAug())
        opt_img.zero_grad(set_to_none=True)
        loss.backward(inputs=[syn])
        opt_img.step()
        if not last:
            syn_train = syn.detach().clone()
            for _ in range(inner):
                evaluate.train_epoch(net, syn_train, label_syn, opt_net, 256, STRATEGY, ParamDiffAug())


def official_step(ipc: int, counter: Count, last: bool) -> None:
    images, labels, indices, syn, net = setup(ipc)
    np_indices = [i.numpy() for i in indices]
    opt_img = torch.optim.SGD([syn], lr=0.1, momentum=0.5, foreach=True)
    opt_net = torch.optim.SGD(net.parameters(), lr=0.01, foreach=True)
    label_syn = torch.arange(CLASSES).repeat_interleave(ipc)
    params = list(net.parameters())
    aug = counted_augment(counter)
    inner = LOOPS[ipc][1]
    rng = np.random.default_rng(1)
    with counter:
        loss = torch.tensor(0.0)
        for c in range(CLASSES):
            img_real = images[rng.permutation(np_indices[c])[:REAL]]  # host permutation -> device index
            img_syn = syn[c * ipc:(c + 1) * ipc].reshape(ipc, *IMAGE)
            seed = int(c)
            img_real = aug(img_real, STRATEGY, seed=seed, param=ParamDiffAug(), backend="reference")
            img_syn = aug(img_syn, STRATEGY, seed=seed, param=ParamDiffAug(), backend="reference")
            g_real = [g.detach() for g in class_gradients(net, params, img_real, c, create_graph=False)]
            g_syn = class_gradients(net, params, img_syn, c, create_graph=True)
            loss = loss + gradient_distance(g_syn, g_real, "ours")
        opt_img.zero_grad()
        loss.backward()
        opt_img.step()
        loss.item()
        if not last:
            data = torch.utils.data.TensorDataset(syn.detach().clone(), label_syn.clone())
            loader = torch.utils.data.DataLoader(data, batch_size=256, shuffle=True, num_workers=0)
            for _ in range(inner):
                net.train()
                for x, y in loader:
                    x = aug(x.float(), STRATEGY, seed=-1, param=ParamDiffAug(), backend="reference")
                    out = net(x)
                    batch_loss = F.cross_entropy(out, y.long())
                    out.cpu()
                    batch_loss.item()
                    opt_net.zero_grad()
                    batch_loss.backward()
                    opt_net.step()


def main() -> None:
    print(f"torch {torch.__version__}; dispatched aten ops per outer step, CIFAR10 shapes, 10 classes, "
          f"{REAL} real/class")
    print("| ipc | outer step | count | official (26/aug call) | dsa_fast | ratio | dsa_fast augmentation ops "
          "(calls) | official augment calls |")
    print("|---|---|---|---|---|---|---|---|")
    for ipc in (1, 10):
        last = ipc == 1  # ipc 1: outer_loop 1, its only step is the last; ipc 10: a step with inner epochs
        rows: Dict[str, Count] = {}
        for name, fn in (("official", official_step), ("dsa_fast", dsa_fast_step)):
            counter = Count()
            fn(ipc, counter, last)
            rows[name] = counter
        o, d = rows["official"], rows["dsa_fast"]
        what = "matching only (last step)" if last else f"matching + {LOOPS[ipc][1]} inner epochs"
        # all dispatched ops; then the non-view ones (the official DiffAugment's 26 taken as kernels)
        for kind, o_rest, d_rest, d_aug in (("all ops", sum(o.ops.values()), sum(d.ops.values()), d.augment_ops),
                                            ("non-view ops", o.kernels(), d.kernels(), d.augment_kernels)):
            official = o_rest + OFFICIAL_AUGMENT_OPS * o.augment_calls
            today = d_rest + d_aug
            print(f"| {ipc} | {what} | {kind} | {official} | {today} | {official / today:.1f}x | {d_aug} "
                  f"({d.augment_calls}) | {o.augment_calls} |", flush=True)


if __name__ == "__main__":
    main()
