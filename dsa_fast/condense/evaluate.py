"""Evaluation of a synthetic set (docs/semantics.md §5), and the ``python -m dsa_fast.evaluate`` command.

A fresh network trained on the set: SGD (lr_net, momentum 0.9, weight decay 5e-4), ``epochs + 1``
shuffled passes with batch ``batch_train``, every batch DiffAugment'ed per sample (seed -1); after
pass ``epochs // 2 + 1`` a new optimiser with lr x 0.1 (the official schedule: for epochs = 1000,
passes 0..501 at lr and 502..1000 at lr / 10). Then test accuracy with no augmentation.
Mean and (population) standard deviation over models, as the official ``np.std``.
The command line (``python -m dsa_fast.evaluate``) is in ``cli.py``.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import DiffAugment, ParamDiffAug
from .data import TensorDataset
from .networks import get_network
from .rng import STREAM_BASELINE, STREAM_EVAL, derive_seed, generator, global_rng_scope

def train_epoch(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    strategy: str,
    param: Optional[ParamDiffAug],
) -> None:
    """One shuffled pass over (images, labels) in train mode, each batch augmented per sample.

    Randomness (shuffle, augmentation) comes from torch's global generators; no host sync.
    """
    net.train()
    n = images.shape[0]
    perm = torch.randperm(n, device=images.device)
    for start in range(0, n, batch_size):
        idx = perm[start:start + batch_size]
        x = DiffAugment(images[idx], strategy, seed=-1, param=param)
        loss = F.cross_entropy(net(x), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def test_accuracy(net: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> Tensor:
    """Top-1 accuracy in eval mode, no augmentation, as a 0-d tensor on the data's device."""
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        out = net(images[start:start + batch_size])
        correct += (out.argmax(dim=1) == labels[start:start + batch_size]).sum()
    return correct.double() / max(images.shape[0], 1)


def train_and_test(
    images: Tensor,
    labels: Tensor,
    test: TensorDataset,
    *,
    model: str,
    epochs: int,
    lr: float,
    batch_train: int,
    strategy: str,
    param: Optional[ParamDiffAug],
    seed: int,
    on_pass: Optional[Callable[[int], None]] = None,
) -> Tensor:
    """Train one fresh ``model`` on (images, labels) and return its test accuracy (0-d tensor).

    Everything random comes from ``seed``; the caller's global RNG state is restored afterwards.
    ``on_pass(1)`` is called after each training pass (progress reports; no host sync).
    """
    device = test.images.device
    info = test.info
    with global_rng_scope(device, seed):
        net = get_network(model, info.channel, info.num_classes, info.im_size).to(device)
        images, labels = images.detach().to(device), labels.to(device)
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
        decay_after = epochs // 2 + 1
        for ep in range(epochs + 1):
            train_epoch(net, images, labels, optimizer, batch_train, strategy, param)
            if on_pass is not None:
                on_pass(1)
            if ep == decay_after:
                optimizer = torch.optim.SGD(net.parameters(), lr=lr * 0.1, momentum=0.9, weight_decay=0.0005)
        return test_accuracy(net, test.images, test.labels)


def evaluate_set(
    images: Tensor,
    labels: Tensor,
    test: TensorDataset,
    *,
    n_models: int,
    seed: int,
    model: str,
    epochs: int,
    lr: float,
    batch_train: int,
    strategy: str,
    param: Optional[ParamDiffAug] = None,
    on_pass: Optional[Callable[[int], None]] = None,
) -> List[float]:
    """Test accuracies of ``n_models`` networks trained on the set; model k uses the stream
    (seed, STREAM_EVAL, k), so two sets evaluated with the same seed get paired models.
    ``on_pass(n)``: n more training passes done (``n_models * (epochs + 1)`` in all)."""
    accs = [
        train_and_test(images, labels, test, model=model, epochs=epochs, lr=lr, batch_train=batch_train,
                       strategy=strategy, param=param, seed=derive_seed(seed, STREAM_EVAL, k), on_pass=on_pass)
        for k in range(n_models)
    ]
    return torch.stack(accs).cpu().tolist() if accs else []


def mean_std(accs: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    if not accs:
        return None, None
    return float(np.mean(accs)), float(np.std(accs))


def random_real_subset(train: TensorDataset, ipc: int, seed: int) -> Tuple[Tensor, Tensor]:
    """``ipc`` random real images per class (the baseline), drawn from the stream (seed, STREAM_BASELINE)."""
    g = generator(train.images.device, derive_seed(seed, STREAM_BASELINE))
    xs, ys = [], []
    for c in range(train.info.num_classes):
        idx = torch.nonzero(train.labels == c).flatten()
        if idx.numel() < ipc:
            raise ValueError(f"dsa_fast.condense: class {c} has {idx.numel()} training images, fewer than ipc={ipc}")
        pick = idx[torch.randperm(idx.numel(), generator=g, device=idx.device)[:ipc]]
        xs.append(train.images[pick])
        ys.append(train.labels[pick])
    return torch.cat(xs), torch.cat(ys)
