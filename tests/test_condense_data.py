"""Dataset loaders: real MNIST/FashionMNIST from $DSA_FAST_DATA; CIFAR-10/100 and SVHN from small
files the tests write in the original formats. Every loader must reject a wrong md5 and a
truncated file with a message that names the path."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from condense_helpers import (_one_thread, random_images, shared_data, truncate, write_cifar10,  # noqa: F401
                              write_cifar100, write_mat_v5, write_svhn)
from dsa_fast.condense.data import (EMBEDDED_SUBSET, INFO, ORIGINAL_MD5, DatasetError, load_embedded_mnist,
                                    load_split, load_tensors)
from dsa_fast.condense.matfile import MatFileError, parse_mat, read_mat

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_idx_loader_reads_original_files(name):
    root = shared_data()
    images, labels = load_split(name, root, "test")
    assert images.shape == (10000, 1, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    counts = np.bincount(labels, minlength=10).tolist()
    assert counts == (MNIST_TEST_COUNTS if name == "MNIST" else [1000] * 10)


def _copy_split(name: str, tmp_path, split="test"):
    """A writable copy of one split of the original files (the data folder may be read-only)."""
    root = shared_data()
    rels = [r for r in ORIGINAL_MD5[name] if ("t10k" in r) == (split == "test")]
    for rel in rels:
        os.makedirs(os.path.dirname(tmp_path / rel), exist_ok=True)
        shutil.copyfile(os.path.join(root, rel), tmp_path / rel)
    return str(tmp_path), rels


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_idx_loader_rejects_truncated_file(name, tmp_path):
    root, rels = _copy_split(name, tmp_path)
    labels_rel = [r for r in rels if "labels" in r][0]
    truncate(os.path.join(root, labels_rel))
    with pytest.raises(DatasetError, match="md5") as e:  # against the original md5
        load_split(name, root, "test")
    assert os.path.join(root, labels_rel) in str(e.value)
    with pytest.raises(DatasetError, match="truncated or corrupt") as e:  # and by its structure
        load_split(name, root, "test", md5s={labels_rel: None})
    assert os.path.join(root, labels_rel) in str(e.value)


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_idx_loader_rejects_wrong_md5(name, tmp_path):
    root = shared_data()
    rel = [r for r in ORIGINAL_MD5[name] if "t10k-images" in r][0]
    with pytest.raises(DatasetError, match="0123456789abcdef0123456789abcdef") as e:
        load_split(name, root, "test", md5s={rel: "0123456789abcdef0123456789abcdef"})
    assert os.path.join(root, rel) in str(e.value) and "md5" in str(e.value)


def test_missing_file_names_path_and_never_downloads(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_split("MNIST", str(tmp_path), "train")
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "MNIST/raw/train-images-idx3-ubyte.gz") in msg
    assert "never downloads" in msg


def test_embedded_subset_matches_the_original_files():
    """The shipped subset is the first 300 train / 200 test images of each digit, in file order."""
    root = shared_data()
    for split, per_class in (("train", 300), ("test", 200)):
        images, labels = load_embedded_mnist(split)
        full_images, full_labels = load_split("MNIST", root, split)
        keep = np.sort(np.concatenate([np.flatnonzero(full_labels == c)[:per_class] for c in range(10)]))
        np.testing.assert_array_equal(images, full_images[keep])
        np.testing.assert_array_equal(labels, full_labels[keep])
    assert os.path.getsize(EMBEDDED_SUBSET) < 1_000_000


def test_load_tensors_normalises_like_torchvision():
    t = load_tensors("MNIST", None, "test", "cpu")
    raw, _ = load_embedded_mnist("test")
    expected = (torch.from_numpy(raw).float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(t.images, expected, rtol=0, atol=1e-6)
    assert t.images.dtype == torch.float32 and t.info is INFO["MNIST"]


# -- CIFAR ---------------------------------------------------------------------------------------


def test_cifar10_loader(tmp_path):
    md5s = write_cifar10(str(tmp_path), per_batch=20)
    images, labels = load_split("CIFAR10", str(tmp_path), "train", md5s=md5s)
    assert images.shape == (100, 3, 32, 32) and labels.shape == (100,)
    first, first_labels = random_images(20, 10, 0)
    np.testing.assert_array_equal(images[:20], first)
    np.testing.assert_array_equal(labels[:20], first_labels)
    test_images, _ = load_split("CIFAR10", str(tmp_path), "test", md5s=md5s)
    assert test_images.shape == (20, 3, 32, 32)


def test_cifar10_rejects_wrong_md5_and_truncation(tmp_path):
    md5s = write_cifar10(str(tmp_path), per_batch=20)
    with pytest.raises(DatasetError, match="md5") as e:  # the original md5s: these are not the originals
        load_split("CIFAR10", str(tmp_path), "test")
    assert os.path.join(str(tmp_path), "cifar-10-batches-py/test_batch") in str(e.value)
    path = os.path.join(str(tmp_path), "cifar-10-batches-py", "data_batch_3")
    truncate(path)
    with pytest.raises(DatasetError, match="md5") as e:
        load_split("CIFAR10", str(tmp_path), "train", md5s=md5s)
    assert path in str(e.value)
    with pytest.raises(DatasetError, match="truncated or corrupt") as e:
        load_split("CIFAR10", str(tmp_path), "train", md5s={**md5s, "cifar-10-batches-py/data_batch_3": None})
    assert path in str(e.value)


def test_cifar100_loader_and_rejections(tmp_path):
    md5s = write_cifar100(str(tmp_path), n=200)
    images, labels = load_split("CIFAR100", str(tmp_path), "train", md5s=md5s)
    ref, ref_labels = random_images(200, 100, 0)
    np.testing.assert_array_equal(images, ref)
    np.testing.assert_array_equal(labels, ref_labels)
    with pytest.raises(DatasetError, match="md5"):
        load_split("CIFAR100", str(tmp_path), "train", md5s={"cifar-100-python/train": "0" * 32})
    path = os.path.join(str(tmp_path), "cifar-100-python", "test")
    truncate(path, 1000)
    with pytest.raises(DatasetError, match="md5"):
        load_split("CIFAR100", str(tmp_path), "test", md5s=md5s)
    with pytest.raises(DatasetError, match="truncated or corrupt") as e:
        load_split("CIFAR100", str(tmp_path), "test", md5s={"cifar-100-python/test": None})
    assert path in str(e.value)


def test_cifar_pickle_cannot_run_code(tmp_path):
    import pickle

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "test").write_bytes(pickle.dumps({"data": os.system}, protocol=2))
    with pytest.raises(DatasetError, match="unexpected object"):
        load_split("CIFAR100", str(tmp_path), "test", md5s={"cifar-100-python/test": None})


# -- SVHN ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("y_class", [np.uint8, np.float64])
def test_svhn_loader(tmp_path, y_class):
    md5s = write_svhn(str(tmp_path), n=30, y_class=y_class)
    images, labels = load_split("SVHN", str(tmp_path), "train", md5s=md5s)
    ref, ref_labels = random_images(30, 10, 0)
    np.testing.assert_array_equal(images, ref)
    np.testing.assert_array_equal(labels, ref_labels)  # 10 -> 0
    assert images.flags["C_CONTIGUOUS"]


def test_svhn_rejects_wrong_md5_and_truncation(tmp_path):
    md5s = write_svhn(str(tmp_path), n=30)
    with pytest.raises(DatasetError, match="md5") as e:
        load_split("SVHN", str(tmp_path), "test")
    assert os.path.join(str(tmp_path), "test_32x32.mat") in str(e.value)
    path = os.path.join(str(tmp_path), "train_32x32.mat")
    truncate(path)
    with pytest.raises(DatasetError, match="md5"):
        load_split("SVHN", str(tmp_path), "train", md5s=md5s)
    with pytest.raises(DatasetError, match="truncated or corrupt") as e:
        load_split("SVHN", str(tmp_path), "train", md5s={"train_32x32.mat": None})
    assert path in str(e.value)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("compress", [True, False])
def test_matfile_reader(tmp_path, order, compress):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    b = np.array([[1.5, -2.0], [3.25, 4.0]])
    tiny = np.array([[7]], dtype=np.uint8)  # 1 byte of data: the small element format
    path = str(tmp_path / "x.mat")
    write_mat_v5(path, [("alpha", a, None), ("b", b, None), ("t", tiny, None)], compress=compress, order=order)
    out = read_mat(path)
    np.testing.assert_array_equal(out["alpha"], a)
    np.testing.assert_array_equal(out["b"], b)
    np.testing.assert_array_equal(out["t"], tiny)
    assert out["alpha"].dtype == np.uint8 and out["b"].dtype == np.float64
    assert set(read_mat(path, names=["b"])) == {"b"}


def test_matfile_reader_rejects_bad_input(tmp_path):
    with pytest.raises(MatFileError, match="header"):
        parse_mat(b"MATLAB 5.0" + b" " * 20)
    with pytest.raises(MatFileError, match="not a level-5"):
        parse_mat(b"x" * 200)
    path = str(tmp_path / "x.mat")
    write_mat_v5(path, [("X", np.zeros((4, 4), np.uint8), None)], compress=False)
    data = open(path, "rb").read()
    with pytest.raises(MatFileError, match="truncated"):
        parse_mat(data[:-9])
    with pytest.raises(MatFileError, match="missing"):
        parse_mat(data, names=["y"])


def test_subset_tool_regenerates_the_shipped_file(tmp_path):
    import importlib.util

    from condense_helpers import REPO

    spec = importlib.util.spec_from_file_location("make_mnist_subset", os.path.join(REPO, "tools", "make_mnist_subset.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(tmp_path / "subset.npz")
    assert tool.main(["--data-path", shared_data(), "--out", out]) == 0
    with np.load(out) as new, np.load(EMBEDDED_SUBSET) as shipped:
        assert sorted(new.files) == sorted(shipped.files)
        for k in new.files:
            np.testing.assert_array_equal(new[k], shipped[k])
    again = str(tmp_path / "again.npz")
    tool.main(["--data-path", shared_data(), "--out", again])
    assert open(out, "rb").read() == open(again, "rb").read()  # deterministic bytes


def test_missing_original_data_skips_with_the_reason_or_fails_when_required(tmp_path, monkeypatch):
    """Without the original files the data tests skip and say what to set; under
    DSA_FAST_REQUIRE_DATA=1 (CI) the same absence is a failure."""
    monkeypatch.delenv("DSA_FAST_REQUIRE_DATA", raising=False)
    monkeypatch.delenv("DSA_FAST_DATA", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"\$DSA_FAST_DATA is not set"):
        shared_data()
    monkeypatch.setenv("DSA_FAST_DATA", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="MNIST/raw/t10k-labels-idx1-ubyte.gz.* not found in"):
        shared_data()
    monkeypatch.setenv("DSA_FAST_REQUIRE_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="DSA_FAST_REQUIRE_DATA=1 makes this a failure"):
        shared_data()
    for name in ("MNIST", "FashionMNIST"):
        (tmp_path / name / "raw").mkdir(parents=True)
        (tmp_path / name / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"")
    assert shared_data() == str(tmp_path)
