"""torch.compile of DiffAugment in a FRESH interpreter (nothing warmed up by an eager call first):
every query the library makes at call time must be traceable. Each case runs in a subprocess.

rng='device' compiles with fullgraph=True on every backend. rng='compat' makes the official draws
on the host (reseeding generators, the 'S' family read back): they run eagerly, outside the graph
(README, Usage); the rest traces.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dsa_fast

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys, torch
from dsa_fast import DiffAugment, ParamDiffAug

cases = json.loads(sys.argv[1])
x = torch.randn(4, 3, 8, 8)

def make(rng, backend, mode, seed):
    param = ParamDiffAug(rng=rng, aug_mode=mode)
    return lambda t: DiffAugment(t, 'color_crop_cutout_flip_scale_rotate', seed=seed, param=param, backend=backend)

# Every compiled call first, before any eager DiffAugment call in this interpreter.
compiled_out = []
for rng, backend, mode, seed, fullgraph, compiler in cases:
    torch._dynamo.reset()  # a fresh cache per case: the cases share one code object
    torch.manual_seed(0)
    compiled_out.append(torch.compile(make(rng, backend, mode, seed), fullgraph=fullgraph, backend=compiler)(x))
result = []
for (rng, backend, mode, seed, fullgraph, compiler), yc in zip(cases, compiled_out):
    torch.manual_seed(0)
    ye = make(rng, backend, mode, seed)(x)
    result.append({"equal": bool(torch.equal(yc, ye)), "shape": list(yc.shape)})
print(json.dumps(result))
"""


def _run(cases):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(cases)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


FULLGRAPH = [  # (rng, backend, mode, seed): fullgraph=True
    ("device", "auto", "M", 3),
    ("device", "fused", "S", 3),
    ("device", "fused", "M", -1),
    ("device", "reference", "M", 3),
    ("device", "reference", "S", -1),
]
# The official draws of rng='compat' are host work on the global generators: they run eagerly,
# outside the graph (tests/test_compile_inductor.py).
WITH_BREAKS = [("compat", b, m, s) for b in ("auto", "reference") for m in ("M", "S") for s in (5, -1)]


def test_compile_in_fresh_process():
    """One interpreter, every case compiled before any eager call: rng='device' traces with no
    break; rng='compat' compiles with its draws outside the graph; results equal the eager call's
    bits (an unseeded device call excepted: it advances the device counter)."""
    if not dsa_fast.has_ops():
        cases = [c for c in FULLGRAPH if c[1] != "fused"]
    else:
        cases = list(FULLGRAPH)
    specs = [list(c) + [True, "aot_eager"] for c in cases] + [list(c) + [False, "aot_eager"] for c in WITH_BREAKS]
    if dsa_fast.has_ops():
        specs.append(["device", "auto", "M", 11, True, "inductor"])
    out = _run(specs)
    for spec, res in zip(specs, out):
        assert res["shape"] == [4, 3, 8, 8], spec
        if spec[0] == "compat" or spec[3] != -1:
            assert res["equal"], f"compiled and eager calls differ for {spec}"
