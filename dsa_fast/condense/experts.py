"""Expert trajectories for trajectory matching (``--method mtt``): training and the files.

An expert is a freshly initialised network trained on the whole real training set for ``epochs``
epochs: SGD (lr ``lr``, no momentum, no weight decay), shuffled batches of ``batch``, every batch
augmented per sample with DSA (``evaluate.train_epoch``, seed -1), cross-entropy. Its trajectory is
the flat parameter vector (``functional.FlatNetwork`` order) before the first epoch and after every
epoch: ``epochs + 1`` snapshots. Expert k draws everything from the stream (seed, STREAM_EXPERT, k),
so it is the same network whether it is trained alone, after others, or in a resumed command.

The folder (docs/condense.md, "Expert trajectories"):

- ``experts.json``: ``format`` (``EXPERTS_FORMAT``), the settings that made the experts
  (``identity``: dataset, data source, model, zca, epochs, lr, batch, strategy, align_corners, seed)
  and the network's shapes (``num_params``, ``channel``, ``im_size``, ``num_classes``).
- ``expert_<k>.pt`` (k = 0000, 0001, ...): ``torch.save`` of a dict, read with
  ``torch.load(path, weights_only=True)``: ``format``, ``index`` k, ``identity`` (as the manifest),
  ``trajectory`` float32 [epochs + 1, num_params], ``test_accuracy`` (of the last snapshot, on the
  test set, no augmentation).
- ``zca.pt`` (with zca only): the whitening (``zca.ZCA.state``) fitted on the training set; the
  experts were trained on whitened images, and distillation and evaluation whiten with it.

Every file is written atomically, the manifest first; a killed command loses at most the expert in
flight, and the same command again trains only the experts whose files are missing.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .. import ParamDiffAug
from .checkpoint import atomic_torch_save, atomic_write_bytes
from .data import INFO, TensorDataset, load_tensors
from .evaluate import mean_std, test_accuracy, train_epoch
from .functional import FlatNetwork
from .networks import check_model_name, get_network, has_batchnorm
from .outputs import read_json
from .progress import Progress, plural
from .rng import STREAM_EXPERT, derive_seed, global_rng_scope
from .zca import ZCA, fit_zca

logger = logging.getLogger("dsa_fast.condense")

EXPERTS_FORMAT = "dsa_fast.experts/1"
MANIFEST = "experts.json"
ZCA_FILE = "zca.pt"
# The trajectory-matching code's augmentation for every dataset (its default dsa_strategy).
MTT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
ZCA_DATASETS = ("CIFAR10", "CIFAR100")  # whitened by default, as in the published runs


class ExpertsError(ValueError):
    """An experts folder that cannot be used as asked (missing, foreign, of other settings)."""


def mtt_param() -> ParamDiffAug:
    """The trajectory-matching family's DSA: affine_grid/grid_sample with align_corners=True."""
    return ParamDiffAug(align_corners=True)


@dataclass(frozen=True)
class ExpertSettings:
    """What makes a set of experts; ``data_path`` None is the embedded MNIST subset."""

    dataset: str = "MNIST"
    data_path: Optional[str] = None
    model: str = "ConvNet"
    epochs: int = 50
    lr: float = 0.01
    batch: int = 256
    strategy: str = MTT_STRATEGY
    zca: bool = False
    seed: int = 0

    def identity(self) -> Dict[str, Any]:
        d = asdict(self)
        d["data_path"] = None if self.data_path is None else os.path.abspath(self.data_path)
        d["align_corners"] = True
        return d

    def check(self) -> None:
        if self.dataset not in INFO:
            raise ExpertsError(f"dsa_fast.condense: unknown dataset {self.dataset!r}; expected one of "
                               f"{tuple(INFO)}")
        if self.data_path is None and self.dataset != "MNIST":
            raise ExpertsError(f"dsa_fast.condense: {self.dataset} needs --data-path DIR (without it only "
                               f"MNIST, on the embedded subset)")
        check_model_name(self.model)
        for name in ("epochs", "batch"):
            if getattr(self, name) < 1:
                raise ExpertsError(f"dsa_fast.condense: {name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ExpertsError(f"dsa_fast.condense: lr must be > 0, got {self.lr}")


def expert_path(folder: str, k: int) -> str:
    return os.path.join(folder, f"expert_{k:04d}.pt")


def _differences(saved: Dict[str, Any], wanted: Dict[str, Any]) -> str:
    return "; ".join(f"{k}: folder {saved.get(k)!r} vs asked {wanted.get(k)!r}"
                     for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k))


