"""Checks of benchmarks/report.py and the CPU-safe parts of benchmarks/gpu_check.sh, on synthetic
pytest-benchmark JSON (made-up numbers that exist only inside these tests)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FULL = "color_crop_cutout_flip_scale_rotate"


def _load_report():
    spec = importlib.util.spec_from_file_location("dsa_bench_report", HERE / "report.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


report = _load_report()


def _row(device, shape, label, direction, backend, rng, median_ms, kind="diffaugment", ref_key=None):
    return {
        "name": f"test[{device}-{label}-{rng}-{backend}-{direction}]",
        "stats": {"median": median_ms / 1e3, "rounds": 100},
        "extra_info": {
            "kind": kind,
            "device": device,
            "shape": list(shape),
            "shape_name": "x".join(map(str, shape)),
            "batch": shape[0],
            "label": label,
            "rng": rng,
            "backend": backend,
            "direction": direction,
            "ref_key": ref_key,
            "peak_mem_bytes": 3 * 2**20 if device == "cuda" else None,
        },
    }


def _write(path: Path, rows) -> str:
    path.write_text(json.dumps({"datetime": "synthetic", "machine_info": {"dsa_fast_bench": {"gpu": "NVIDIA H200"}}, "benchmarks": rows}))
    return str(path)


@pytest.fixture
def reference(tmp_path) -> str:
    shape = [256, 3, 32, 32]
    rows = [
        {"shape": shape, "strategy": "color", "fwd_ms": 1.0, "fwdbwd_ms": 2.0},
        {"shape": shape, "strategy": FULL, "fwd_ms": 2.0, "fwdbwd_ms": 2.5},
        {"shape": shape, "strategy": FULL + "@M", "fwd_ms": 10.0, "fwdbwd_ms": 16.0},
        {"shape": shape, "strategy": "floor:mul", "fwd_ms": 0.01, "fwdbwd_ms": 0.2},
    ]
    p = tmp_path / "ref.json"
    p.write_text(json.dumps({"info": {"device": "NVIDIA H200", "torch": "synthetic"}, "per_call": rows}))
    return str(p)


def _cuda_rows():
    s = (256, 3, 32, 32)
    return [
        _row("cuda", s, "full-S", "fwd", "fused", "device", 0.02, ref_key=FULL),  # <= 0.03: pass
        _row("cuda", s, "full-M", "fwd", "fused", "device", 0.06, ref_key=FULL + "@M"),  # > 0.05: fail
        _row("cuda", s, "floor:mul", "fwdbwd", "torch", None, 0.1, kind="floor", ref_key="floor:mul"),
        _row("cuda", s, "full-S", "fwdbwd", "fused", "device", 0.14, ref_key=FULL),  # 1.4x floor: pass
        _row("cuda", s, "full-M", "fwdbwd", "fused", "device", 0.2, ref_key=FULL + "@M"),  # 2x floor: fail
        _row("cuda", s, "color", "fwd", "fused", "compat", 0.04, ref_key="color"),  # 25x: pass
        _row("cuda", s, "color", "fwdbwd", "fused", "compat", 0.2, ref_key="color"),  # 10x: fail
        _row("cuda", s, "color", "fwd", "reference", "compat", 1.1, ref_key="color"),
    ]


def test_targets_on_synthetic_cuda_rows(tmp_path, reference):
    path = _write(tmp_path / "run.json", _cuda_rows())
    rows, runs, problems = report.load_runs([path])
    assert not problems and len(rows) == 8
    ref, info = report.load_reference(Path(reference))
    rep = report.Report(rows, runs, ref, Path(reference), info)
    md = rep.markdown()
    text = md
    assert "256x3x32x32 full-S | 0.0200 ms | ≤ 0.03 ms | PASS" in text
    assert "256x3x32x32 full-M | 0.0600 ms | ≤ 0.05 ms | FAIL" in text
    assert "1.40× floor" in text and "2.00× floor" in text
    # compat: color fwd 25x passes, color fwdbwd 10x fails, the full rows are not measured.
    assert "1/2 rows ≥ 20×" in md and "official rows not measured" in md
    assert "256x3x32x32 color fwdbwd | 10.0× (2.00 → 0.200 ms)" in md
    assert rep.failed_targets == 3  # M fwd, M fwdbwd vs the floor, the compat summary
    # Speed-ups: official / median for CUDA rows; fused vs reference for fused rows.
    color = next(r for r in rows if r.label == "color" and r.backend == "fused" and r.direction == "fwd")
    assert rep.vs_official(color) == pytest.approx(25.0)
    assert rep.vs_reference(color) == pytest.approx(1.1 / 0.04)


def test_cpu_target_and_no_official_for_cpu(tmp_path, reference):
    s = (256, 3, 32, 32)
    rows = [
        _row("cpu", s, "full-M", "fwd", "fused", "compat", 10.0, ref_key=FULL + "@M"),
        _row("cpu", s, "full-M", "fwd", "reference", "compat", 60.0, ref_key=FULL + "@M"),
        _row("cpu", s, "full-M", "fwdbwd", "fused", "compat", 30.0, ref_key=FULL + "@M"),
        _row("cpu", s, "full-M", "fwdbwd", "reference", "compat", 60.0, ref_key=FULL + "@M"),
    ]
    path = _write(tmp_path / "cpu.json", rows)
    loaded, runs, _ = report.load_runs([path])
    ref, info = report.load_reference(Path(reference))
    rep = report.Report(loaded, runs, ref, Path(reference), info)
    md = rep.markdown()
    assert "6.00× (60.0 → 10.0 ms) | ≥ 5× | PASS" in md
    assert "2.00× (60.0 → 30.0 ms) | ≥ 5× | FAIL" in md
    assert all(rep.official(r) is None for r in loaded)  # never compare a CPU row to the H200


def test_cpu_family_targets_and_clone_units(tmp_path, reference):
    s = (10, 3, 32, 32)
    rows = [
        _row("cpu", s, "floor:clone", "fwd", "torch", None, 0.5, kind="floor", ref_key="floor:clone"),
        _row("cpu", s, "color", "fwd", "fused", "compat", 1.0, ref_key="color"),
        _row("cpu", s, "color", "fwd", "reference", "compat", 3.0, ref_key="color"),  # 3x: pass
        _row("cpu", s, "cutout", "fwd", "fused", "compat", 2.0, ref_key="cutout"),
        _row("cpu", s, "cutout", "fwd", "reference", "compat", 1.0, ref_key="cutout"),  # slower: fail
        _row("cpu", s, "scale", "fwd", "fused", "compat", 2.0, ref_key="scale"),
        _row("cpu", s, "scale", "fwd", "reference", "compat", 3.0, ref_key="scale"),  # 1.5x < 2x: fail
    ]
    path = _write(tmp_path / "fam.json", rows)
    loaded, runs, _ = report.load_runs([path])
    rep = report.Report(loaded, runs, None, Path(reference), {})
    md = rep.markdown()
    assert "| cpu: family vs reference, fwd | 10x3x32x32 color rng=compat | 3.00× (3.00 → 1.00 ms) | ≥ 2× | PASS |" in md
    assert "| cpu: family vs reference, fwd | 10x3x32x32 cutout rng=compat | 0.50× (1.00 → 2.00 ms) | ≥ 1× | FAIL |" in md
    assert "| cpu: family vs reference, fwd | 10x3x32x32 scale rng=compat | 1.50× (3.00 → 2.00 ms) | ≥ 2× | FAIL |" in md
    # fused 1.0 ms and reference 3.0 ms are 2 and 6 clones of 0.5 ms
    assert "| 10x3x32x32 | color | fwd | 1.00 | 3.00 | 3.00× | 0.500 | 2.0 | 6.0 |" in md
    assert rep.failed_targets == 2


def test_cli_exit_codes(tmp_path, reference, capsys):
    path = _write(tmp_path / "run.json", _cuda_rows())
    out = tmp_path / "r.md"
    assert report.main([path, "--reference", reference, "--output", str(out), "--brief"]) == 0
    assert "## Targets" in capsys.readouterr().out and "## Every row" in out.read_text()
    assert report.main([path, "--reference", reference, "--fail-on-target"]) == 1
    assert report.main([path, "--reference", str(tmp_path / "missing.json"), "--require-reference"]) == 3
    assert report.main([_write(tmp_path / "empty.json", [])]) == 2


GPU_CHECK = HERE / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_arguments_and_report_stage(tmp_path, reference):
    assert subprocess.run(["bash", "-n", str(GPU_CHECK)]).returncode == 0
    assert subprocess.run(["bash", str(GPU_CHECK), "--help"], capture_output=True).returncode == 0
    bad = subprocess.run(["bash", str(GPU_CHECK), "--only", "nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown stage" in bad.stderr
    bad = subprocess.run(["bash", str(GPU_CHECK), "--budget", "soon"], capture_output=True, text=True)
    assert bad.returncode == 2
    out = tmp_path / "out"
    out.mkdir()
    _write(out / "bench-main.json", _cuda_rows())
    run = subprocess.run(
        ["bash", str(GPU_CHECK), "--out", str(out), "--python", sys.executable, "--only", "report", "--reference", reference],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "report" in run.stdout and "## Targets" in run.stdout  # the brief report is printed last
    assert sorted(p.name for p in out.iterdir()) == ["bench-main.json", "gpu_check.log", "report-brief.md", "report.md"]
    # A stage that fails is recorded and makes the exit status non-zero.
    (out / "bench-main.json").unlink()
    run = subprocess.run(
        ["bash", str(GPU_CHECK), "--out", str(out), "--python", sys.executable, "--only", "report"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 1 and "FAIL" in run.stdout


def test_default_reference_is_the_official_h200_timings_in_the_repository():
    path, found = report.find_reference(None)
    assert found and path == HERE / "official_h200.json"
    ref, info = report.load_reference(path)
    assert "H200" in json.dumps(info)
    # Every per-call row is read, keyed (shape, strategy), with both directions.
    with open(path) as f:
        rows = json.load(f)["per_call"]
    assert len(ref) == len(rows) > 0
    assert all(set(v) == {"fwd", "fwdbwd"} and min(v.values()) > 0 for v in ref.values())


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_plan_and_time_budgets(tmp_path):
    run = subprocess.run(["bash", str(GPU_CHECK), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith("  ")]
    stages = [r[0] for r in rows]
    assert stages == ["env", "build", "check", "tests-cuda", "bench-main", "bench-rest", "loop-time", "report"]
    budgets = [int(r[1].rstrip("s")) for r in rows]
    assert sum(budgets) <= 450  # the whole script under 8 minutes with margin
    assert budgets[0] >= 60  # env: a cold CUDA start on a fresh machine takes tens of seconds
    # The CUDA tests run once, in one stage, from the repository (no material from outside it).
    assert run.stdout.count("pytest -q tests") == 1 and "-m needs_cuda" in run.stdout
    assert "official_h200.json" in run.stdout
    # Budgets scale with --budget over the selected stages.
    run = subprocess.run(["bash", str(GPU_CHECK), "--dry-run", "--only", "build,report", "--budget", "150"],
                         capture_output=True, text=True, timeout=60)
    plan = {r.split()[0]: r.split()[1] for r in run.stdout.splitlines() if r.startswith("  ")}
    assert plan["build"] == "143s" and plan["report"] == "6s" and plan["env"] == "skip"
    # A stage that gets no time is reported as not run for time: exit 3, not 0.
    out = tmp_path / "out"
    run = subprocess.run(["bash", str(GPU_CHECK), "--out", str(out), "--python", sys.executable, "--only", "report",
                          "--budget", "3"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 3 and "NOT RUN (no time left" in run.stdout and "INCOMPLETE" in run.stdout


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
@pytest.mark.parametrize("nvcc_release, ok", [("12.4", False), ("13.0", True)])
def test_gpu_check_nvcc_version_against_torch(tmp_path, nvcc_release, ok):
    """An nvcc of another CUDA major version than torch's stops the build stage with one clear line
    before anything is compiled. A stand-in toolkit (CUDA_HOME) and Python (torch.version.cuda 13.0)."""
    toolkit = tmp_path / "cuda" / "bin"
    toolkit.mkdir(parents=True)
    (toolkit / "nvcc").write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {nvcc_release}, V{nvcc_release}.1'\n")
    fake_py = tmp_path / "python"
    # torch.version.cuda for the check; any other command (the build) leaves a mark and fails.
    fake_py.write_text(f"#!/bin/sh\ncase \"$*\" in *torch.version.cuda*) echo 13.0 ;; *) touch {tmp_path}/built; exit 1 ;; esac\n")
    for f in (toolkit / "nvcc", fake_py):
        f.chmod(0o755)
    out = tmp_path / "out"
    run = subprocess.run(["bash", str(GPU_CHECK), "--out", str(out), "--python", str(fake_py), "--only", "build"],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, CUDA_HOME=str(tmp_path / "cuda")))
    log = (out / "gpu_check.log").read_text()
    assert run.returncode == 1, run.stdout
    assert f"CUDA {nvcc_release}; torch built with CUDA 13.0" in log
    mismatch = "FAIL: nvcc is CUDA 12.4 but torch was built with CUDA 13.0"
    if ok:
        assert mismatch not in log and (tmp_path / "built").exists()  # it went on to the build
    else:
        assert log.count(mismatch) == 1 and not (tmp_path / "built").exists()
