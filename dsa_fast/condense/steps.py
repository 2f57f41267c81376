"""The two repeated pieces of a gradient-matching iteration as callables ``torch.compile`` takes whole.

``MatchingSteps.outer_step``: every class's real and synthetic batch augmented (one seed per class
for the pair), the network gradients, the distance, the gradient w.r.t. the synthetic images and
the image update (SGD with momentum, the run's ``opt_img`` state); the callable returns the new
images and momentum buffer and ``outer_step`` copies them over the old ones. The class matching is
``batched.match_loss_auto`` (grouped or batched off the CPU where exact, else the per-class loop).
``MatchingSteps.inner_epoch``: one shuffled pass of plain SGD of the network over the synthetic
set, every batch augmented per sample. With ``compile='on'`` both are
``torch.compile(fullgraph=True)`` (inductor; on CUDA ``mode='reduce-overhead'``, CUDA graphs); with
``'off'`` the same functions run eagerly.

Why the functions look the way they do:
- No ``torch.optim`` inside: Dynamo does not trace ``Optimizer.zero_grad``. The updates are the
  arithmetic of ``torch.optim.SGD`` written out with the same tensor ops (first step: the momentum
  buffer is a copy of the gradient; then ``buf * m + g``; ``p + (-lr) * buf`` by ``add(alpha=)``), so
  the eager path gives the optimiser's numbers bit for bit, and the momentum buffer stays in
  ``opt_img.state`` (checkpoints unchanged).
- One network per run, re-initialised each iteration by copying a freshly built network's state
  into it (``reset``): a compiled callable guards on the module it closes over, so a new module
  per iteration would recompile every iteration.
- Gradients by ``torch.autograd.grad``, traced into the graph with
  ``torch._dynamo.config.trace_autograd_ops`` (set only around the compiled calls).
- rng='device': the per-class keys are computed inside the step from a 0-d int64 step counter on
  the device (``class_keys``), so a replay of the graph needs no host value; shuffles are drawn
  outside (one ``randperm``), the per-sample keys come from the device counter of
  ``dsa_fast.unseeded_counter``, advanced in place.

Nothing here reads a device value back to the host.
"""
from __future__ import annotations

import contextlib

from typing import Callable, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import KEY_MASK, DiffAugment, ParamDiffAug, unseeded_counter
from .batched import match_loss_auto
from .networks import has_batchnorm
from .rng import global_rng_kept

COMPILE_MODES = ("off", "on")


def class_keys(base: int, step: Tensor, num_classes: int) -> Tensor:
    """The [K] int64 DiffAugment keys of one outer step, on ``step``'s device.

    ``step`` (0-d int64) is the run's global outer-step index, iteration * outer_loop + outer step;
    class c's key is (base + step * K + c) mod 2**40. So class c's draw depends only on (the run's
    seed, through ``base``; the iteration; the outer step; c): any split of the classes (over
    processes, or into groups) draws the same ω for a class. The key feeds a 32-bit hash
    (csrc/kernels/rng.h), so neighbouring keys give unrelated draws.
    """
    return (step * num_classes + torch.arange(num_classes, device=step.device) + base) & KEY_MASK


