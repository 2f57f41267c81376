"""The Python code blocks of README.md and docs/*.md run as written, so the docs stay true.

Every block fenced as ```python runs in a fresh interpreter, in a temporary folder, with this clone
on the path and ``x_real``/``x_syn`` (the blocks' "your batches") defined as random batches. A
block that cannot run on its own is fenced as ```python no-run; any other info string is an error,
so a block is never left out by accident.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dsa_fast import ParamDiffAug, sample_params

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```\s*$", re.M | re.S)
PREAMBLE = "import torch\nx_real = torch.rand(16, 3, 32, 32)\nx_syn = torch.rand(4, 3, 32, 32)\n"


def _blocks():
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            yield path.relative_to(ROOT), line, m.group(1).strip(), m.group(2)


BLOCKS = list(_blocks())


def test_blocks_are_runnable_or_marked():
    assert BLOCKS, "no ```python blocks found: the fence pattern no longer matches the docs"
    bad = [f"{p}:{line} ```python {info}" for p, line, info, _ in BLOCKS if info not in ("", "no-run")]
    assert not bad, f"unknown info strings (use ```python or ```python no-run): {bad}"


@pytest.mark.parametrize("path,line,code", [pytest.param(p, line, code, id=f"{p}:{line}")
                                            for p, line, info, code in BLOCKS if info != "no-run"])
def test_block_runs(tmp_path, path, line, code):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PREAMBLE + code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{path}:{line}:\n{proc.stderr[-3000:]}"


def test_sample_params_steps_follow_aug_mode():
    """What the README's sample_params example says it prints: one step in the default 'S' mode
    (one family drawn), every step in 'M' mode."""
    x = torch.rand(4, 3, 32, 32)
    assert len(sample_params("crop_flip_rotate", x, seed=7).steps) == 1
    assert len(sample_params("crop_flip_rotate", x, seed=7, param=ParamDiffAug(aug_mode="M")).steps) == 3
