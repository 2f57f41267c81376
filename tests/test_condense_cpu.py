"""The loop's matching and CPU settings: --matching (grouped vs per-class runs) and
--keep-freed-memory (cpu.keep_freed_memory)."""
from __future__ import annotations

import platform

import pytest
import torch

from condense_helpers import _one_thread  # noqa: F401
from dsa_fast.condense import condense
from dsa_fast.condense import cli
from dsa_fast.condense.cli import build_parser, config_from_args
from dsa_fast.condense.config import CondenseConfig, resolve
from dsa_fast.condense.cpu import keep_freed_memory

PROG = "python -m dsa_fast.condense"


def test_keep_freed_memory_applies_where_there_is_glibc():
    applied = keep_freed_memory()
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert applied is expected
    x = torch.randn(1 << 20)
    torch.testing.assert_close((x * 2) / 2, x, rtol=0, atol=0)  # tensors still allocate and free


@pytest.mark.parametrize("flag, applied", [(None, True), ("--keep-freed-memory", True),
                                           ("--no-keep-freed-memory", False)])
def test_the_command_keeps_freed_memory_unless_told_not_to(monkeypatch, tmp_path, flag, applied):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True) or True)
    # A run folder that is not there: the command stops after the process settings.
    code = cli.main(["--resume", str(tmp_path / "missing"), "--no-progress"] + ([flag] if flag else []))
    assert code != 0
    assert calls == ([True] if applied else [])


def _given(*args):
    given = vars(build_parser(PROG).parse_args(list(args)))
    given.pop("progress")
    return given


def test_matching_and_keep_freed_memory_flags():
    given = _given("--matching", "grouped", "--no-keep-freed-memory")
    assert given.pop("keep_freed_memory") is False
    assert config_from_args(given).matching == "grouped"
    assert "keep_freed_memory" not in _given()  # absent unless given (main applies it by default)
    assert config_from_args(_given()).matching == "auto"
    with pytest.raises(SystemExit):
        build_parser(PROG).parse_args(["--matching", "vmap"])
    with pytest.raises(ValueError, match="unknown matching"):
        resolve(CondenseConfig(matching="vmap", device="cpu"))
    assert "matching" not in CondenseConfig().identity()  # rounding only: resume does not compare it


def test_a_grouped_run_matches_the_per_class_run(tmp_path):
    # ipc 2, 2 outer steps with an inner epoch, 2 iterations: the two runs' sets agree to float32 rounding.
    sets = {}
    for matching, iterations in (("per-class", 2), ("grouped", 2), ("start", 0)):
        cfg = CondenseConfig(dataset="MNIST", data_path=None, ipc=2, outer_loop=2, inner_loop=1,
                             iterations=iterations, model="ConvNetW8", batch_real=8, eval_models=0, device="cpu",
                             seed=3, out=str(tmp_path / matching), matching="auto" if matching == "start" else matching)
        sets[matching] = condense(cfg, progress=False).images
    torch.testing.assert_close(sets["grouped"], sets["per-class"], rtol=1e-4, atol=1e-4)
    assert (sets["per-class"] - sets["start"]).abs().max() > 1e-2  # the iterations moved the images
