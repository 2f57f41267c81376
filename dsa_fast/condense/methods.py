"""What one condensation iteration does, per method; ``loop.py`` runs the iterations.

The loop owns everything the methods share (data, synthetic set and its optimiser, generators,
evaluation, outputs, checkpoints, resume, progress). Before each iteration it seeds torch's global
generators from the run's control stream (network initialisation and per-sample augmentation use
them), then calls ``method.iteration(run)``, which updates ``run.image_syn`` with
``run.opt_img`` and returns the iteration's matching loss as a detached 0-d tensor on the device
(the loop averages it for the log lines and metrics; no host sync here).

- ``dsa``: gradient matching with DSA (docs/semantics.md §5): ``outer_loop`` image steps per iteration, each
  followed (but the last) by ``inner_loop`` epochs of training the network on the synthetic set.
  Loss reported: mean per class and outer step.
- ``dc``: the same without augmentation anywhere in the iteration (matching and inner training),
  as the official ``--method DC``. (Evaluation still trains with the run's DSA strategy.)
- ``dm``: distribution matching (``dm.dm_loss``): one image step per iteration against a fresh
  network with frozen parameters. Loss reported: mean per class.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Protocol

import torch
from torch import Tensor

from .batched import match_loss_auto
from .dm import dm_loss
from .evaluate import train_epoch
from .networks import get_network, has_batchnorm, set_batchnorm_statistics

if TYPE_CHECKING:  # the run state; loop.py imports this module
    from .loop import _Run

BN_IMAGES_PER_CLASS = 16  # the official BNSizePC
DSA_SEED_RANGE = 100000  # the official per-class seeds are in [0, 100000)


class Method(Protocol):
    def iteration(self, run: "_Run") -> Tensor:
        """One iteration's update of ``run.image_syn``; returns the detached matching loss."""


class GradientMatching:
    """``dsa`` (augment=True) and ``dc`` (augment=False)."""

    def __init__(self, augment: bool):
        self.augment = augment

    def iteration(self, run: "_Run") -> Tensor:
        cfg, k, ipc = run.cfg, run.num_classes, run.cfg.ipc
        strategy = cfg.strategy if self.augment else "none"
        net = get_network(cfg.model, run.info.channel, k, run.info.im_size, device=run.device)
        net.train()
        opt_net = torch.optim.SGD(net.parameters(), lr=cfg.lr_net)
        uses_bn = has_batchnorm(net)
        scale = 1.0 / (k * cfg.outer_loop)
        total = torch.zeros((), device=run.device)
        for ol in range(cfg.outer_loop):
            if uses_bn:
                set_batchnorm_statistics(net, torch.cat([run.sample_real(c, BN_IMAGES_PER_CLASS) for c in range(k)]))
            reals = [run.sample_real(c, cfg.batch_real) for c in range(k)]
            syns = list(run.image_syn.split(ipc))  # one backward node for all classes (slices: one each)
            seeds = torch.randint(0, DSA_SEED_RANGE, (k,), generator=run.control).tolist()
            loss = match_loss_auto(net, reals, syns, list(range(k)), seeds, strategy, run.param, cfg.dis_metric,
                                   cfg.matching)
            run.opt_img.zero_grad(set_to_none=True)
            loss.backward(inputs=[run.image_syn])
            run.opt_img.step()
            total += loss.detach() * scale
            if ol == cfg.outer_loop - 1:
                break
            syn_train = run.image_syn.detach().clone()
            for _ in range(cfg.inner_loop):
                train_epoch(net, syn_train, run.label_syn, opt_net, cfg.batch_train, strategy, run.param)
        return total


class DistributionMatching:
    """``dm``: the official main_DM.py iteration."""

    def iteration(self, run: "_Run") -> Tensor:
        cfg, k, ipc = run.cfg, run.num_classes, run.cfg.ipc
        net = get_network(cfg.model, run.info.channel, k, run.info.im_size, device=run.device)
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)
        reals = [run.sample_real(c, cfg.batch_real) for c in range(k)]
        syns = [run.image_syn[c * ipc:(c + 1) * ipc] for c in range(k)]
        seeds = torch.randint(0, DSA_SEED_RANGE, (k,), generator=run.control).tolist()
        loss = dm_loss(net, reals, syns, seeds, cfg.strategy, run.param)
        run.opt_img.zero_grad(set_to_none=True)
        loss.backward(inputs=[run.image_syn])
        run.opt_img.step()
        return loss.detach() / k


METHODS: Dict[str, Method] = {
    "dsa": GradientMatching(augment=True),
    "dc": GradientMatching(augment=False),
    "dm": DistributionMatching(),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"dsa_fast.condense: unknown method {name!r}; expected one of {tuple(METHODS)}")
    return METHODS[name]