def prepare_data(settings: ExpertSettings, device, folder: str) -> Tuple[TensorDataset, TensorDataset]:
    """The train and test splits on ``device``, whitened when ``settings.zca`` (the whitening of
    ``folder``, fitted on the training set and written there when missing)."""
    train = load_tensors(settings.dataset, settings.data_path, "train", device)
    test = load_tensors(settings.dataset, settings.data_path, "test", device)
    if not settings.zca:
        return train, test
    path = os.path.join(folder, ZCA_FILE)
    if not os.path.isfile(path):
        atomic_torch_save(fit_zca(train.images, train.info.mean, train.info.std).state(), path)
    zca = load_zca(folder)
    return whiten(train, zca), whiten(test, zca)


def load_zca(folder: str) -> ZCA:
    """The whitening stored with the experts of ``folder``."""
    path = os.path.join(folder, ZCA_FILE)
    if not os.path.isfile(path):
        raise ExpertsError(f"dsa_fast.condense: {path} is missing: the experts in {folder} were trained on "
                           f"whitened images and the whitening is needed to use them")
    return ZCA.from_state(torch.load(path, map_location="cpu", weights_only=True))


def whiten(data: TensorDataset, zca: ZCA) -> TensorDataset:
    return TensorDataset(zca(data.images), data.labels, data.info)


def train_expert(train: TensorDataset, test: TensorDataset, settings: ExpertSettings, k: int,
                 on_epoch=None) -> Tuple[Tensor, float]:
    """Expert k: its trajectory (float32 [epochs + 1, P] on the CPU) and final test accuracy."""
    info = train.info
    device = train.images.device
    param = mtt_param()
    with global_rng_scope(device, derive_seed(settings.seed, STREAM_EXPERT, k)):
        net = get_network(settings.model, info.channel, info.num_classes, info.im_size, device=device)
        flat = FlatNetwork(net)
        optimizer = torch.optim.SGD(net.parameters(), lr=settings.lr, momentum=0.0, weight_decay=0.0)
        snapshots = [flat.flatten().cpu()]
        for _ in range(settings.epochs):
            train_epoch(net, train.images, train.labels, optimizer, settings.batch, settings.strategy, param)
            snapshots.append(flat.flatten().cpu())
            if on_epoch is not None:
                on_epoch(1)
        acc = float(test_accuracy(net, test.images, test.labels))
    return torch.stack(snapshots), acc


def _read_manifest(folder: str) -> Optional[Dict[str, Any]]:
    """The manifest of ``folder`` (None: it has none), or an ExpertsError if it is not one of ours."""
    path = os.path.join(folder, MANIFEST)
    try:
        manifest = read_json(path)
    except (ValueError, UnicodeDecodeError):
        manifest = {}
    if manifest is not None and not (isinstance(manifest, dict) and manifest.get("format") == EXPERTS_FORMAT
                                     and isinstance(manifest.get("identity"), dict)):
        raise ExpertsError(f"dsa_fast.condense: {path} is not a dsa_fast experts manifest (format "
                           f"{EXPERTS_FORMAT!r})")
    return manifest


def read_expert(folder: str, k: int, identity: Dict[str, Any], mmap: bool = False) -> Optional[Dict[str, Any]]:
    """Expert k of ``folder`` if its file is complete and of ``identity``; None when it is absent."""
    path = expert_path(folder, k)
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise ExpertsError(f"dsa_fast.condense: {path} is unreadable ({type(e).__name__}); delete it and run the "
                           f"experts command again to retrain that expert") from None
    if not isinstance(state, dict) or state.get("format") != EXPERTS_FORMAT or state.get("index") != k \
            or state.get("identity") != identity:
        raise ExpertsError(f"dsa_fast.condense: {path} is not expert {k} of {os.path.join(folder, MANIFEST)}; "
                           f"delete it and run the experts command again")
    return state


