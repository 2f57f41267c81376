"""What a condensation method is: a ``Method`` subclass (its declarations and its iteration) and the
``RunState`` the loop hands it.

The loop (``loop.py``) owns everything the methods share: data, synthetic set and its optimiser,
generators, evaluation, outputs, checkpoints, resume and progress. Before each iteration it seeds
torch's global generators from the run's control stream (network initialisation and per-sample
augmentation use them), then calls ``method.iteration()``, which updates ``state.image_syn`` and
returns the iteration's matching loss as a detached 0-d tensor on the device (the loop averages it
for the log lines and metrics; no host sync there).

With several processes (``state.dist``, distributed.py) every process holds the whole state; a
method divides what it likes among them (``dist.share``) and must leave the synthetic set
identical everywhere (``dist.sum_grad`` before the update, ``dist.same_module`` after replicated
training).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ... import ParamDiffAug
from ..data import DatasetInfo, TensorDataset
from ..distributed import Processes
from ..settings import Setting

if TYPE_CHECKING:  # config.py reads the registry
    from ..config import CondenseConfig


@dataclass
class RunState:
    """What a method reads and updates in a run. The loop makes it, checkpoints it and resumes it.

    - ``config``: the resolved settings (``config.resolve``); a method's own settings are
      attributes of it like the shared ones.
    - ``dataset``: the dataset's shape, classes and normalisation (``num_classes`` below).
    - ``device``: where every tensor here lives.
    - ``image_syn``: the synthetic images [K * ipc, C, H, W], a float32 leaf that requires grad;
      class c is rows c * ipc to (c + 1) * ipc. The method updates it in place (by ``opt_img``, or
      under ``torch.no_grad``).
    - ``label_syn``: their labels [K * ipc], int64.
    - ``opt_img``: ``torch.optim.SGD([image_syn], lr=lr_img, momentum=0.5)``; its state is
      checkpointed.
    - ``param``: the ``ParamDiffAug`` of the iteration's augmentations; ``param.rng`` is 'compat'
      (the official per-class seeds, drawn from ``control`` on the host) or 'device'.
    - ``control``: the CPU generator of the run's control stream (checkpointed).
    - ``key_base``, ``key_step``: rng='device' keys, ``steps.class_keys(key_base, key_step, K)``;
      ``key_step`` is a 0-d int64 counter on the device that the method advances by one per image
      step (checkpointed).
    - ``dist``: this process's part in the job (``distributed.SINGLE`` when alone).
    - ``train``, ``test``: the normalised training and test splits on the device. A method may
      replace them in its ``__init__`` (mtt: whitened as its experts were); the loop samples real
      batches, the baseline and the evaluation's test from them afterwards.
    - ``sample_real(c, n)``: n random real images of class c, from the run's sampling stream.
    - ``progress``: the run's progress setting (a bar on a terminal when None), for work a method
      reports itself.
    """

    config: "CondenseConfig"
    dataset: DatasetInfo
    device: torch.device
    image_syn: Tensor
    label_syn: Tensor
    opt_img: torch.optim.SGD
    param: ParamDiffAug
    control: torch.Generator
    key_base: int
    key_step: Tensor
    dist: Processes
    train: TensorDataset
    test: TensorDataset
    sample_real: Callable[[int, int], Tensor]
    progress: Optional[bool] = None

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes


class Method:
    """One condensation method. A subclass declares (class attributes, read by ``config.py`` and
    ``cli.py`` before any run) and computes (an instance per run, made by the loop with the run's
    ``RunState``):

    - ``name``: the value of ``--method``; ``help``: one phrase for ``--method``'s help.
    - ``defaults``: the published values of shared settings left None (``iterations``, ``lr_img``).
    - ``loops``: the published (outer_loop, inner_loop) per ipc when the iteration has outer and
      inner loops; None when it has none (``no_loops_reason`` then says why, for the error).
    - ``strategy``: the default DSA strategy; None: the dataset's published one.
    - ``augments``: whether the iteration augments with the run's strategy (the evaluation always
      does).
    - ``compiles``: whether ``--compile on`` applies.
    - ``settings``: the method's own settings (``Setting``); a flag each, saved in config.json for
      runs of this method only.
    - ``main_job``: what the embedded main job (``config.main_job_config``) changes for it.
    - ``align_corners``: the ``ParamDiffAug.align_corners`` of the iteration's and the evaluation's
      augmentation (True: the MTT family's copy).
    - ``resolve(config)`` (a classmethod): the method's own derived settings and checks, after the
      shared ones (``config.resolve``); returns the config.

    ``iteration()`` does one iteration; ``state_dict()``/``load_state_dict()`` carry what the
    method keeps between iterations beyond the ``RunState`` into the checkpoint (plain data and
    tensors only: the checkpoint loads with ``weights_only=True``). ``eval_lr()``: the learning
    rate the evaluation trains the synthetic set with (None: ``lr_net``); ``outputs()``: entries
    ``synthetic.pt`` adds.
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}
    loops: ClassVar[Optional[Mapping[int, Tuple[int, int]]]] = None
    no_loops_reason: ClassVar[str] = "it has no outer and inner loops"
    strategy: ClassVar[Optional[str]] = None
    augments: ClassVar[bool] = True
    compiles: ClassVar[bool] = False
    settings: ClassVar[Tuple[Setting, ...]] = ()
    main_job: ClassVar[Mapping[str, Any]] = {}
    align_corners: ClassVar[bool] = False

    @classmethod
    def resolve(cls, config: "CondenseConfig") -> "CondenseConfig":
        return config

    def __init__(self, state: RunState):
        self.state = state

    def iteration(self) -> Tensor:
        """One iteration's update of ``state.image_syn``; returns the detached matching loss."""
        raise NotImplementedError

    def eval_lr(self) -> Optional[float]:
        return None

    def outputs(self) -> Dict[str, Any]:
        return {}

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state:
            raise ValueError(f"dsa_fast.condense: method {self.name!r} keeps no state, the checkpoint has "
                             f"{sorted(state)}")