def _traced(fn, device: torch.device):
    """``torch.compile(fn, fullgraph=True)`` (CUDA: with CUDA graphs) that traces autograd calls."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    compiled = torch.compile(fn, fullgraph=True, mode=mode)

    def call(*args):
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            return compiled(*args)

    return call


class MatchingSteps:
    """The outer step and the inner epoch of one run (``methods.gradient.GradientMatching``).

    ``net`` is the run's network (re-initialised by ``reset`` each iteration); ``image_syn`` the
    synthetic set (leaf, requires grad) with ``opt_img`` its SGD. ``key_base`` (rng='device'): the
    base of ``class_keys``. ``classes``: the classes this process matches (default: all);
    ``matching``: as ``batched.match_loss_auto``; ``sum_grad(g)``: sums the image gradient ``g`` in place over the processes that share the
    classes (distributed.py), between the gradient and the update.
    """

    def __init__(
        self,
        net: nn.Module,
        image_syn: Tensor,
        opt_img: torch.optim.SGD,
        *,
        num_classes: int,
        ipc: int,
        strategy: str,
        param: ParamDiffAug,
        metric: str,
        lr_net: float,
        batch_train: int,
        key_base: int = 0,
        compile: str = "off",
        classes: Optional[Sequence[int]] = None,
        sum_grad: Optional[Callable[[Tensor], None]] = None,
        matching: str = "auto",
    ):
        if compile not in COMPILE_MODES:
            raise ValueError(f"dsa_fast.condense: unknown compile setting {compile!r}; expected one of {COMPILE_MODES}")
        group = opt_img.param_groups[0]
        if len(opt_img.param_groups) != 1 or group["params"][0] is not image_syn or group["weight_decay"] != 0 \
                or group["dampening"] != 0 or group["nesterov"] or group["maximize"]:
            raise ValueError("dsa_fast.condense: MatchingSteps needs opt_img = SGD([image_syn], lr, momentum)")
        if compile == "on":
            if param.rng != "device" and strategy not in ("", "none", "None"):
                raise ValueError("dsa_fast.condense: compile='on' needs rng='device' (the official per-class "
                                 "draws of rng='compat' are made on the host); use --rng device or --compile off")
            if has_batchnorm(net):
                raise ValueError("dsa_fast.condense: compile='on' does not take batch-norm networks (their "
                                 "statistics are set between the compiled steps); use --compile off")
        self.net, self.image_syn, self.opt_img = net, image_syn, opt_img
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.k, self.ipc = num_classes, ipc
        self.classes = list(range(num_classes)) if classes is None else list(classes)
        self.sum_grad = sum_grad
        self.matching = matching
        self.strategy, self.param, self.metric = strategy, param, metric
        self.lr_img, self.momentum = float(group["lr"]), float(group["momentum"])
        self.lr_net, self.batch_train = float(lr_net), int(batch_train)
        self.key_base = int(key_base) & KEY_MASK
        self.compiled = compile == "on"
        device = image_syn.device
        if self.compiled:
            # With sum_grad the collective runs between two callables: the loss and gradient
            # (compiled), then the update (eager, a few element-wise ops).
            self._outer_fn = _traced(self._outer, device)
            self._grad_fn = _traced(self._loss_grad, device)
            self._epoch_fn = _traced(self._epoch, device)
            if device.type == "cuda":
                # CUDA graphs keep the tensors a step reads or updates in place at fixed addresses.
                torch._dynamo.mark_static_address(image_syn)
                torch._dynamo.mark_static_address(unseeded_counter(device))
        else:
            self._outer_fn, self._grad_fn, self._epoch_fn = self._outer, self._loss_grad, self._epoch

    # -- the network ---------------------------------------------------------------------------

    @torch.no_grad()
    def reset(self, fresh: nn.Module) -> None:
        """Give the run's network the state of ``fresh`` (a newly initialised network of the same
        architecture), in train mode."""
        self.net.load_state_dict(fresh.state_dict())
        self.net.train()

    # -- the outer step ------------------------------------------------------------------------

    def outer_step(self, reals: Sequence[Tensor], seeds: Union[Tensor, Sequence[int]]) -> Tensor:
        """One image step; returns the matching loss (summed over classes) as a detached 0-d tensor.

        ``reals[c]``: class c's real batch. ``seeds``: the per-class seeds (ints), or rng='device'
        the run's 0-d int64 outer-step counter on the device (keys by ``class_keys``; the caller
        advances it).
        """
        state = self.opt_img.state[self.image_syn]
        buf = state.get("momentum_buffer")
        # NB: seeded rng='compat' draws reseed torch's global generators (as the official code);
        # kept out of them, so the inner loop's draws do not depend on which classes were matched
        # here. (compile='on' takes rng='device' only, which leaves them alone.)
        with contextlib.nullcontext() if self.compiled else global_rng_kept(self.image_syn.device):
            loss, new_buf, new_img = self._step(list(reals), seeds, buf)
        if buf is None:
            state["momentum_buffer"] = buf = torch.empty_like(new_buf)
            if self.compiled and buf.is_cuda:
                torch._dynamo.mark_static_address(buf)
        with torch.no_grad():
            # NB: committed here, not inside the callable, so the graph mutates none of its inputs:
            # CUDA graph trees skip a graph that mutates an input not at a static address.
            self.image_syn.copy_(new_img)
            buf.copy_(new_buf)
        return loss

    def _step(self, reals: List[Tensor], seeds, buf: Optional[Tensor]):
        if self.sum_grad is not None:
            loss, grad = self._grad_fn(reals, seeds) if buf is not None else self._loss_grad(reals, seeds)
            grad = grad.clone()  # a compiled callable's output may be overwritten by its next replay
            self.sum_grad(grad)
            new_buf, new_img = self._update(grad, buf)
            return loss, new_buf, new_img
        if buf is None:
            # The run's first image step creates the momentum buffer (a copy of the gradient, as
            # torch.optim.SGD): eagerly, so that the compiled step is one graph, buffer given.
            loss, _, new_buf, new_img = self._outer(reals, seeds, None)
        else:
            loss, _, new_buf, new_img = self._outer_fn(reals, seeds, buf)
        return loss, new_buf, new_img

    def _outer(self, reals: List[Tensor], seeds, buf: Optional[Tensor]):
        """(loss, gradient w.r.t. the synthetic images, new momentum buffer, new images); pure:
        ``outer_step`` writes the last two back."""
        loss, grad = self._loss_grad(reals, seeds)
        new_buf, new_img = self._update(grad, buf)
        return loss, grad, new_buf, new_img

    def _loss_grad(self, reals: List[Tensor], seeds):
        """(matching loss of this process's classes, its gradient w.r.t. the synthetic images)."""
        k, ipc, img, mine = self.k, self.ipc, self.image_syn, self.classes
        if isinstance(seeds, Tensor):
            keys = class_keys(self.key_base, seeds, k)
            seeds = [keys[c] for c in range(k)]
        syns = img.split(ipc)  # one backward node for all classes (slices: one each)
        loss = match_loss_auto(self.net, [reals[c] for c in mine], [syns[c] for c in mine], mine,
                               [seeds[c] for c in mine], self.strategy, self.param, self.metric, self.matching)
        (grad,) = torch.autograd.grad(loss, [img])
        return loss.detach(), grad

    @torch.no_grad()
    def _update(self, grad: Tensor, buf: Optional[Tensor]):
        """torch.optim.SGD(momentum=m), written out with its ops (module docstring): (new momentum
        buffer, new images)."""
        new_buf = grad.detach().clone() if buf is None else buf.mul(self.momentum).add(grad)
        return new_buf, self.image_syn.add(new_buf, alpha=-self.lr_img)

    # -- the inner epoch -----------------------------------------------------------------------

    def inner_epoch(self, images: Tensor, labels: Tensor) -> None:
        """One shuffled pass of SGD (lr_net, no momentum) over (images, labels), every batch
        augmented per sample (seed -1): ``evaluate.train_epoch`` with the update written out.
        The shuffle is drawn here, from torch's global generator, as train_epoch draws it."""
        self.net.train()
        perm = torch.randperm(images.shape[0], device=images.device)
        self._epoch_fn(images, labels, perm)

    def _epoch(self, images: Tensor, labels: Tensor, perm: Tensor) -> None:
        for start in range(0, images.shape[0], self.batch_train):
            idx = perm[start:start + self.batch_train]
            x = DiffAugment(images[idx], self.strategy, seed=-1, param=self.param)
            loss = F.cross_entropy(self.net(x), labels[idx])
            grads = torch.autograd.grad(loss, self.params)
            with torch.no_grad():
                torch._foreach_add_(self.params, list(grads), alpha=-self.lr_net)
