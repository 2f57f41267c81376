#!/usr/bin/env python3
"""Peak extra memory of one fused CPU call on large images:

    python benchmarks/cpu_memory.py [--shapes 256x3x224x224,8x3x512x512] [--threads 1]

For each shape, a fresh child process makes x (float32), takes its peak resident size (ru_maxrss),
runs the fused 'M' chain forward (``torch.ops.dsa_fast.augment``) once, then its backward op once,
and reports how far the peak rose beyond x, next to the output's size: what the call needs on top
of its output (workspaces, allocator slack). Also the time of each call.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
import dsa_fast
from dsa_fast import ParamDiffAug
from dsa_fast.fused import pack_omega
shape = tuple(int(v) for v in sys.argv[1].split("x"))
x = torch.rand(shape)
omega = dsa_fast.sample_params("color_crop_cutout_flip_scale_rotate", x[:1], seed=0, param=ParamDiffAug(aug_mode="M"))
table, flags = pack_omega(omega.steps, 1, x.device)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = peak()
t = time.perf_counter(); y = torch.ops.dsa_fast.augment(x, table, flags, False); t_fwd = time.perf_counter() - t
after_fwd = peak()
del y
t = time.perf_counter(); g = torch.ops.dsa_fast.augment_backward(x, table, flags, False); t_bwd = time.perf_counter() - t
after_bwd = peak()
print(json.dumps(dict(shape=shape, out_bytes=x.numel() * 4, fwd_extra=after_fwd - base, bwd_extra=after_bwd - base,
                      fwd_s=t_fwd, bwd_s=t_bwd)))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="256x3x224x224,8x3x512x512")
    ap.add_argument("--threads", default="1")
    args = ap.parse_args()
    print("| shape | threads | output MiB | peak rise fwd MiB | peak rise fwd+bwd MiB | beyond output MiB | fwd s | bwd s |")
    print("|:---|---:|---:|---:|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        done = subprocess.run([sys.executable, "-c", CHILD, shape, args.threads], capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        mib = 2**20
        beyond = max(r["fwd_extra"], r["bwd_extra"]) - r["out_bytes"]
        print(f"| {shape} | {args.threads} | {r['out_bytes'] / mib:.1f} | {r['fwd_extra'] / mib:.1f} | {r['bwd_extra'] / mib:.1f} | "
              f"{beyond / mib:.1f} | {r['fwd_s']:.2f} | {r['bwd_s']:.2f} |")


if __name__ == "__main__":
    main()
