#!/usr/bin/env python3
"""Turn pytest-benchmark JSON files of benchmarks/test_bench_augment.py into a markdown report.

    python benchmarks/report.py RUN.json [MORE.json ...] [--reference REF.json] [--output report.md] [--brief]

For each row: median ms, images/s, peak memory (CUDA), and for CUDA rows the speed-up over the
official H200 timing of the same shape / strategy / direction (benchmarks/official_h200.json),
then whether the targets hold:

- rng='device' (CUDA, fused): a seeded 'S' call forward <= 0.03 ms and an 'M' call <= 0.05 ms at
  256x3x32x32; forward+backward within 1.5x of ``x.mul(c).sum().backward()`` on the same tensor.
- rng='compat' (CUDA, fused): at least 20x faster than the official timing, for every row of the
  reference JSON (the floor rows are not DSA calls and are not targets).
- CPU: fused >= 5x faster than the reference backend for the full 'M' chain at 256x3x32x32,
  forward and forward+backward separately.
- CPU, each family in the default 'S' mode (rng='compat', every CPU shape measured), forward and
  forward+backward: fused never slower than the reference, and >= 2x faster for color, crop, scale
  and rotate; the family table also gives each time as a multiple of one ``x.clone()`` on the same
  tensor (the floor:clone row of the same run).

The official timings: --reference, else benchmarks/official_h200.json (see benchmarks/README.md).
Exit status: 0; 2 when no benchmark row could be read;
3 with --require-reference when the reference JSON is missing; 1 with --fail-on-target when a
target fails.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_TIMINGS = REPO / "benchmarks" / "official_h200.json"
FULL = "color_crop_cutout_flip_scale_rotate"
MAIN_SHAPE = (256, 3, 32, 32)

# Targets (the project's performance goals, README).
DEVICE_S_FWD_MS = 0.03
DEVICE_M_FWD_MS = 0.05
DEVICE_FWDBWD_OVER_FLOOR = 1.5
COMPAT_MIN_SPEEDUP = 20.0
CPU_M_MIN_SPEEDUP = 5.0
CPU_FAMILY_MIN_SPEEDUP = {"color": 2.0, "crop": 2.0, "cutout": 1.0, "flip": 1.0, "scale": 2.0, "rotate": 2.0}

ROW_ORDER = ["color", "crop", "cutout", "flip", "scale", "rotate", "full-S", "full-M",
             "apply full-S", "apply full-M", "op full-M", "floor:mul", "floor:clone", "floor:grid_sample"]
SHAPE_ORDER = ["256x3x32x32", "10x3x32x32", "100x3x32x32", "500x3x32x32", "256x1x28x28"]


@dataclass
class Row:
    source: str
    device: str
    shape: Tuple[int, ...]
    shape_name: str
    kind: str
    label: str
    rng: Optional[str]
    backend: str
    direction: str
    ref_key: Optional[str]
    median_ms: float
    images_per_s: float
    peak_mem_bytes: Optional[int]
    rounds: Optional[int]

    @property
    def key(self) -> tuple:
        return (self.device, self.shape_name, self.label, self.direction, self.backend, self.rng)


@dataclass
class Run:
    path: str
    datetime: Optional[str]
    machine: dict
    info: dict


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def load_runs(paths: Sequence[str]) -> Tuple[List[Row], List[Run], List[str]]:
    rows: List[Row] = []
    runs: List[Run] = []
    problems: List[str] = []
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: not readable as JSON ({e})")
            continue
        machine = data.get("machine_info", {}) or {}
        runs.append(Run(path, data.get("datetime"), machine, machine.get("dsa_fast_bench", {}) or {}))
        for b in data.get("benchmarks", []):
            row = _row(path, b)
            if row is None:
                problems.append(f"{path}: skipped {b.get('name', '?')} (no dsa_fast extra_info or no stats: interrupted, or not from test_bench_augment.py)")
            else:
                rows.append(row)
    # A row measured twice (two JSONs): keep the last.
    unique: Dict[tuple, Row] = {}
    for r in rows:
        unique[r.key] = r
    return list(unique.values()), runs, problems


def _row(path: str, b: dict) -> Optional[Row]:
    info = b.get("extra_info") or {}
    stats = b.get("stats") or {}
    if "kind" not in info or "device" not in info or stats.get("median") is None:
        return None
    median_ms = float(stats["median"]) * 1e3
    shape = tuple(info.get("shape") or ())
    batch = info.get("batch") or (shape[0] if shape else 0)
    device = str(info["device"]).split(":")[0]
    return Row(
        source=path,
        device=device,
        shape=shape,
        shape_name=info.get("shape_name") or "x".join(map(str, shape)),
        kind=info["kind"],
        label=info.get("label") or str(info.get("strategy")),
        rng=info.get("rng"),
        backend=info.get("backend") or "?",
        direction=info.get("direction") or "?",
        ref_key=info.get("ref_key"),
        median_ms=median_ms,
        images_per_s=batch / (median_ms / 1e3) if median_ms > 0 else float("nan"),
        peak_mem_bytes=info.get("peak_mem_bytes"),
        rounds=stats.get("rounds"),
    )


def find_reference(explicit: Optional[str]) -> Tuple[Path, bool]:
    p = Path(explicit) if explicit else OFFICIAL_TIMINGS
    return p, p.is_file()


def load_reference(path: Path) -> Tuple[Dict[Tuple[Tuple[int, ...], str], Dict[str, float]], dict]:
    with open(path) as f:
        data = json.load(f)
    table = {}
    for r in data.get("per_call", []):
        table[(tuple(r["shape"]), r["strategy"])] = {"fwd": float(r["fwd_ms"]), "fwdbwd": float(r["fwdbwd_ms"])}
    return table, data.get("info", {})


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def fms(v: Optional[float]) -> str:
    """Milliseconds: 3 significant digits below 100, whole numbers above."""
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:#.3g}"


def fx(v: Optional[float]) -> str:
    if v is None:
        return "—"
    return f"{v:.0f}×" if v >= 100 else f"{v:.1f}×" if v >= 10 else f"{v:.2f}×"


def fips(v: Optional[float]) -> str:
    if v is None or v != v:
        return "—"
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmem(b: Optional[int]) -> str:
    return "—" if b is None else f"{b / 2**20:.2f}"


def table(header: Sequence[str], lines: Iterable[Sequence[str]], align: Optional[str] = None) -> List[str]:
    out = ["| " + " | ".join(header) + " |"]
    out.append("|" + "|".join((":---" if align and i < len(align) and align[i] == "l" else "---:") for i in range(len(header))) + "|")
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return out


def _order(row_label: str) -> int:
    return ROW_ORDER.index(row_label) if row_label in ROW_ORDER else len(ROW_ORDER)


def _shape_order(name: str) -> int:
    return SHAPE_ORDER.index(name) if name in SHAPE_ORDER else len(SHAPE_ORDER)


def _sort_key(r: Row) -> tuple:
    return (r.device != "cuda", _shape_order(r.shape_name), _order(r.label), r.direction, r.rng or "", r.backend)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


class Report:
    def __init__(self, rows: List[Row], runs: List[Run], ref: Optional[dict], ref_path: Path, ref_info: dict):
        self.rows = sorted(rows, key=_sort_key)
        self.runs = runs
        self.ref = ref
        self.ref_path = ref_path
        self.ref_info = ref_info
        self.by_key = {r.key: r for r in rows}
        self.failed_targets = 0

    def official(self, r: Row) -> Optional[float]:
        if self.ref is None or r.device != "cuda" or not r.ref_key:
            return None
        entry = self.ref.get((tuple(r.shape), r.ref_key))
        return None if entry is None else entry.get(r.direction)

    def vs_official(self, r: Row) -> Optional[float]:
        off = self.official(r)
        return None if off is None or r.median_ms <= 0 else off / r.median_ms

    def get(self, device, shape_name, label, direction, backend, rng) -> Optional[Row]:
        return self.by_key.get((device, shape_name, label, direction, backend, rng))

    def vs_reference(self, r: Row) -> Optional[float]:
        if r.backend != "fused" or r.kind not in ("diffaugment", "apply"):
            return None
        ref = self.get(r.device, r.shape_name, r.label, r.direction, "reference", r.rng)
        return None if ref is None else ref.median_ms / r.median_ms

    # -- header ---------------------------------------------------------------------------

    def header(self, brief: bool = False) -> List[str]:
        out = ["# dsa_fast per-call benchmarks", ""]
        for run in self.runs:
            i, m = run.info, run.machine
            cpu = (m.get("cpu") or {}).get("brand_raw") or m.get("processor") or "?"
            gpu = i.get("gpu") or "none"
            out.append(
                f"- `{run.path}`: {run.datetime or i.get('date_utc', '?')}; GPU {gpu}; CPU {cpu} "
                f"({i.get('cpu_count', '?')} cores, torch threads {i.get('threads', '?')}); torch {i.get('torch', '?')} "
                f"(CUDA {i.get('torch_cuda')}); Python {i.get('python', m.get('python_version', '?'))}; "
                f"dsa_fast {i.get('dsa_fast', '?')} (extension loaded: {i.get('dsa_fast_has_ops', '?')})"
            )
            if i.get("command") and not brief:
                env = " ".join(f"{k}={v}" for k, v in (i.get("env") or {}).items())
                out.append(f"  - command: `{(env + ' ') if env else ''}{i['command']}`")
        if self.ref is None:
            out.append(f"- official timings: NOT FOUND at `{self.ref_path}`: no speed-ups, compat target not evaluated")
        else:
            out.append(
                f"- official timings: `{self.ref_path}` ({self.ref_info.get('device', '?')}, torch "
                f"{self.ref_info.get('torch', '?')}); speed-ups are given for CUDA rows only"
            )
            gpus = {r.info.get("gpu") for r in self.runs if r.info.get("gpu")}
            if any("H200" not in g for g in gpus):
                out.append(f"- NB: this run's GPU ({', '.join(sorted(gpus))}) is not the official timings' H200")
        if brief:
            return out + ["- median ms of one synchronised call; full report with images/s and peak memory: --output", ""]
        out += [
            "- each row: median of pytest-benchmark rounds of one call followed by a device synchronisation, "
            "after warm-up calls; images/s = batch / median; peak MiB = CUDA memory one call allocates beyond its input",
            "",
        ]
        return out

    # -- targets --------------------------------------------------------------------------

    def _verdict(self, ok: Optional[bool]) -> str:
        if ok is None:
            return "NOT MEASURED"
        if not ok:
            self.failed_targets += 1
        return "PASS" if ok else "FAIL"

    def targets(self, brief: bool = False) -> List[str]:
        lines = []
        main = "x".join(map(str, MAIN_SHAPE))
        has_cuda = any(r.device == "cuda" for r in self.rows)
        has_cpu = any(r.device == "cpu" for r in self.rows)
        if has_cuda:
            for label, limit in (("full-S", DEVICE_S_FWD_MS), ("full-M", DEVICE_M_FWD_MS)):
                r = self.get("cuda", main, label, "fwd", "fused", "device")
                ok = None if r is None else r.median_ms <= limit
                lines.append(["device: fwd", f"{main} {label}", "—" if r is None else fms(r.median_ms) + " ms", f"≤ {limit} ms", self._verdict(ok)])
            shapes = sorted({r.shape_name for r in self.rows if r.device == "cuda"}, key=_shape_order)
            for shape in shapes:
                floor = self.get("cuda", shape, "floor:mul", "fwdbwd", "torch", None)
                for label in ("full-S", "full-M"):
                    r = self.get("cuda", shape, label, "fwdbwd", "fused", "device")
                    ok = None if r is None or floor is None else r.median_ms <= DEVICE_FWDBWD_OVER_FLOOR * floor.median_ms
                    measured = "—" if r is None or floor is None else f"{fms(r.median_ms)} ms = {r.median_ms / floor.median_ms:.2f}× floor"
                    lim = "—" if floor is None else f"≤ {DEVICE_FWDBWD_OVER_FLOOR}× {fms(floor.median_ms)} ms"
                    lines.append(["device: fwdbwd vs mul floor", f"{shape} {label}", measured, lim, self._verdict(ok)])
            lines += self._compat_lines(brief)
        if has_cpu:
            for rng in ("compat", "device"):
                for direction in ("fwd", "fwdbwd"):
                    f = self.get("cpu", main, "full-M", direction, "fused", rng)
                    ref = self.get("cpu", main, "full-M", direction, "reference", rng)
                    ok = None if f is None or ref is None else ref.median_ms >= CPU_M_MIN_SPEEDUP * f.median_ms
                    measured = "—" if ok is None else f"{fx(ref.median_ms / f.median_ms)} ({fms(ref.median_ms)} → {fms(f.median_ms)} ms)"
                    lines.append([f"cpu: fused vs reference, {direction}", f"{main} full-M rng={rng}", measured, f"≥ {CPU_M_MIN_SPEEDUP:.0f}×", self._verdict(ok)])
            lines += self._family_target_lines()
        if not lines:
            return []
        return ["## Targets", ""] + table(["target", "row", "measured", "limit", "verdict"], lines, "lllll") + [""]

    def _family_pairs(self):
        """(shape, family, direction, fused row, reference row, clone row) for every CPU family
        measured with rng='compat' on both backends."""
        shapes = sorted({r.shape_name for r in self.rows if r.device == "cpu"}, key=_shape_order)
        for shape in shapes:
            for family in CPU_FAMILY_MIN_SPEEDUP:
                for direction in ("fwd", "fwdbwd"):
                    f = self.get("cpu", shape, family, direction, "fused", "compat")
                    ref = self.get("cpu", shape, family, direction, "reference", "compat")
                    if f is None or ref is None:
                        continue
                    clone = self.get("cpu", shape, "floor:clone", direction, "torch", None)
                    yield shape, family, direction, f, ref, clone

    def _family_target_lines(self) -> List[List[str]]:
        lines = []
        for shape, family, direction, f, ref, _ in self._family_pairs():
            need = CPU_FAMILY_MIN_SPEEDUP[family]
            ok = ref.median_ms >= need * f.median_ms
            lines.append([f"cpu: family vs reference, {direction}", f"{shape} {family} rng=compat",
                          f"{fx(ref.median_ms / f.median_ms)} ({fms(ref.median_ms)} → {fms(f.median_ms)} ms)",
                          f"≥ {need:g}×", self._verdict(ok)])
        return lines

    def families_vs_clone(self) -> List[str]:
        """The CPU family table: fused and reference side by side, and each as a multiple of one
        ``x.clone()`` of the same tensor measured in the same run."""
        lines = []
        for shape, family, direction, f, ref, clone in self._family_pairs():
            def in_clones(r: Row) -> str:
                return "—" if clone is None else f"{r.median_ms / clone.median_ms:.1f}"

            lines.append([shape, family, direction, fms(f.median_ms), fms(ref.median_ms), fx(ref.median_ms / f.median_ms),
                          "—" if clone is None else fms(clone.median_ms), in_clones(f), in_clones(ref)])
        if not lines:
            return []
        head = ["shape", "family ('S', compat)", "dir", "fused ms", "reference ms", "fused × vs ref", "clone ms",
                "fused in clones", "reference in clones"]
        return ["## CPU families: fused vs reference, in units of one x.clone()", ""] + table(head, lines, "lll") + [""]

    def _compat_lines(self, brief: bool) -> List[List[str]]:
        if self.ref is None:
            return [["compat: ≥ 20× official", "every official row", "—", "official JSON missing", self._verdict(None)]]
        checked, failing, missing = [], [], []
        for (shape, strategy), ms in sorted(self.ref.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            if strategy.startswith("floor:"):
                continue
            label = "full-M" if strategy == FULL + "@M" else "full-S" if strategy == FULL else strategy
            shape_name = "x".join(map(str, shape))
            for direction in ("fwd", "fwdbwd"):
                r = self.get("cuda", shape_name, label, direction, "fused", "compat")
                if r is None:
                    missing.append(f"{shape_name} {label} {direction}")
                    continue
                s = ms[direction] / r.median_ms
                checked.append((s, f"{shape_name} {label} {direction}", r.median_ms, ms[direction]))
                if s < COMPAT_MIN_SPEEDUP:
                    failing.append(checked[-1])
        lines = []
        if checked:
            worst = min(checked)
            summary = f"{len(checked) - len(failing)}/{len(checked)} rows ≥ {COMPAT_MIN_SPEEDUP:.0f}×; min {fx(worst[0])} ({worst[1]})"
        else:
            summary = "no compat row measured"
        if missing:
            summary += f"; {len(missing)} official rows not measured"
        ok = None if missing or not checked else not failing
        if failing:
            ok = False
        lines.append(["compat: ≥ 20× official", "every official row", summary, f"≥ {COMPAT_MIN_SPEEDUP:.0f}×", self._verdict(ok)])
        shown = sorted(failing)[: 10 if brief else None]
        for s, name, med, off in shown:
            lines.append(["compat: failing row", name, f"{fx(s)} ({fms(off)} → {fms(med)} ms)", f"≥ {COMPAT_MIN_SPEEDUP:.0f}×", "FAIL"])
        if brief and len(failing) > len(shown):
            lines.append(["compat: failing row", f"... {len(failing) - len(shown)} more (see the full report)", "", "", ""])
        return lines

    # -- tables ---------------------------------------------------------------------------

    def side_by_side(self, brief: bool = False) -> List[str]:
        """One line per (device, shape, row, direction): the backends and rngs in columns."""
        keys = []
        for r in self.rows:
            if r.kind == "floor" or (brief and r.kind != "diffaugment"):
                continue
            k = (r.device, r.shape_name, r.label, r.direction)
            if k not in keys:
                keys.append(k)
        lines = []
        for device, shape, label, direction in keys:
            cells = {(b, g): self.get(device, shape, label, direction, b, g) for b in ("fused", "reference") for g in ("compat", "device")}
            off = self.official(next(r for r in cells.values() if r is not None))
            fc, fd = cells[("fused", "compat")], cells[("fused", "device")]
            rc, rd = cells[("reference", "compat")], cells[("reference", "device")]

            def med(r: Optional[Row]) -> Optional[float]:
                return None if r is None else r.median_ms

            def vs_off(r: Optional[Row]) -> Optional[float]:
                return None if r is None or off is None else off / r.median_ms

            def speedup(fused: Optional[Row], ref: Optional[Row]) -> Optional[float]:
                return None if fused is None or ref is None else ref.median_ms / fused.median_ms

            if brief:
                def with_off(r: Optional[Row]) -> str:
                    return fms(med(r)) + ("" if vs_off(r) is None else f" ({fx(vs_off(r))})")

                lines.append([device, shape, label, direction, fms(off), with_off(fc), with_off(fd), fms(med(rc))])
            else:
                lines.append([device, shape, label, direction, fms(off), fms(med(rc)), fms(med(rd)), fms(med(fc)), fms(med(fd)),
                              fx(vs_off(fc)), fx(vs_off(fd)), fx(speedup(fc, rc)), fx(speedup(fd, rd))])
        if not lines:
            return []
        if brief:
            head = ["dev", "shape", "row", "dir", "official ms", "fused compat ms (× official)", "fused device ms (× official)",
                    "ref compat ms"]
        else:
            head = ["dev", "shape", "row", "dir", "official ms", "ref compat", "ref device", "fused compat", "fused device",
                    "fused compat × official", "fused device × official", "fused × vs ref (compat)", "fused × vs ref (device)"]
        title = "## Side by side (median ms; × = speed-up)"
        return [title, ""] + table(head, lines, "llll" + "r" * (len(head) - 4)) + [""]

    def floors(self) -> List[str]:
        lines = []
        for r in self.rows:
            if r.kind != "floor":
                continue
            lines.append([r.device, r.shape_name, r.label, r.direction, fms(r.median_ms), fms(self.official(r)), fips(r.images_per_s)])
        if not lines:
            return []
        return ["## Floors (one kernel on the same tensor)", ""] + table(
            ["dev", "shape", "row", "dir", "median ms", "official ms", "images/s"], lines, "llll"
        ) + [""]

    def all_rows(self) -> List[str]:
        lines = []
        for r in self.rows:
            lines.append([r.device, r.shape_name, r.label, r.rng or "—", r.backend, r.direction, fms(r.median_ms),
                          fips(r.images_per_s), fmem(r.peak_mem_bytes), fms(self.official(r)), fx(self.vs_official(r)),
                          fx(self.vs_reference(r)), str(r.rounds or "—")])
        return ["## Every row", ""] + table(
            ["dev", "shape", "row", "rng", "backend", "dir", "median ms", "images/s", "peak MiB", "official ms",
             "× official", "× reference", "rounds"], lines, "llllll"
        ) + [""]

    def markdown(self, brief: bool = False) -> str:
        self.failed_targets = 0
        parts = self.header(brief) + ([] if brief else self.floors()) + self.targets(brief) + self.families_vs_clone()
        parts += self.side_by_side(brief)
        if not brief:
            parts += self.all_rows()
        return "\n".join(parts).rstrip() + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="pytest-benchmark --benchmark-json file(s) of benchmarks/test_bench_augment.py")
    ap.add_argument("--reference", help=f"the official timings (default: {OFFICIAL_TIMINGS.relative_to(REPO)})")
    ap.add_argument("--output", "-o", help="write the full markdown report here")
    ap.add_argument("--brief", action="store_true", help="print a short report (targets and the DiffAugment rows) to stdout")
    ap.add_argument("--require-reference", action="store_true", help="exit 3 when the official timings are missing")
    ap.add_argument("--fail-on-target", action="store_true", help="exit 1 when a target fails")
    args = ap.parse_args(argv)

    rows, runs, problems = load_runs(args.json)
    for p in problems:
        print(f"report: {p}", file=sys.stderr)
    if not rows:
        print("report: no benchmark rows with dsa_fast extra_info found", file=sys.stderr)
        return 2
    ref_path, found = find_reference(args.reference)
    ref, ref_info = (load_reference(ref_path) if found else (None, {}))
    if not found:
        print(f"report: official timings not found at {ref_path}", file=sys.stderr)

    report = Report(rows, runs, ref, ref_path, ref_info)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(report.markdown(brief=False))
    text = report.markdown(brief=args.brief)
    sys.stdout.write(text)
    if args.output:
        print(f"\n(full report: {args.output})")
    if args.require_reference and not found:
        return 3
    if args.fail_on_target and report.failed_targets:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
