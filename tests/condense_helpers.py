"""Helpers for the condensation tests: where the original dataset files live, fixtures, and writers
of small files in the exact original formats of CIFAR-10/100 (Python 2 pickles) and SVHN (MATLAB
level 5)."""
from __future__ import annotations

import hashlib
import os
import struct
import zlib
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The original MNIST/FashionMNIST files (torchvision layout: <root>/MNIST/raw/*.gz) are not part of
# the repository: $DSA_FAST_DATA names the folder that holds them.
DATA_ENV = "DSA_FAST_DATA"
DATA_MARKERS = ("MNIST/raw/t10k-labels-idx1-ubyte.gz", "FashionMNIST/raw/t10k-labels-idx1-ubyte.gz")


def shared_data() -> str:
    """The folder with the original MNIST/FashionMNIST files ($DSA_FAST_DATA). Tests that need it skip
    with the reason when it is absent, or fail under DSA_FAST_REQUIRE_DATA=1 (CI)."""
    root = os.environ.get(DATA_ENV, "")
    if not root:
        problem = f"${DATA_ENV} is not set"
    else:
        missing = [m for m in DATA_MARKERS if not os.path.isfile(os.path.join(root, m))]
        if not missing:
            return root
        problem = f"{', '.join(missing)} not found in ${DATA_ENV}={root}"
    reason = (f"original MNIST/FashionMNIST files needed: {problem} (set {DATA_ENV} to a folder "
              f"holding MNIST/raw and FashionMNIST/raw)")
    if os.environ.get("DSA_FAST_REQUIRE_DATA", "") == "1":
        pytest.fail(reason + "; DSA_FAST_REQUIRE_DATA=1 makes this a failure", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _one_thread():
    """The runs here are tiny: one CPU thread keeps them fast on a busy 2-core machine (two
    threads spin against each other there) and makes results comparable across processes.
    (tests/conftest.py restores the RNG state.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def md5_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def truncate(path: str, keep: Optional[int] = None) -> None:
    """Cut a file to ``keep`` bytes (default: half)."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2 if keep is None else keep)


def random_images(n: int, num_classes: int, seed: int = 0, shape=(3, 32, 32)) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8), labels.astype(np.int64)


# -- CIFAR: Python 2 cPickle, protocol 2 ---------------------------------------------------------
# The originals were written by Python 2: keys and byte data are py2 `str` (SHORT_BINSTRING /
# BINSTRING opcodes), arrays reduce through numpy.core.multiarray._reconstruct. Python 3's pickler
# cannot write py2 strings, so the opcodes are emitted by hand.


def _p2_str(b: bytes) -> bytes:
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)) + b)


def _p2_int(i: int) -> bytes:
    if 0 <= i < 256:
        return b"K" + bytes([i])
    if 0 <= i < 65536:
        return b"M" + struct.pack("<H", i)
    return b"J" + struct.pack("<i", i)


def _p2_ndarray(a: np.ndarray) -> bytes:
    assert a.dtype == np.uint8
    shape = b"(" + b"".join(_p2_int(s) for s in a.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + b"(" + _p2_str(b"u1") + b"K\x00K\x01tR"
             + b"(K\x03" + _p2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"(cnumpy\nndarray\n" + b"(K\x00t" + _p2_str(b"b") + b"tR"
            + b"(K\x01" + shape + dtype + b"\x89" + _p2_str(np.ascontiguousarray(a).tobytes()) + b"tb")


def _p2_obj(v) -> bytes:
    if isinstance(v, str):
        return _p2_str(v.encode("latin1"))
    if isinstance(v, bytes):
        return _p2_str(v)
    if isinstance(v, (int, np.integer)):
        return _p2_int(int(v))
    if isinstance(v, list):
        return b"]" + ((b"(" + b"".join(_p2_obj(x) for x in v) + b"e") if v else b"")
    if isinstance(v, np.ndarray):
        return _p2_ndarray(v)
    raise TypeError(type(v))


def py2_pickle_dict(d: Dict[str, object]) -> bytes:
    body = b"".join(_p2_obj(k) + _p2_obj(v) for k, v in d.items())
    return b"\x80\x02}(" + body + b"u."


def write_cifar10(root: str, per_batch: int = 20, seed: int = 0) -> Dict[str, str]:
    """cifar-10-batches-py/{data_batch_1..5,test_batch} with ``per_batch`` images each; -> md5s."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    md5s = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        images, labels = random_images(per_batch, 10, seed + k)
        label = "testing batch 1 of 1" if name == "test_batch" else f"training batch {k + 1} of 5"
        d = {"batch_label": label, "labels": labels.tolist(),
             "data": images.reshape(per_batch, 3072), "filenames": [f"img_{k}_{i}.png" for i in range(per_batch)]}
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(py2_pickle_dict(d))
        md5s[f"cifar-10-batches-py/{name}"] = md5_of(path)
    return md5s


def write_cifar100(root: str, n: int = 200, seed: int = 0) -> Dict[str, str]:
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    md5s = {}
    for k, name in enumerate(["train", "test"]):
        images, labels = random_images(n, 100, seed + k)
        d = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{name} batch 1 of 1",
             "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(), "data": images.reshape(n, 3072)}
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(py2_pickle_dict(d))
        md5s[f"cifar-100-python/{name}"] = md5_of(path)
    return md5s


# -- SVHN: MATLAB level 5 ------------------------------------------------------------------------

MX_CLASS = {np.dtype("float64"): 6, np.dtype("uint8"): 9}
MI_TYPE = {np.dtype("uint8"): 2, np.dtype("int32"): 5, np.dtype("uint32"): 6, np.dtype("float64"): 9}


def _mat_element(mi: int, data: bytes, order: str = "<") -> bytes:
    if len(data) <= 4:  # small data element format
        return struct.pack(order + "I", (len(data) << 16) | mi) + data.ljust(4, b"\0")
    pad = (-len(data)) % 8
    return struct.pack(order + "II", mi, len(data)) + data + b"\0" * pad


def mat_matrix(name: str, a: np.ndarray, stored: Optional[np.dtype] = None, order: str = "<") -> bytes:
    """An miMATRIX element for a numeric array; ``stored`` is the on-disk type when MATLAB packs
    values in a smaller type than the array class (e.g. a double array stored as uint8)."""
    stored = np.dtype(stored or a.dtype)
    body = (_mat_element(6, struct.pack(order + "II", MX_CLASS[a.dtype], 0), order)
            + _mat_element(5, np.asarray(a.shape, dtype=np.int32).astype(order + "i4").tobytes(), order)
            + _mat_element(1, name.encode(), order)
            + _mat_element(MI_TYPE[stored], a.astype(stored.newbyteorder(order)).tobytes(order="F"), order))
    return struct.pack(order + "II", 14, len(body)) + body


def write_mat_v5(path: str, arrays: Iterable[Tuple[str, np.ndarray, Optional[np.dtype]]], compress: bool = True,
                 order: str = "<") -> None:
    text = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Mon Dec  6 12:00:00 2010"
    header = text.ljust(116, b" ") + b"\0" * 8 + struct.pack(order + "H", 0x0100) + (b"IM" if order == "<" else b"MI")
    out = [header]
    for name, a, stored in arrays:
        el = mat_matrix(name, a, stored, order)
        if compress:
            z = zlib.compress(el)
            out.append(struct.pack(order + "II", 15, len(z)) + z)
        else:
            out.append(el)
    with open(path, "wb") as f:
        f.write(b"".join(out))


def write_svhn(root: str, n: int = 30, seed: int = 0, y_class=np.uint8) -> Dict[str, str]:
    """train_32x32.mat / test_32x32.mat as the originals: X uint8 32x32x3xN, y Nx1 with 10 for 0."""
    os.makedirs(root, exist_ok=True)
    md5s = {}
    for k, name in enumerate(["train_32x32.mat", "test_32x32.mat"]):
        images, labels = random_images(n, 10, seed + k)  # [N, 3, 32, 32]
        x = np.ascontiguousarray(images.transpose(2, 3, 1, 0))  # [row, col, channel, N]
        y = np.where(labels == 0, 10, labels).reshape(n, 1).astype(y_class)
        path = os.path.join(root, name)
        write_mat_v5(path, [("X", x, None), ("y", y, np.uint8)])
        md5s[name] = md5_of(path)
    return md5s
