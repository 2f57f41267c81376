"""Trajectory matching (MTT: Cazenavette et al., CVPR 2022), one iteration as its distill.py runs it.

1. The next expert k of a shuffled round-robin order and a start epoch s uniform in
   [0, max_start_epoch); θ_0 = snapshot s of expert k, θ* = snapshot s + expert_epochs.
2. ``syn_steps`` student steps: the next ``batch_syn`` synthetic images of a fresh permutation,
   DiffAugment'ed per sample (unseeded; the MTT family's ``align_corners=True``), cross-entropy of
   the network run at θ_k (``functional.FlatNetwork``), θ_{k+1} = θ_k − α ∇_θ CE with the graph
   kept, so the loss reaches the images and α.
3. loss = ‖θ_N − θ*‖² / ‖θ_0 − θ*‖²; SGD with momentum 0.5 on the images (lr_img) and on α (lr_lr).

``checkpointed=True`` recomputes each student step's forward in the backward
(``torch.utils.checkpoint``): the same loss and gradients, the memory of one step's activations
instead of ``syn_steps`` of them. The augmentation runs outside the recomputed part, so what a step
sees does not depend on the random state at recomputation.

The evaluation trains its networks with the learned α as their learning rate.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .. import DiffAugment, ParamDiffAug
from .experts import Experts, ExpertSettings, ExpertsError, load_zca, mtt_param, train_experts, whiten
from .functional import FlatNetwork
from .networks import get_network

if TYPE_CHECKING:  # the run state; loop.py imports methods.py, which imports this module
    from .loop import _Run

# The published defaults (distill.py), the method's own settings (config.py applies them).
DEFAULTS: Dict[str, Any] = {
    "iterations": 5000, "lr_img": 1000.0, "syn_steps": 20, "expert_epochs": 3, "max_start_epoch": 25,
    "lr_lr": 1e-05, "lr_teacher": 0.01,
}
# The published CIFAR-100 ipc 1 command starts no later than epoch 20.
MAX_START_EPOCH_CIFAR100_IPC1 = 20

# The main job's experts (``python -m dsa_fast.condense --method mtt``): a few short ones on the
# embedded subset, trained into the runs folder when missing and reused by later runs.
MAIN_JOB_EXPERTS = 2
MAIN_JOB_EXPERT_EPOCHS = 4
MAIN_JOB_EXPERT_SEED = 0


def student_step(fnet: FlatNetwork, theta: Tensor, x: Tensor, y: Tensor, syn_lr: Tensor) -> Tensor:
    """θ − α ∇_θ CE(net_θ(x), y), differentiable in θ, x and α."""
    ce = F.cross_entropy(fnet(theta, x), y)
    (grad,) = torch.autograd.grad(ce, theta, create_graph=True)
    return theta - syn_lr * grad


def unroll(fnet: FlatNetwork, theta0: Tensor, images: Tensor, labels: Tensor, syn_lr: Tensor, *, syn_steps: int,
           batch_syn: int, augment: Callable[[Tensor], Tensor], checkpointed: bool = False) -> Tensor:
    """θ_N after ``syn_steps`` student steps from ``theta0`` (which must require grad)."""
    theta = theta0
    chunks: List[Tensor] = []
    for _ in range(syn_steps):
        if not chunks:  # a fresh permutation in batches of batch_syn, taken from the end (as distill.py)
            chunks = list(torch.randperm(images.shape[0], device=images.device).split(batch_syn))
        idx = chunks.pop()
        x, y = augment(images[idx]), labels[idx]
        if checkpointed:
            theta = checkpoint(student_step, fnet, theta, x, y, syn_lr, use_reentrant=False,
                               preserve_rng_state=False)
        else:
            theta = student_step(fnet, theta, x, y, syn_lr)
    return theta


def trajectory_loss(theta_n: Tensor, start: Tensor, target: Tensor) -> Tensor:
    """‖θ_N − θ*‖² / ‖θ_0 − θ*‖²."""
    return (theta_n - target).pow(2).sum() / (start - target).pow(2).sum()


def mtt_loss(fnet: FlatNetwork, start: Tensor, target: Tensor, images: Tensor, labels: Tensor, syn_lr: Tensor, *,
             syn_steps: int, batch_syn: int, augment: Callable[[Tensor], Tensor],
             checkpointed: bool = False) -> Tensor:
    """The matching loss of one iteration from expert snapshots ``start`` and ``target``."""
    theta0 = start.detach().clone().requires_grad_(True)
    theta_n = unroll(fnet, theta0, images, labels, syn_lr, syn_steps=syn_steps, batch_syn=batch_syn,
                     augment=augment, checkpointed=checkpointed)
    return trajectory_loss(theta_n, start, target)


def augmenter(strategy: str, param: ParamDiffAug) -> Callable[[Tensor], Tensor]:
    """Unseeded (per-sample) DiffAugment with ``strategy`` and ``param``."""
    return lambda x: DiffAugment(x, strategy, seed=-1, param=param)


def main_job_experts(out: str, model: str) -> str:
    """Where the main job keeps its experts: beside its run folder, shared by later runs."""
    return os.path.join(os.path.dirname(os.path.abspath(out)), f"mnist-subset-experts-{model}")


@dataclass
class MTTState:
    """What trajectory matching adds to a run: the experts, the student network, α and its
    optimiser, and the expert order (a shuffled round robin)."""

    experts: Experts
    fnet: FlatNetwork
    syn_lr: Tensor
    opt_lr: torch.optim.Optimizer
    order: List[int]
    position: int


class TrajectoryMatching:
    """``mtt``: the method object of ``methods.METHODS``; its per-run state is ``run.mtt``."""

    def setup(self, run: "_Run") -> None:
        """Open (for the main job: train when missing) the experts, whiten the data as they were,
        build the student network and α. Bad experts raise ``ExpertsError`` before any output."""
        cfg = run.cfg
        folder = cfg.experts
        if folder is None:  # the main job: its own experts, trained once
            folder = main_job_experts(cfg.out, cfg.model)
            settings = ExpertSettings(dataset=cfg.dataset, data_path=None, model=cfg.model,
                                      epochs=MAIN_JOB_EXPERT_EPOCHS, lr=cfg.lr_teacher, batch=cfg.batch_train,
                                      strategy=cfg.strategy, seed=MAIN_JOB_EXPERT_SEED)
            train_experts(settings, MAIN_JOB_EXPERTS, folder, device=cfg.device, progress=run.progress)
        experts = Experts(folder)
        experts.check_run(cfg.dataset, cfg.data_path, cfg.model, cfg.zca == "on")
        if cfg.max_start_epoch + cfg.expert_epochs > experts.epochs:
            raise ExpertsError(
                f"dsa_fast.condense: max_start_epoch {cfg.max_start_epoch} + expert_epochs {cfg.expert_epochs} = "
                f"{cfg.max_start_epoch + cfg.expert_epochs} is beyond the {experts.epochs} epochs of the experts in "
                f"{folder}; lower --max-start-epoch or --expert-epochs, or train longer experts")
        if cfg.zca == "on":
            zca = load_zca(folder)
            run.train, run.test = whiten(run.train, zca), whiten(run.test, zca)
        info = run.info
        fnet = FlatNetwork(get_network(cfg.model, info.channel, run.num_classes, info.im_size, device=run.device))
        if fnet.num_params != experts.manifest["num_params"]:
            raise ExpertsError(f"dsa_fast.condense: the experts in {folder} have {experts.manifest['num_params']} "
                               f"parameters, {cfg.model} here {fnet.num_params}")
        run.param = mtt_param()  # the evaluation's augmentation: the MTT family's
        run.match_param = ParamDiffAug(rng=cfg.rng, align_corners=True)
        syn_lr = torch.tensor(cfg.lr_teacher, device=run.device).requires_grad_(True)
        run.mtt = MTTState(experts, fnet, syn_lr, torch.optim.SGD([syn_lr], lr=cfg.lr_lr, momentum=0.5), [], 0)

    def iteration(self, run: "_Run") -> Tensor:
        cfg, st = run.cfg, run.mtt
        if st.position >= len(st.order):
            perm = torch.randperm(len(st.experts.indices), generator=run.control).tolist()
            st.order, st.position = [st.experts.indices[i] for i in perm], 0
        k = st.order[st.position]
        st.position += 1
        s = int(torch.randint(0, cfg.max_start_epoch, (1,), generator=run.control))
        start, target = st.experts.snapshots(k, (s, s + cfg.expert_epochs)).to(run.device)
        loss = mtt_loss(st.fnet, start, target, run.image_syn, run.label_syn, st.syn_lr, syn_steps=cfg.syn_steps,
                        batch_syn=cfg.batch_syn or run.image_syn.shape[0],
                        augment=augmenter(cfg.strategy, run.match_param), checkpointed=cfg.mtt_checkpoint == "on")
        run.opt_img.zero_grad(set_to_none=True)
        st.opt_lr.zero_grad(set_to_none=True)
        loss.backward(inputs=[run.image_syn, st.syn_lr])
        run.opt_img.step()
        st.opt_lr.step()
        return loss.detach()

    def eval_lr(self, run: "_Run") -> float:
        """The evaluation's learning rate: the learned α."""
        return float(run.mtt.syn_lr.detach())

    def outputs(self, run: "_Run") -> Dict[str, Any]:
        """What ``synthetic.pt`` adds: the evaluation's learning rate (α) and the whitening setting."""
        return {"lr_net": self.eval_lr(run), "zca": run.cfg.zca}

    def state(self, run: "_Run") -> Dict[str, Any]:
        st = run.mtt
        return {"syn_lr": st.syn_lr.detach().clone(), "opt_lr": copy.deepcopy(st.opt_lr.state_dict()),
                "order": list(st.order), "position": st.position}

    def load_state(self, run: "_Run", state: Dict[str, Any]) -> None:
        st = run.mtt
        with torch.no_grad():
            st.syn_lr.copy_(state["syn_lr"].to(st.syn_lr.device))
        st.opt_lr.load_state_dict(state["opt_lr"])
        st.order, st.position = [int(k) for k in state["order"]], int(state["position"])
