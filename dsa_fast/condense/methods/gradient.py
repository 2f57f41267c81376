"""Gradient matching: ``dsa`` (with DSA, docs/semantics.md §5) and ``dc`` (without augmentation in
the iteration, as the official ``--method DC``; the evaluation still trains with the run's DSA
strategy).

One iteration: ``outer_loop`` image steps, each followed (but the last) by ``inner_loop`` epochs
of training the network on the synthetic set. The image step and the epoch are
``steps.MatchingSteps`` callables (compiled with ``compile='on'``). Loss reported: mean per class
and outer step.

Per-class DiffAugment seeds: ``rng='compat'`` draws K ints per image step from the control stream
(host values, the official draws); ``rng='device'`` keys class c by ``steps.class_keys`` from the
run's step counter on the device (``state.key_step``, advanced once per image step).

With several processes (hooks marked ``[distributed]``) each process matches its share of the
classes, the image gradient and the loss are summed over the processes, and everything else
(draws, network, inner loop) is replicated.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..networks import get_network, has_batchnorm, set_batchnorm_statistics
from ..steps import MatchingSteps
from .base import Method

BN_IMAGES_PER_CLASS = 16  # the official BNSizePC
DSA_SEED_RANGE = 100000  # the official per-class seeds are in [0, 100000)

# get_loops(ipc) of the official code: (outer_loop, inner_loop).
PUBLISHED_LOOPS = {
    1: (1, 1),
    10: (10, 50),
    20: (20, 25),
    30: (30, 20),
    40: (40, 15),
    50: (50, 10),
}


class GradientMatching(Method):
    """``dsa`` and ``dc`` (``augments`` False)."""

    defaults = {"iterations": 1000, "lr_img": 0.1}  # main.py --method DSA/DC
    loops = PUBLISHED_LOOPS
    compiles = True

    def __init__(self, state):
        super().__init__(state)
        self.steps: Optional[MatchingSteps] = None  # built at the first iteration

    def _steps(self, net: nn.Module) -> MatchingSteps:
        """The run's ``MatchingSteps``: built around the first iteration's network (so building it
        draws nothing more), then that network is re-initialised from each fresh one."""
        if self.steps is None:
            s = self.state
            cfg = s.config
            self.steps = MatchingSteps(
                net, s.image_syn, s.opt_img, num_classes=s.num_classes, ipc=cfg.ipc,
                strategy=cfg.strategy if self.augments else "none", param=s.param, metric=cfg.dis_metric,
                lr_net=cfg.lr_net, batch_train=cfg.batch_train, key_base=s.key_base, compile=cfg.compile,
                classes=s.dist.share(s.num_classes),  # [distributed]
                sum_grad=s.dist.sum_ if s.dist.size > 1 else None, matching=cfg.matching)
        else:
            self.steps.reset(net)
        return self.steps

    def iteration(self) -> Tensor:
        s = self.state
        cfg, k = s.config, s.num_classes
        fresh = get_network(cfg.model, s.dataset.channel, k, s.dataset.im_size, device=s.device)
        fresh.train()
        steps = self._steps(fresh)
        uses_bn = has_batchnorm(steps.net)
        on_device = s.param.rng == "device"
        scale = 1.0 / (k * cfg.outer_loop)
        total = torch.zeros((), device=s.device)
        for ol in range(cfg.outer_loop):
            if uses_bn:
                set_batchnorm_statistics(steps.net, torch.cat([s.sample_real(c, BN_IMAGES_PER_CLASS)
                                                               for c in range(k)]))
            reals = [s.sample_real(c, cfg.batch_real) for c in range(k)]
            if on_device:  # keys from the device counter: no host value
                loss = steps.outer_step(reals, s.key_step)
                s.key_step.add_(1)
            else:
                # Every class is drawn (the streams stay in step on every process); this process
                # matches its slice (``steps.classes``).
                loss = steps.outer_step(reals, torch.randint(0, DSA_SEED_RANGE, (k,), generator=s.control).tolist())
            total += loss * scale
            if ol == cfg.outer_loop - 1:
                break
            syn_train = s.image_syn.detach().clone()
            for _ in range(cfg.inner_loop):
                steps.inner_epoch(syn_train, s.label_syn)
            s.dist.same_module(steps.net)  # [distributed] replicated training; rank 0's copy is the network
        return s.dist.sum(total)  # [distributed] the loss of every class


class DSA(GradientMatching):
    name = "dsa"
    help = "gradient matching with DSA"


class DC(GradientMatching):
    name = "dc"
    help = "gradient matching without augmentation"
    augments = False
