"""Pack the golden vectors of the official DiffAugment into tests/golden/, and read them back.

The original golden folder holds ``cases.json`` and ``arrays.npz`` with, per case, the input ``x``,
the cotangent ``g``, the output ``y`` and the input gradient ``dx`` (tests/golden/README.md). The
inputs are not data: they are standard-normal draws of ``numpy.random.default_rng(2021)``, taken in
case order (``x`` then ``g`` for each case, float64 draws cast to float32). The packed copy keeps
only the outputs and regenerates the inputs, so it is 3.1 MB instead of 6.5 MB:

- ``cases.json``: the original's fields unchanged, plus ``inputs``: the generator, its seed and the
  SHA-256 of all regenerated inputs, checked on every load (a numpy whose stream differs fails
  loudly instead of giving wrong inputs).
- ``expected.npz``: ``<name>_y`` and ``<name>_dx`` for every case, float32, deflate-compressed, with
  fixed zip timestamps so that packing the same original twice gives the same bytes.

    python tools/pack_golden.py ORIGINAL_GOLDEN_DIR [--out tests/golden]

Packing refuses an original whose inputs are not the generator's draws, so nothing is lost.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Dict, List, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.make_mnist_subset import write_npz  # noqa: E402  (the deterministic .npz writer)

PACKED_DIR = os.path.join(ROOT, "tests", "golden")
INPUT_SEED = 2021
KINDS = ("x", "g", "y", "dx")
STORED_KINDS = ("y", "dx")

Arrays = Dict[str, np.ndarray]


def regenerate_inputs(cases: List[dict], seed: int = INPUT_SEED) -> Arrays:
    """``<name>_x`` and ``<name>_g`` of every case, drawn exactly as the original inputs were."""
    rng = np.random.default_rng(seed)
    out: Arrays = {}
    for c in cases:
        for kind in ("x", "g"):
            out[f"{c['name']}_{kind}"] = rng.standard_normal(c["shape"]).astype(np.float32)
    return out


def inputs_digest(cases: List[dict], arrays: Arrays) -> str:
    h = hashlib.sha256()
    for c in cases:
        for kind in ("x", "g"):
            h.update(np.ascontiguousarray(arrays[f"{c['name']}_{kind}"]).tobytes())
    return h.hexdigest()


def read_original(folder: str) -> Tuple[dict, List[dict], Arrays]:
    """(meta without cases, cases, every array) of an original golden folder."""
    with open(os.path.join(folder, "cases.json")) as f:
        meta = json.load(f)
    cases = meta.pop("cases")
    with np.load(os.path.join(folder, "arrays.npz")) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return meta, cases, arrays


class PackedGoldenError(RuntimeError):
    pass


def read_packed(folder: str = PACKED_DIR) -> Tuple[dict, List[dict], Arrays]:
    """(meta without cases, cases, x/g/y/dx of every case) of a packed folder; the regenerated
    inputs are checked against the recorded digest."""
    with open(os.path.join(folder, "cases.json")) as f:
        meta = json.load(f)
    cases = meta.pop("cases")
    inputs = meta.get("inputs") or {}
    if inputs.get("generator") != "numpy.random.default_rng" or "seed" not in inputs:
        raise PackedGoldenError(f"{folder}/cases.json: 'inputs' does not name the input generator")
    arrays = regenerate_inputs(cases, inputs["seed"])
    digest = inputs_digest(cases, arrays)
    if digest != inputs.get("sha256"):
        raise PackedGoldenError(
            f"the golden inputs regenerated with numpy {np.__version__} do not match the recorded digest "
            f"({digest} != {inputs.get('sha256')}): this numpy's default_rng stream differs from the one the "
            f"vectors were packed with")
    with np.load(os.path.join(folder, "expected.npz")) as npz:
        arrays.update({k: npz[k] for k in npz.files})
    return meta, cases, arrays


def differences(original: str, packed: str = PACKED_DIR) -> List[str]:
    """What differs between an original folder and a packed one, on everything the tests read:
    the metadata, every case's fields, and the bytes of x, g, y and dx (so -0.0 != 0.0)."""
    o_meta, o_cases, o_arr = read_original(original)
    p_meta, p_cases, p_arr = read_packed(packed)
    out = []
    p_meta = {k: v for k, v in p_meta.items() if k != "inputs"}
    if o_meta != p_meta:
        out.append(f"metadata: {o_meta} != {p_meta}")
    if o_cases != p_cases:
        out.append(f"case lists differ ({len(o_cases)} original, {len(p_cases)} packed cases)")
    for c in o_cases:
        for kind in KINDS:
            key = f"{c['name']}_{kind}"
            a, b = o_arr.get(key), p_arr.get(key)
            if b is None:
                out.append(f"{key}: missing from the packed copy")
            elif a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                out.append(f"{key}: differs ({a.dtype}{a.shape} vs {b.dtype}{b.shape})")
    return out


def pack(original: str, out: str = PACKED_DIR) -> None:
    meta, cases, arrays = read_original(original)
    inputs = regenerate_inputs(cases)
    for key, a in inputs.items():
        if arrays[key].dtype != a.dtype or arrays[key].tobytes() != a.tobytes():
            raise PackedGoldenError(f"{key} of {original} is not the generator's draw: refusing to drop the inputs")
    meta["inputs"] = {
        "generator": "numpy.random.default_rng",
        "seed": INPUT_SEED,
        "draws": "per case in list order: x then g, standard_normal(shape) in float64, cast to float32",
        "sha256": inputs_digest(cases, inputs),
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cases.json"), "w") as f:  # one case per line: small, and diffs read well
        head = json.dumps(meta, indent=1)[:-2]
        f.write(head + ',\n "cases": [\n')
        f.write(",\n".join("  " + json.dumps(c, separators=(",", ":")) for c in cases))
        f.write("\n ]\n}\n")
    write_npz(os.path.join(out, "expected.npz"),
              [(f"{c['name']}_{kind}", arrays[f"{c['name']}_{kind}"]) for c in cases for kind in STORED_KINDS])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("original", help="folder holding the original cases.json and arrays.npz")
    p.add_argument("--out", default=PACKED_DIR, help="where to write the packed copy (default: tests/golden)")
    args = p.parse_args(argv)
    pack(args.original, args.out)
    diff = differences(args.original, args.out)
    if diff:
        print("pack_golden: the packed copy differs from the original:\n  " + "\n  ".join(diff), file=sys.stderr)
        return 1
    sizes = {f: os.path.getsize(os.path.join(args.out, f)) for f in ("cases.json", "expected.npz")}
    print(f"pack_golden: wrote {args.out} ({', '.join(f'{k} {v} bytes' for k, v in sizes.items())}); "
          f"equal to {args.original} on metadata, cases, x, g, y and dx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
