"""Regenerate dsa_fast/assets/mnist_subset.npz, the MNIST subset of the embedded main job.

The subset is the first TRAIN_PER_CLASS training images of each digit and the first TEST_PER_CLASS
test images of each digit, in the order of the original files, read from the original MNIST .gz
files (md5-checked). The .npz is written byte-for-byte deterministically (fixed zip timestamps and
member order), so rerunning this script reproduces the committed file.

    python tools/make_mnist_subset.py [--data-path DIR] [--out dsa_fast/assets/mnist_subset.npz]

DIR holds MNIST/raw/*.gz (torchvision layout); it defaults to $DSA_FAST_DATA.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TRAIN_PER_CLASS = 300
TEST_PER_CLASS = 200


def first_per_class(images: np.ndarray, labels: np.ndarray, per_class: int):
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    keep.sort()  # keep the original file order
    return images[keep, 0], labels[keep].astype(np.uint8)


def write_npz(path: str, arrays) -> None:
    """A .npz (zip of .npy members) with fixed timestamps, so the bytes depend on the data only."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in arrays:
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def main(argv=None) -> int:
    from dsa_fast.condense.data import load_split

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-path", default=os.environ.get("DSA_FAST_DATA"),
                   help="folder holding MNIST/raw/*.gz (default: $DSA_FAST_DATA)")
    p.add_argument("--out", default=os.path.join(ROOT, "dsa_fast", "assets", "mnist_subset.npz"))
    args = p.parse_args(argv)
    if not args.data_path:
        p.error("no data folder: pass --data-path DIR or set DSA_FAST_DATA (DIR/MNIST/raw/*.gz)")
    train = first_per_class(*load_split("MNIST", args.data_path, "train"), TRAIN_PER_CLASS)
    test = first_per_class(*load_split("MNIST", args.data_path, "test"), TEST_PER_CLASS)
    arrays = [("train_images", train[0]), ("train_labels", train[1]),
              ("test_images", test[0]), ("test_labels", test[1])]
    write_npz(args.out, arrays)
    with open(args.out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes, sha256 {digest}")
    for name, arr in arrays:
        print(f"  {name}: {arr.dtype} {arr.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
