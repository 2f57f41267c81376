"""``mtt``: trajectory matching (Cazenavette et al., CVPR 2022), one iteration as its distill.py runs it.

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

The experts (``experts.py``) are read from ``--experts``; the embedded main job trains its own into
the runs folder once. With ``--zca on`` the run works on images whitened as the experts were. The
evaluation trains its networks with the learned α as their learning rate.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ... import DiffAugment, ParamDiffAug
from ..data import INFO
from ..experts import MTT_STRATEGY, ZCA_DATASETS, Experts, ExpertSettings, ExpertsError, load_zca, train_experts, whiten
from ..functional import FlatNetwork
from ..networks import get_network
from ..settings import Setting
from .base import Method

ON_OFF = ("off", "on")
# The published CIFAR-100 ipc 1 command starts no later than epoch 20 (distill.py's default: 25).
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


class MTT(Method):
    name = "mtt"
    help = "trajectory matching (with DSA; needs experts)"
    defaults = {"iterations": 5000, "lr_img": 1000.0}  # distill.py
    no_loops_reason = "one image step per iteration, from an expert trajectory"
    strategy = MTT_STRATEGY  # distill.py's default, for every dataset
    align_corners = True  # the MTT family's copy of DiffAugment
    settings = (
        Setting("experts", None, "folder of expert trajectories (the experts sub-command writes one)",
                derived="on the embedded subset: experts of its own, trained beside the run folder once; "
                        "required with --data-path"),
        Setting("syn_steps", 20, "student steps on the synthetic set per iteration", type=int, minimum=1),
        Setting("expert_epochs", 3, "expert epochs the student steps are matched against", type=int, minimum=1),
        Setting("max_start_epoch", None, "the start epoch is drawn from [0, max_start_epoch)", type=int, minimum=1,
                derived=f"25; {MAX_START_EPOCH_CIFAR100_IPC1} for CIFAR100 ipc 1"),
        Setting("lr_lr", 1e-05, "learning rate of the learned student step size (SGD, momentum 0.5)", type=float,
                minimum=0),
        Setting("lr_teacher", 0.01, "initial student step size (the experts' learning rate)", type=float),
        Setting("batch_syn", None, "synthetic images per student step", type=int, minimum=1,
                derived="ipc x classes (the whole set)"),
        Setting("zca", None, "whitened images (the experts' ZCA whitening)", choices=ON_OFF,
                derived="on for CIFAR10/CIFAR100, off otherwise"),
        Setting("mtt_checkpoint", "off", "recompute each student step's forward in the backward (same loss and "
                "gradients, the memory of one step instead of syn_steps)", choices=ON_OFF, identity=False),
    )
    # The embedded main job: measured in docs/condense.md; its experts are MAIN_JOB_*.
    main_job = {"iterations": 40, "syn_steps": 10, "expert_epochs": 2, "max_start_epoch": 2, "lr_img": 1000.0,
                "model": "ConvNetW16", "strategy": "color_crop_cutout_scale_rotate"}

    @classmethod
    def resolve(cls, c):
        """The derived settings (start epoch bound, batch_syn, zca) and the checks that need no file."""
        fill: Dict[str, Any] = {}
        if c.max_start_epoch is None:
            fill["max_start_epoch"] = MAX_START_EPOCH_CIFAR100_IPC1 if c.dataset == "CIFAR100" and c.ipc == 1 else 25
        if c.batch_syn is None:
            fill["batch_syn"] = c.ipc * INFO[c.dataset].num_classes
        if c.zca is None:
            fill["zca"] = "on" if c.dataset in ZCA_DATASETS else "off"
        c = c.replace(**fill)
        if not c.lr_teacher > 0:
            raise ValueError(f"dsa_fast.condense: lr_teacher must be > 0, got {c.lr_teacher}")
        if c.experts is None:
            if c.data_path is not None:
                raise ValueError("dsa_fast.condense: --method mtt needs --experts DIR, a folder of expert "
                                 "trajectories (python -m dsa_fast.condense experts --help)")
            if c.zca == "on":
                raise ValueError("dsa_fast.condense: the main job's own experts are not whitened; give --experts "
                                 "DIR for --zca on")
            return c
        return c.replace(experts=os.path.abspath(c.experts))  # --resume from another working directory

    def __init__(self, state):
        """Open (for the main job: train when missing) the experts, whiten the data as they were,
        build the student network and α. Bad experts raise ``ExpertsError`` before any output."""
        super().__init__(state)
        cfg = state.config
        folder = cfg.experts
        if folder is None:  # the main job: its own experts, trained once
            folder = main_job_experts(cfg.out, cfg.model)
            settings = ExpertSettings(dataset=cfg.dataset, data_path=None, model=cfg.model,
                                      epochs=MAIN_JOB_EXPERT_EPOCHS, lr=cfg.lr_teacher, batch=cfg.batch_train,
                                      strategy=cfg.strategy, seed=MAIN_JOB_EXPERT_SEED)
            train_experts(settings, MAIN_JOB_EXPERTS, folder, device=str(state.device), progress=state.progress)
        experts = Experts(folder)
        experts.check_run(cfg.dataset, cfg.data_path, cfg.model, cfg.zca == "on")
        if cfg.max_start_epoch + cfg.expert_epochs > experts.epochs:
            raise ExpertsError(
                f"dsa_fast.condense: max_start_epoch {cfg.max_start_epoch} + expert_epochs {cfg.expert_epochs} = "
                f"{cfg.max_start_epoch + cfg.expert_epochs} is beyond the {experts.epochs} epochs of the experts in "
                f"{folder}; lower --max-start-epoch or --expert-epochs, or train longer experts")
        if cfg.zca == "on":  # the run's data, and an initial set of real images, in the experts' space
            zca = load_zca(folder)
            state.train, state.test = whiten(state.train, zca), whiten(state.test, zca)
            if cfg.init == "real":
                with torch.no_grad():
                    state.image_syn.copy_(zca(state.image_syn))
        info = state.dataset
        self.fnet = FlatNetwork(get_network(cfg.model, info.channel, info.num_classes, info.im_size,
                                            device=state.device))
        if self.fnet.num_params != experts.manifest["num_params"]:
            raise ExpertsError(f"dsa_fast.condense: the experts in {folder} have {experts.manifest['num_params']} "
                               f"parameters, {cfg.model} here {self.fnet.num_params}")
        self.experts = experts
        self.syn_lr = torch.tensor(cfg.lr_teacher, device=state.device).requires_grad_(True)
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=cfg.lr_lr, momentum=0.5)
        self.order: List[int] = []  # the expert order of this pass (a shuffled round robin)
        self.position = 0

    def iteration(self) -> Tensor:
        s = self.state
        cfg = s.config
        if self.position >= len(self.order):
            perm = torch.randperm(len(self.experts.indices), generator=s.control).tolist()
            self.order, self.position = [self.experts.indices[i] for i in perm], 0
        k = self.order[self.position]
        self.position += 1
        start_epoch = int(torch.randint(0, cfg.max_start_epoch, (1,), generator=s.control))
        start, target = self.experts.snapshots(k, (start_epoch, start_epoch + cfg.expert_epochs)).to(s.device)
        loss = mtt_loss(self.fnet, start, target, s.image_syn, s.label_syn, self.syn_lr, syn_steps=cfg.syn_steps,
                        batch_syn=cfg.batch_syn, augment=augmenter(cfg.strategy, s.param),
                        checkpointed=cfg.mtt_checkpoint == "on")
        s.opt_img.zero_grad(set_to_none=True)
        self.opt_lr.zero_grad(set_to_none=True)
        loss.backward(inputs=[s.image_syn, self.syn_lr])
        s.opt_img.step()
        self.opt_lr.step()
        return loss.detach()

    def eval_lr(self) -> Optional[float]:
        """The evaluation's learning rate: the learned α."""
        return float(self.syn_lr.detach())

    def outputs(self) -> Dict[str, Any]:
        """What ``synthetic.pt`` adds: the evaluation's learning rate (α), its augmentation's
        align_corners and the whitening setting."""
        return {"lr_net": self.eval_lr(), "align_corners": self.align_corners, "zca": self.state.config.zca}

    def state_dict(self) -> Dict[str, Any]:
        return {"syn_lr": self.syn_lr.detach(), "opt_lr": self.opt_lr.state_dict(), "order": list(self.order),
                "position": self.position}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        with torch.no_grad():
            self.syn_lr.copy_(state["syn_lr"].to(self.syn_lr.device))
        self.opt_lr.load_state_dict(state["opt_lr"])
        self.order, self.position = [int(k) for k in state["order"]], int(state["position"])
