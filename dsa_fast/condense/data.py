"""The datasets (one ``Dataset`` record each, ``DATASETS``) and the loaders of their original
distribution files in torchvision's folder layout.

Formats read: gzip'ed IDX (MNIST, FashionMNIST; big-endian header, read directly: nothing is
extracted), Python 2 pickles of dicts with 'data' uint8 (N, 3072) in CHW order (CIFAR10 'labels',
CIFAR100 'fine_labels'), MATLAB level 5 (SVHN: X uint8 32x32x3xN, y Nx1, label 10 is the digit 0).
The records at the end of this module name each dataset's files.

Every file is checked against the md5 of the original distribution (the ones torchvision checks)
before it is parsed. A missing or corrupt file raises ``DatasetError`` naming the path and what to
do. Nothing is ever downloaded. Loaders return uint8 images [N, C, H, W] and int64 labels [N].
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .matfile import MatFileError, read_mat
from .registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channel: int
    im_size: Tuple[int, int]
    num_classes: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]


# (dataset name, data root, split, md5 overrides) -> (images uint8 [N, C, H, W], labels int64 [N])
Loader = Callable[[str, str, str, Optional[Mapping[str, Optional[str]]]], Tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Dataset:
    """Everything the package knows of one dataset (``DATASETS``; ``register_dataset`` adds one).

    ``info``: shape, classes and normalisation. ``files``: per split ('train', 'test'), the files
    it is read from, relative to the data root, in reading order, each with the md5 of the
    original distribution (the ones torchvision checks). ``loader(name, root, split, md5s)``
    reads a split: (images uint8 [N, C, H, W], labels int64 [N]); it opens each file of
    ``files[split]`` through ``checked_path`` and reports one that does not parse by
    ``bad_file``. ``strategy``: the DSA strategy of the published commands. ``how_to_get``: what
    to put under the data root (for the errors). ``embedded``: a subset shipped in the package
    that a run without a data path reads (``load_embedded_mnist``'s format), or None.
    ``class_names``: what each label means, for people (the picture of a set), or None where the
    label is the name (digits) or there are too many to spell out on a row (CIFAR-100).
    """

    info: DatasetInfo
    files: Mapping[str, Mapping[str, str]]
    loader: Loader
    strategy: str
    how_to_get: str
    embedded: Optional[str] = None
    class_names: Optional[Tuple[str, ...]] = None

    @property
    def name(self) -> str:
        return self.info.name


DATASETS: Registry[Dataset] = Registry("dataset")


def register_dataset(record: Dataset) -> Dataset:
    """Make ``record`` a choice of ``--dataset``; returns it."""
    if set(record.files) != {"train", "test"}:
        raise ValueError(f"dsa_fast.condense: dataset {record.name!r} needs files for the splits 'train' and "
                         f"'test', has {sorted(record.files)}")
    return DATASETS.add(record.name, record)


def unregister_dataset(name: str) -> None:
    DATASETS.remove(name)


def get_dataset(name: str) -> Dataset:
    """The record of ``name``, or a ValueError naming the datasets there are."""
    return DATASETS.entry(name)


def class_label(dataset: str, k: int) -> str:
    """How a picture names class ``k``: its index, and its name where the index is not the name."""
    names = DATASETS[dataset].class_names if dataset in DATASETS else None
    return f"{k} {names[k]}" if names else str(k)


class _View(Mapping):
    """A read-only mapping of dataset name to one field of its record."""

    def __init__(self, field: Callable[[Dataset], Any]):
        self._field = field

    def __getitem__(self, name: str) -> Any:
        return self._field(DATASETS[name])

    def __iter__(self) -> Iterator[str]:
        return iter(DATASETS)

    def __len__(self) -> int:
        return len(DATASETS)


INFO: Mapping[str, DatasetInfo] = _View(lambda d: d.info)
# md5 of each original file, by path relative to the data root.
ORIGINAL_MD5: Mapping[str, Dict[str, str]] = _View(lambda d: {rel: md5 for split in d.files.values()
                                                              for rel, md5 in split.items()})

EMBEDDED_SUBSET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                               "mnist_subset.npz")


class DatasetError(RuntimeError):
    """A dataset file is missing, corrupt or not in the expected format."""


# -- file checks ------------------------------------------------------------------------------


def md5_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def checked_path(dataset: str, root: str, rel: str, md5s: Optional[Mapping[str, Optional[str]]]) -> str:
    """The full path of ``rel`` (a file of ``dataset``'s record) under ``root`` after the existence
    and md5 checks.

    ``md5s`` (for tests) overrides the expected md5 per relative path; a None value skips the check.
    """
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        raise DatasetError(
            f"{dataset}: expected file {path} is missing. Put {DATASETS[dataset].how_to_get} under {root!r} "
            f"(or point --data-path at the folder that holds them). dsa_fast never downloads data."
        )
    expected = ORIGINAL_MD5[dataset].get(rel)
    if md5s is not None and rel in md5s:
        expected = md5s[rel]
    if expected is not None:
        got = md5_file(path)
        if got != expected:
            raise DatasetError(
                f"{dataset}: {path} is corrupt or not the original file: md5 {got}, expected {expected} "
                f"({os.path.getsize(path)} bytes). Replace it with {DATASETS[dataset].how_to_get}."
            )
    return path


def bad_file(dataset: str, path: str, what: str) -> DatasetError:
    """The error for a file of ``dataset`` that does not parse: ``what`` says where it fails."""
    return DatasetError(
        f"{dataset}: {path} is truncated or corrupt ({what}). Replace it with {DATASETS[dataset].how_to_get}."
    )


# -- formats ----------------------------------------------------------------------------------


def _read_idx(dataset: str, path: str, magic: int, ndim: int) -> np.ndarray:
    """A gzip'ed IDX file: big-endian int32 magic, ndim int32 sizes, then uint8 data."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise bad_file(dataset, path, f"gzip: {e}") from e
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise bad_file(dataset, path, f"{len(data)} bytes, shorter than the IDX header")
    got_magic = int.from_bytes(data[:4], "big")
    if got_magic != magic:
        raise bad_file(dataset, path, f"IDX magic {got_magic}, expected {magic}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(dims, dtype=np.int64))
    if len(data) != header + count:
        raise bad_file(dataset, path, f"IDX header says {dims} = {count} bytes of data, file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_split(dataset: str, root: str, split: str, md5s) -> Tuple[np.ndarray, np.ndarray]:
    img_rel, lab_rel = DATASETS[dataset].files[split]
    images = _read_idx(dataset, checked_path(dataset, root, img_rel, md5s), 2051, 3)
    lab_path = checked_path(dataset, root, lab_rel, md5s)
    labels = _read_idx(dataset, lab_path, 2049, 1)
    if labels.shape[0] != images.shape[0]:
        raise bad_file(dataset, lab_path, f"{labels.shape[0]} labels for {images.shape[0]} images")
    return images[:, None, :, :], labels.astype(np.int64)


class _CifarUnpickler(pickle.Unpickler):
    """Only what a CIFAR pickle holds: numpy arrays and dtypes. Anything else is refused, so a
    stray pickle cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR pickle") from None


def _read_cifar_pickle(dataset: str, path: str, label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            # NB: the originals are Python 2 pickles; latin1 maps their byte strings 1:1.
            d = _CifarUnpickler(f, encoding="latin1").load()
    except Exception as e:  # EOFError, UnpicklingError, ValueError, ... on a truncated file
        raise bad_file(dataset, path, f"unpickling failed: {type(e).__name__}: {e}") from e
    if not isinstance(d, dict):
        raise bad_file(dataset, path, f"expected a dict, got {type(d).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise bad_file(dataset, path, f"keys {sorted(d)} lack 'data' or {label_key!r}")
    data, labels = np.asarray(d["data"]), np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise bad_file(dataset, path, f"data {data.dtype} {data.shape} with {labels.shape[0]} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar_split(dataset: str, root: str, split: str, md5s, label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    parts = [_read_cifar_pickle(dataset, checked_path(dataset, root, rel, md5s), label_key)
             for rel in DATASETS[dataset].files[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _load_svhn_split(dataset: str, root: str, split: str, md5s) -> Tuple[np.ndarray, np.ndarray]:
    (rel,) = DATASETS[dataset].files[split]
    path = checked_path(dataset, root, rel, md5s)
    try:
        arrays = read_mat(path, names=("X", "y"))
    except MatFileError as e:
        raise bad_file(dataset, path, str(e)) from e
    x, y = arrays["X"], arrays["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        raise bad_file(dataset, path, f"X {x.shape}, y {y.shape}; expected X 32x32x3xN and N labels")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise bad_file(dataset, path, f"labels outside 1..10 ({labels.min()}..{labels.max()})")
    labels[labels == 10] = 0  # SVHN stores the digit 0 as label 10
    # MATLAB X[row, col, channel, n] -> [n, channel, row, col]
    images = np.ascontiguousarray(x.astype(np.uint8, copy=False).transpose(3, 2, 0, 1))
    return images, labels


def load_split(
    dataset: str, root: str, split: str, *, md5s: Optional[Mapping[str, Optional[str]]] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, C, H, W], labels int64 [N]) of ``split`` ('train' or 'test').

    ``md5s`` is for tests that write small files in the original formats: it maps a relative path
    to the md5 to expect instead of the original's (None: no check).
    """
    record = get_dataset(dataset)
    if split not in ("train", "test"):
        raise ValueError(f"dsa_fast.condense: split must be 'train' or 'test', got {split!r}")
    images, labels = record.loader(dataset, root, split, md5s)
    info = record.info
    if images.shape[1:] != (info.channel, *info.im_size):
        raise DatasetError(f"{dataset} {split}: images of shape {images.shape[1:]}, expected "
                           f"{(info.channel, *info.im_size)}")
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DatasetError(f"{dataset} {split}: labels outside 0..{info.num_classes - 1}")
    return images, labels


def load_embedded_mnist(split: str, path: str = EMBEDDED_SUBSET) -> Tuple[np.ndarray, np.ndarray]:
    """The small MNIST subset shipped in dsa_fast/assets (see its README): same format as load_split."""
    if not os.path.isfile(path):
        raise DatasetError(
            f"the embedded MNIST subset {path} is missing from this installation; regenerate it with "
            f"`python tools/make_mnist_subset.py --data-path <folder with MNIST/raw>` or pass --data-path"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z[f"{split}_images"], z[f"{split}_labels"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DatasetError(f"the embedded MNIST subset {path} is corrupt ({e}); regenerate it with "
                           f"tools/make_mnist_subset.py") from e
    return images[:, None, :, :], labels.astype(np.int64)


# -- the datasets -------------------------------------------------------------------------------

for _record in (
    Dataset(DatasetInfo("MNIST", 1, (28, 28), 10, (0.1307,), (0.3081,)),
            files={"train": {"MNIST/raw/train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                             "MNIST/raw/train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432"},
                   "test": {"MNIST/raw/t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                            "MNIST/raw/t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}},
            loader=_load_idx_split, strategy="color_crop_cutout_scale_rotate",
            how_to_get="the original MNIST .gz files (e.g. from a torchvision download: <root>/MNIST/raw/)",
            embedded=EMBEDDED_SUBSET),
    Dataset(DatasetInfo("FashionMNIST", 1, (28, 28), 10, (0.2861,), (0.3530,)),
            files={"train": {"FashionMNIST/raw/train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                             "FashionMNIST/raw/train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe"},
                   "test": {"FashionMNIST/raw/t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                            "FashionMNIST/raw/t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}},
            loader=_load_idx_split, strategy="color_crop_cutout_flip_scale_rotate",
            how_to_get="the original Fashion-MNIST .gz files (e.g. from a torchvision download: "
                       "<root>/FashionMNIST/raw/)",
            class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")),
    Dataset(DatasetInfo("SVHN", 3, (32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
            files={"train": {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373"},
                   "test": {"test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}},
            loader=_load_svhn_split, strategy="color_crop_cutout_scale_rotate",
            how_to_get="the original SVHN cropped-digits files train_32x32.mat and test_32x32.mat "
                       "(as torchvision's SVHN(root) keeps them, directly in <root>)"),
    Dataset(DatasetInfo("CIFAR10", 3, (32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
            files={"train": {"cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
                             "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                             "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                             "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
                             "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb"},
                   "test": {"cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e"}},
            loader=partial(_load_cifar_split, label_key="labels"), strategy="color_crop_cutout_flip_scale_rotate",
            how_to_get="the python version of CIFAR-10 unpacked from cifar-10-python.tar.gz "
                       "(folder cifar-10-batches-py/, as torchvision leaves it)",
            class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    Dataset(DatasetInfo("CIFAR100", 3, (32, 32), 100, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
            files={"train": {"cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d"},
                   "test": {"cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}},
            loader=partial(_load_cifar_split, label_key="fine_labels"),
            strategy="color_crop_cutout_flip_scale_rotate",
            how_to_get="the python version of CIFAR-100 unpacked from cifar-100-python.tar.gz "
                       "(folder cifar-100-python/, as torchvision leaves it)"),
):
    register_dataset(_record)
del _record


# -- tensors for the loop ---------------------------------------------------------------------


@dataclass
class TensorDataset:
    """A normalised split on the device: images float32 [N, C, H, W], labels int64 [N]."""

    images: Tensor
    labels: Tensor
    info: DatasetInfo


def normalize(images_u8: np.ndarray, info: DatasetInfo, device) -> Tensor:
    """(x / 255 - mean) / std per channel, float32, computed on ``device`` (torchvision's
    ToTensor + Normalize)."""
    x = torch.from_numpy(np.require(images_u8, requirements=["C", "W"])).to(device).float().div_(255)
    mean = torch.tensor(info.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def denormalize(x: Tensor, mean, std) -> Tensor:
    """The inverse of ``normalize`` (no clamping)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m


def load_tensors(dataset: str, data_path: Optional[str], split: str, device, *, md5s=None) -> TensorDataset:
    """A normalised split on ``device``; ``data_path=None`` is the embedded subset (MNIST's)."""
    record = get_dataset(dataset)
    info = record.info
    if data_path is None:
        if record.embedded is None:
            raise ValueError(f"dsa_fast.condense: the embedded subset is MNIST only, not {dataset}")
        images, labels = load_embedded_mnist(split, record.embedded)
    else:
        images, labels = load_split(dataset, data_path, split, md5s=md5s)
    return TensorDataset(normalize(images, info, device), torch.from_numpy(labels).to(device), info)
