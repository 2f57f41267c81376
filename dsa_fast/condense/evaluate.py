"""Evaluation of a synthetic set (docs/semantics.md §5), and the ``python -m dsa_fast.evaluate`` command.

A fresh network trained on the set: SGD (lr_net, momentum 0.9, weight decay 5e-4), ``epochs + 1``
shuffled passes with batch ``batch_train``, every batch DiffAugment'ed per sample (seed -1); after
pass ``epochs // 2 + 1`` a new optimiser with lr x 0.1 (the official schedule: for epochs = 1000,
passes 0..501 at lr and 502..1000 at lr / 10). Then test accuracy with no augmentation.
Mean and (population) standard deviation over models, as the official ``np.std``.
The E networks of one evaluation train together where the model allows it (``ensemble.py``: each
network keeps its own random stream and ends as it would alone; ``mode='sequential'`` forces one
after another, the oracle the ensemble is tested against).
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
from .ensemble import MODES, group_size, model_supports_ensemble, test_ensemble, train_ensemble
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


def train_network(
    images: Tensor,
    labels: Tensor,
    *,
    model: str,
    num_classes: int,
    epochs: int,
    lr: float,
    batch_train: int,
    strategy: str,
    param: Optional[ParamDiffAug],
    on_pass: Optional[Callable[[int], None]] = None,
) -> nn.Module:
    """A fresh ``model`` (in the images' dtype, on their device) trained on (images, labels).

    Initialisation, shuffles and augmentation draw from torch's global generators (the caller
    seeds them). ``on_pass(1)`` is called after every pass over the data.
    """
    device = images.device
    net = get_network(model, images.shape[1], num_classes, tuple(images.shape[2:]), device=device).to(images.dtype)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    decay_after = epochs // 2 + 1
    for ep in range(epochs + 1):
        train_epoch(net, images, labels, optimizer, batch_train, strategy, param)
        if ep == decay_after:
            optimizer = torch.optim.SGD(net.parameters(), lr=lr * 0.1, momentum=0.9, weight_decay=0.0005)
        if on_pass is not None:
            on_pass(1)
    return net


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
    """
    device = test.images.device
    with global_rng_scope(device, seed):
        net = train_network(images.detach().to(device), labels.to(device), model=model,
                            num_classes=test.info.num_classes, epochs=epochs, lr=lr, batch_train=batch_train,
                            strategy=strategy, param=param, on_pass=on_pass)
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
    mode: str = "auto",
    on_pass: Optional[Callable[[int], None]] = None,
    models: Optional[Sequence[int]] = None,
) -> List[float]:
    """Test accuracies of ``n_models`` networks trained on the set; model k uses the stream
    (seed, STREAM_EVAL, k), so two sets evaluated with the same seed get paired models.
    ``models``: train only the networks of these indices (a process's share of them; default
    all ``n_models``), in that order.

    ``mode``: 'ensemble' trains the networks together in groups (``ensemble.train_ensemble``; each
    ends as it would alone; ``ensemble.group_size`` networks per group), 'sequential' one after
    another, 'auto' (default) the ensemble where the model supports it
    (``ensemble.supports_ensemble``: not batch norm) and a group holds more than one network (on
    the CPU: sets of at most 20 images), sequential otherwise.
    ``on_pass(m)`` is called as training goes: m networks have finished one more pass.
    """
    if mode not in MODES:
        raise ValueError(f"dsa_fast.condense: unknown evaluation mode {mode!r}; expected one of {MODES}")
    indices = range(n_models) if models is None else models
    if n_models <= 0 or not indices:
        return []
    device = test.images.device
    info = test.info
    seeds = [derive_seed(seed, STREAM_EVAL, k) for k in indices]
    size = group_size(images.shape[0], batch_train, device)
    if mode == "auto":
        # A group of one network is the sequential path with extra reshapes: take the original.
        grouped = size > 1 and len(seeds) > 1
        mode = "ensemble" if grouped and model_supports_ensemble(model, info.channel, info.num_classes,
                                                                 info.im_size) else "sequential"
    if mode == "sequential":
        accs = [
            train_and_test(images, labels, test, model=model, epochs=epochs, lr=lr, batch_train=batch_train,
                           strategy=strategy, param=param, seed=s, on_pass=on_pass)
            for s in seeds
        ]
        return torch.stack(accs).cpu().tolist()
    images, labels = images.detach().to(device), labels.to(device)
    out: List[Tensor] = []
    for first in range(0, len(seeds), size):
        template, params = train_ensemble(images, labels, model=model, num_classes=info.num_classes,
                                          seeds=seeds[first:first + size], epochs=epochs, lr=lr,
                                          batch_train=batch_train, strategy=strategy, param=param,
                                          on_pass=on_pass)
        out.append(test_ensemble(template, params, test.images, test.labels))
    return torch.cat(out).cpu().tolist()


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
