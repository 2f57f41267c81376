"""What one condensation iteration does, per method; ``loop.py`` runs the iterations.

The loop owns everything the methods share (data, synthetic set and its optimiser, generators,
evaluation, outputs, checkpoints, resume, progress). Before each iteration it seeds torch's global
generators from the run's control stream (network initialisation and per-sample augmentation use
them), then calls ``method.iteration(run)``, which updates ``run.image_syn`` with
``run.opt_img`` and returns the iteration's matching loss as a detached 0-d tensor on the device
(the loop averages it for the log lines and metrics; no host sync here).

- ``dsa``: gradient matching with DSA (docs/semantics.md §5): ``outer_loop`` image steps per iteration, each
  followed (but the last) by ``inner_loop`` epochs of training the network on the synthetic set.
  The image step and the epoch are ``steps.MatchingSteps`` callables (compiled with
  ``compile='on'``). Loss reported: mean per class and outer step.
- ``dc``: the same without augmentation anywhere in the iteration (matching and inner training),
  as the official ``--method DC``. (Evaluation still trains with the run's DSA strategy.)
- ``dm``: distribution matching (``dm.dm_loss``): one image step per iteration against a fresh
  network with frozen parameters. Loss reported: mean per class.

Per-class DiffAugment seeds: ``rng='compat'`` draws K ints per image step from the control stream
(host values, the official draws); ``rng='device'`` keys class c by ``steps.class_keys`` from the
run's step counter on the device (``run.key_step``, advanced once per image step).

With several processes (``run.dist``, distributed.py; hooks marked ``[distributed]``) each process
matches its share of the classes, the image gradient and the loss are summed over the processes,
and everything else (draws, network, inner loop) is replicated.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Protocol

import torch
from torch import Tensor, nn

from .dm import dm_loss
from .networks import get_network, has_batchnorm, set_batchnorm_statistics
from .steps import MatchingSteps, class_keys

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

    def steps(self, run: "_Run", net: nn.Module) -> MatchingSteps:
        """The run's ``MatchingSteps``: built around the first iteration's network (so building it
        draws nothing more), then that network is re-initialised from each fresh one."""
        if run.steps is None:
            cfg = run.cfg
            run.steps = MatchingSteps(
                net, run.image_syn, run.opt_img, num_classes=run.num_classes, ipc=cfg.ipc,
                strategy=cfg.strategy if self.augment else "none", param=run.match_param, metric=cfg.dis_metric,
                lr_net=cfg.lr_net, batch_train=cfg.batch_train, key_base=run.key_base, compile=cfg.compile,
                classes=run.dist.share(run.num_classes),  # [distributed]
                sum_grad=run.dist.sum_ if run.dist.size > 1 else None, matching=cfg.matching)
        else:
            run.steps.reset(net)
        return run.steps

    def iteration(self, run: "_Run") -> Tensor:
        cfg, k = run.cfg, run.num_classes
        fresh = get_network(cfg.model, run.info.channel, k, run.info.im_size, device=run.device)
        fresh.train()
        steps = self.steps(run, fresh)
        uses_bn = has_batchnorm(steps.net)
        on_device = run.match_param.rng == "device"
        scale = 1.0 / (k * cfg.outer_loop)
        total = torch.zeros((), device=run.device)
        for ol in range(cfg.outer_loop):
            if uses_bn:
                set_batchnorm_statistics(steps.net, torch.cat([run.sample_real(c, BN_IMAGES_PER_CLASS)
                                                               for c in range(k)]))
            reals = [run.sample_real(c, cfg.batch_real) for c in range(k)]
            if on_device:  # keys from the device counter: no host value
                loss = steps.outer_step(reals, run.key_step)
                run.key_step.add_(1)
            else:
                # Every class is drawn (the streams stay in step on every process); this process
                # matches its slice (``steps.classes``).
                loss = steps.outer_step(reals, torch.randint(0, DSA_SEED_RANGE, (k,), generator=run.control).tolist())
            total += loss * scale
            if ol == cfg.outer_loop - 1:
                break
            syn_train = run.image_syn.detach().clone()
            for _ in range(cfg.inner_loop):
                steps.inner_epoch(syn_train, run.label_syn)
            run.dist.same_module(steps.net)  # [distributed] replicated training; rank 0's copy is the network
        return run.dist.sum(total)  # [distributed] the loss of every class


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
        if run.match_param.rng == "device":
            keys = class_keys(run.key_base, run.key_step, k)
            seeds = [keys[c] for c in range(k)]
            run.key_step.add_(1)
        else:
            seeds = torch.randint(0, DSA_SEED_RANGE, (k,), generator=run.control).tolist()
        # [distributed] batch norm takes its statistics over every class's batch: not divisible.
        split = not has_batchnorm(net)
        mine = run.dist.share(k) if split else range(k)
        loss = dm_loss(net, [reals[c] for c in mine], [syns[c] for c in mine], [seeds[c] for c in mine],
                       cfg.strategy, run.match_param)
        run.opt_img.zero_grad(set_to_none=True)
        loss.backward(inputs=[run.image_syn])
        if split:
            run.dist.sum_grad(run.image_syn)
        run.opt_img.step()
        loss = loss.detach()
        return (run.dist.sum(loss) if split else loss) / k


METHODS: Dict[str, Method] = {
    "dsa": GradientMatching(augment=True),
    "dc": GradientMatching(augment=False),
    "dm": DistributionMatching(),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"dsa_fast.condense: unknown method {name!r}; expected one of {tuple(METHODS)}")
    return METHODS[name]
