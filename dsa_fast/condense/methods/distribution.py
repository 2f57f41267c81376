"""``dm``: distribution matching (Zhao & Bilen, WACV 2023), the official ``main_DM.py`` iteration.

One image step per iteration against a fresh network with frozen parameters (``dm.dm_loss``).
Loss reported: mean per class. Per-class seeds as gradient matching draws them (``gradient.py``).
With several processes each process takes its share of the classes and the image gradient is
summed, except for batch-norm networks (statistics over every class's batch: not divisible).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..dm import dm_loss
from ..networks import get_network, has_batchnorm
from ..steps import class_keys
from .base import Method
from .gradient import DSA_SEED_RANGE


class DM(Method):
    name = "dm"
    help = "distribution matching (with DSA)"
    defaults = {"iterations": 20000, "lr_img": 1.0}  # main_DM.py
    no_loops_reason = "one image step per iteration"
    strategy = "color_crop_cutout_flip_scale_rotate"  # main_DM.py's default, for every dataset
    # The embedded main job at ipc 10: one cheap image step per iteration, so many iterations fit
    # (measured in docs/condense.md).
    main_job = {"ipc": 10, "iterations": 200, "model": "ConvNetW32", "batch_real": 32, "checkpoint_every": 50,
                "log_every": 20, "eval_models": 4, "eval_epochs": 120}

    def iteration(self) -> Tensor:
        s = self.state
        cfg, k, ipc = s.config, s.num_classes, s.config.ipc
        net = get_network(cfg.model, s.dataset.channel, k, s.dataset.im_size, device=s.device)
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)
        reals = [s.sample_real(c, cfg.batch_real) for c in range(k)]
        syns = [s.image_syn[c * ipc:(c + 1) * ipc] for c in range(k)]
        if s.param.rng == "device":
            keys = class_keys(s.key_base, s.key_step, k)
            seeds = [keys[c] for c in range(k)]
            s.key_step.add_(1)
        else:
            seeds = torch.randint(0, DSA_SEED_RANGE, (k,), generator=s.control).tolist()
        # [distributed] batch norm takes its statistics over every class's batch: not divisible.
        split = not has_batchnorm(net)
        mine = s.dist.share(k) if split else range(k)
        loss = dm_loss(net, [reals[c] for c in mine], [syns[c] for c in mine], [seeds[c] for c in mine],
                       cfg.strategy, s.param)
        s.opt_img.zero_grad(set_to_none=True)
        loss.backward(inputs=[s.image_syn])
        if split:
            s.dist.sum_grad(s.image_syn)
        s.opt_img.step()
        loss = loss.detach()
        return (s.dist.sum(loss) if split else loss) / k