def train_experts(settings: ExpertSettings, count: int, folder: str, *, device: str = "cpu",
                  progress: Optional[bool] = None) -> List[float]:
    """Train the experts 0..count-1 of ``folder`` that are not there yet; every expert's final test
    accuracy (those found included), in order."""
    settings.check()
    if count < 1:
        raise ExpertsError(f"dsa_fast.condense: the number of experts must be >= 1, got {count}")
    identity = settings.identity()
    manifest = _read_manifest(folder) if os.path.isdir(folder) else None
    if manifest is not None and manifest["identity"] != identity:
        raise ExpertsError(f"dsa_fast.condense: {folder} holds experts of other settings "
                           f"({_differences(manifest['identity'], identity)}); choose another --out")
    if manifest is None:  # a new folder: the manifest first, so every later file is known to be of it
        info = INFO[settings.dataset]
        net = get_network(settings.model, info.channel, info.num_classes, info.im_size, device="meta")
        if has_batchnorm(net):
            raise ExpertsError(f"dsa_fast.condense: {settings.model} has batch norm; trajectory matching "
                               f"runs the network functionally on its parameters only (no running statistics)")
        manifest = {"format": EXPERTS_FORMAT, "identity": identity, "num_params": FlatNetwork(net).num_params,
                    "channel": info.channel, "im_size": list(info.im_size), "num_classes": info.num_classes}
        os.makedirs(folder, exist_ok=True)
        atomic_write_bytes(os.path.join(folder, MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode())
    train, test = prepare_data(settings, device, folder)
    accs: List[Optional[float]] = [None] * count
    todo = []
    for k in range(count):
        state = read_expert(folder, k, identity, mmap=True)
        if state is None:
            todo.append(k)
        else:
            accs[k] = float(state["test_accuracy"])
    if count - len(todo):
        logger.info("%s: %s of %d already there; training %d", folder, plural(count - len(todo), "expert"), count,
                    len(todo))
    with Progress(len(todo) * settings.epochs, desc="experts: epoch", unit="epoch", log_every=settings.epochs,
                  bar=progress) as bar:
        for k in todo:
            trajectory, acc = train_expert(train, test, settings, k, on_epoch=bar.update)
            atomic_torch_save({"format": EXPERTS_FORMAT, "index": k, "identity": identity,
                               "trajectory": trajectory, "test_accuracy": acc}, expert_path(folder, k))
            accs[k] = acc
            logger.info("expert %d: test accuracy %.2f %% after %s", k, 100 * acc, plural(settings.epochs, "epoch"))
    m, s = mean_std(accs)
    logger.info("%s in %s: final test accuracy %.2f ± %.2f %% (each: %s)", plural(count, "expert"), folder,
                100 * m, 100 * s, ", ".join(f"{100 * a:.2f}" for a in accs))
    return [float(a) for a in accs]


class Experts:
    """A folder of experts opened for distillation: its manifest, the experts present, the
    whitening; trajectories read on demand (memory-mapped: only the snapshots used are read)."""

    def __init__(self, folder: str):
        if not os.path.isdir(folder):
            raise ExpertsError(f"dsa_fast.condense: experts folder {folder} does not exist; train experts with "
                               f"python -m dsa_fast.condense experts --out {folder} ...")
        manifest = _read_manifest(folder)
        if manifest is None:
            raise ExpertsError(f"dsa_fast.condense: {folder} has no {MANIFEST}: not an experts folder (train experts "
                               f"with python -m dsa_fast.condense experts --out {folder} ...)")
        self.folder, self.manifest = folder, manifest
        self.identity: Dict[str, Any] = manifest["identity"]
        self.indices = []
        k = 0
        while os.path.isfile(expert_path(folder, k)):
            self.indices.append(k)
            k += 1
        if not self.indices:
            raise ExpertsError(f"dsa_fast.condense: {folder} holds no expert files yet (expert_0000.pt); finish the "
                               f"experts command first")

    @property
    def epochs(self) -> int:
        return int(self.identity["epochs"])

    def check_run(self, dataset: str, data_path: Optional[str], model: str, zca: bool) -> None:
        """Refuse experts made for another dataset, data, model or whitening."""
        wanted = {"dataset": dataset, "data_path": None if data_path is None else os.path.abspath(data_path),
                  "model": model, "zca": zca}
        saved = {k: self.identity.get(k) for k in wanted}
        if saved != wanted:
            raise ExpertsError(f"dsa_fast.condense: the experts in {self.folder} do not fit this run "
                               f"({_differences(saved, wanted)})")

    def snapshots(self, k: int, epochs: Tuple[int, ...]) -> Tensor:
        """Snapshots ``epochs`` of expert k, [len(epochs), P] (copies)."""
        state = read_expert(self.folder, k, self.identity, mmap=True)
        if state is None:
            raise ExpertsError(f"dsa_fast.condense: {expert_path(self.folder, k)} has gone")
        traj = state["trajectory"]
        return torch.stack([traj[e].clone() for e in epochs])
