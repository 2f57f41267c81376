"""The loop as a GPU runs it: device-drawn ω (``--rng device``) and the compiled steps (``--compile``).

- rng='device': the per-class keys come from a step counter on the device (``steps.class_keys``);
  runs are reproducible, interrupt + resume is exact, and an iteration reads one host value (the
  network seed from the CPU control stream), none per class.
- ``MatchingSteps`` eagerly is the plain loop (autograd + torch.optim) bit for bit, and compiled
  (inductor, fullgraph) gives the same loss, image gradient and updates within float32 rounding.
- CUDA (``needs_cuda``): no host synchronisation inside an iteration, compiled equals eager.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import dsa_fast
from condense_helpers import _one_thread  # noqa: F401
from conftest import needs_cuda
from dsa_fast import DiffAugment, ParamDiffAug, device_rng
from dsa_fast.condense import CondenseConfig, condense, resolve
from dsa_fast.condense.checkpoint import load_checkpoint
from dsa_fast.condense.cli import main as condense_main
from dsa_fast.condense.config import load_config
from dsa_fast.condense.loop import _Run
from dsa_fast.condense.matching import match_loss
from dsa_fast.condense.networks import ConvNet
from dsa_fast.condense.rng import global_rng_kept
from dsa_fast.condense.steps import KEY_MASK, MatchingSteps, class_keys

# torch's own compile path (inductor on the CPU) calls torch.jit.script_method, deprecated in torch
# itself: not a warning about this code.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

STRATEGY = "color_crop_cutout_scale_rotate"


def tiny(out, **kw) -> CondenseConfig:
    base = dict(dataset="MNIST", data_path=None, ipc=2, outer_loop=2, inner_loop=1, iterations=4, eval_every=0,
                model="ConvNetW8", batch_real=8, eval_models=0, checkpoint_every=2, log_every=1, device="cpu",
                seed=3, out=str(out), rng="device")
    base.update(kw)
    return CondenseConfig(**base)


# -- rng='device' in the loop ------------------------------------------------------------------


def test_class_keys_are_a_function_of_seed_step_and_class():
    base = 123456789
    steps = [torch.tensor(s) for s in (0, 1, 7, 10**6)]
    keys = torch.stack([class_keys(base, s, 10) for s in steps])
    # Literal: (base + step * K + c) mod 2**40.
    for s, row in zip((0, 1, 7, 10**6), keys.tolist()):
        assert row == [(base + s * 10 + c) % 2**40 for c in range(10)]
    # Distinct over many steps and classes (no two (step, class) share a draw), and 40-bit.
    many = class_keys(base, torch.arange(5000).view(-1, 1), 10).flatten()
    assert many.unique().numel() == many.numel() and int(many.max()) <= KEY_MASK
    assert not torch.equal(class_keys(base + 1, steps[1], 10), keys[1])


def test_device_rng_run_is_reproducible_and_differs_from_compat(tmp_path):
    a = condense(tiny(tmp_path / "a"), progress=False)
    b = condense(tiny(tmp_path / "b"), progress=False)
    c = condense(tiny(tmp_path / "c", rng="compat"), progress=False)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["rng"] == "device"
    # The run hands the device counter of unseeded draws back as it found it.
    before = device_rng.counter(torch.device("cpu")).clone()
    condense(tiny(tmp_path / "d", iterations=1), progress=False)
    assert torch.equal(device_rng.counter(torch.device("cpu")), before)


class _Interrupt(Exception):
    pass


def _stop_at(k):
    def hook(i):
        if i == k:
            raise _Interrupt()
    return hook


@pytest.mark.parametrize("method", ["dsa", "dm"])
def test_device_rng_resume_is_bitwise_equal(tmp_path, method):
    kw = dict(method=method, iterations=5) if method == "dsa" else dict(method="dm", outer_loop=None,
                                                                        inner_loop=None, iterations=5)
    full = condense(tiny(tmp_path / "full", **kw), progress=False)
    cfg = tiny(tmp_path / "cut", **kw)
    with pytest.raises(_Interrupt):  # stopped after iteration 3; the checkpoint holds iteration 2
        condense(cfg, progress=False, on_iteration=_stop_at(3))
    state = load_checkpoint(str(tmp_path / "cut" / "checkpoint.pt"))
    outer = 2 if method == "dsa" else 1
    assert state["iteration"] == 2 and int(state["key_step"]) == 2 * outer
    resumed = condense(cfg, resume=True, progress=False)
    assert torch.equal(resumed.images, full.images)


class _HostReads(TorchDispatchMode):
    """Counts the ops that read a tensor's value back to the host (``.item()``, ``int(t)``)."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


def test_host_values_per_iteration(tmp_path):
    """rng='device': one host value per iteration (the network seed, from the CPU control stream),
    none per class or outer step; rng='compat' reads the official per-class draws on the host."""
    reads = {}
    for rng in ("device", "compat"):
        run = _Run(resolve(tiny(tmp_path / rng, rng=rng)))
        run.step()  # first iteration: the momentum buffer and every lazy state exist afterwards
        with _HostReads() as mode:
            run.step()
        reads[rng] = mode.reads
        assert int(run.key_step) == (4 if rng == "device" else 0)  # 2 iterations x 2 outer steps
    assert reads["device"] == 1 and reads["compat"] > 2 * 10, reads


def test_config_rng_and_compile_resolution(tmp_path):
    assert resolve(tiny(tmp_path, rng=None)).rng == "compat"  # the CPU default
    assert resolve(tiny(tmp_path, rng=None, device="cpu")).compile == "off"
    with pytest.raises(ValueError, match="needs --rng device"):
        resolve(tiny(tmp_path, rng="compat", compile="on"))
    with pytest.raises(ValueError, match="not to dm"):
        resolve(tiny(tmp_path, method="dm", outer_loop=None, inner_loop=None, compile="on"))
    with pytest.raises(ValueError, match="unknown rng"):
        resolve(tiny(tmp_path, rng="fast"))
    with pytest.raises(ValueError, match="unknown compile"):
        resolve(tiny(tmp_path, compile="yes"))
    # A config.json written before the setting existed drew the official way.
    d = resolve(tiny(tmp_path / "old")).to_dict()
    del d["rng"], d["compile"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(d))
    assert load_config(str(path)).rng == "compat"


def test_resume_accepts_compile_and_device(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--iterations", "2", "--model", "ConvNetW8", "--batch-real", "4", "--eval-models", "0", "--device",
            "cpu", "--out", str(out), "--no-progress", "--rng", "device"]
    with pytest.raises(SystemExit):
        condense_main(["--resume", str(out), "--seed", "2"])
    assert condense_main(args) == 0
    assert condense_main(["--resume", str(out), "--compile", "off", "--device", "cpu", "--no-progress"]) == 0


# -- MatchingSteps: eager = the plain loop; compiled = eager ------------------------------------


def _plain_iteration(net, img, opt_img, reals, seeds, labels, param, lr_net, batch, k, ipc):
    """The loop with autograd backward and torch.optim. The matching's seeded draws leave torch's
    global generators as they were (rng.global_rng_kept), so the inner loop's draws do not depend on
    which classes a process matched."""
    syns = [img[c * ipc:(c + 1) * ipc] for c in range(k)]
    with global_rng_kept("cpu"):
        loss = match_loss(net, reals, syns, list(range(k)), seeds, STRATEGY, param, "ours")
    opt_img.zero_grad(set_to_none=True)
    loss.backward(inputs=[img])
    opt_img.step()
    opt_net = torch.optim.SGD(net.parameters(), lr=lr_net)
    net.train()
    images = img.detach().clone()
    perm = torch.randperm(images.shape[0])
    for start in range(0, images.shape[0], batch):
        idx = perm[start:start + batch]
        out = F.cross_entropy(net(DiffAugment(images[idx], STRATEGY, seed=-1, param=param)), labels[idx])
        opt_net.zero_grad(set_to_none=True)
        out.backward()
        opt_net.step()
    return loss.detach()


def _problem(k=2, ipc=2, n=3, size=12, dtype=torch.float32, width=4):
    g = torch.Generator().manual_seed(0)
    reals = [torch.randn(n, 1, size, size, generator=g, dtype=dtype) for _ in range(k)]
    img = torch.randn(k * ipc, 1, size, size, generator=g, dtype=dtype)
    torch.manual_seed(1)
    net = ConvNet(1, k, (size, size), width=width, depth=1).to(dtype)
    return reals, img, net, torch.arange(k).repeat_interleave(ipc)


def _steps(net, img, k, ipc, param, compile="off", batch=4):
    opt = torch.optim.SGD([img], lr=0.1, momentum=0.5)
    steps = MatchingSteps(net, img, opt, num_classes=k, ipc=ipc, strategy=STRATEGY, param=param, metric="ours",
                          lr_net=0.01, batch_train=batch, key_base=77, compile=compile)
    return steps, opt


@pytest.mark.parametrize("rng", ["compat", "device"])
def test_eager_steps_equal_the_plain_loop_bitwise(rng):
    k, ipc = 3, 2
    reals, img0, net0, labels = _problem(k=k, ipc=ipc, n=4, size=14, width=8)
    param = ParamDiffAug(rng=rng)
    seeds = [11, 12, 13]
    results = []
    for use_steps in (True, False):
        img, net = img0.clone().requires_grad_(True), copy.deepcopy(net0)
        torch.manual_seed(5)
        device_rng.manual_seed(9)
        if use_steps:
            steps, opt = _steps(net, img, k, ipc, param, batch=4)
            losses = []
            for _ in range(2):
                losses.append(steps.outer_step(reals, seeds))
                steps.inner_epoch(img.detach().clone(), labels)
        else:
            opt = torch.optim.SGD([img], lr=0.1, momentum=0.5)
            losses = [_plain_iteration(net, img, opt, reals, seeds, labels, param, 0.01, 4, k, ipc) for _ in range(2)]
        results.append((losses, img.detach().clone(), opt.state[img]["momentum_buffer"].clone(),
                        [p.detach().clone() for p in net.parameters()]))
    (la, ia, ba, pa), (lb, ib, bb, pb) = results
    assert all(torch.equal(x, y) for x, y in zip(la, lb))
    assert torch.equal(ia, ib) and torch.equal(ba, bb)
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))


def _err(x, ref):
    return float((x.double() - ref).abs().max())


@pytest.mark.skipif(not dsa_fast.has_ops(), reason="the compiled step is tested with the fused kernels")
def test_outer_step_and_epoch_compile_fullgraph_and_equal_eager(device):
    """Compiled with torch.compile(fullgraph=True), inductor (a graph break is an error; on CUDA
    with CUDA graphs), against the same step run eagerly, both in float32, and the eager step in
    float64 as the reference.

    Tolerance: the compiled step's error against the float64 reference is at most twice the eager
    float32 step's own error, plus 8 float32 ulps of the value's scale: inductor fuses and reorders
    float32 sums, so it may round differently but not worse than float32 arithmetic does.
    """
    k, ipc = 2, 2
    reals32, img32, net32, labels = _problem(k=k, ipc=ipc)
    param = ParamDiffAug(rng="device")
    out = {}
    for name, dtype, compile in (("eager64", torch.float64, "off"), ("eager32", torch.float32, "off"),
                                 ("compiled", torch.float32, "on")):
        reals = [r.to(device, dtype) for r in reals32]
        img = img32.to(device, dtype).clone().requires_grad_(True)  # .to may return img32 itself
        net = copy.deepcopy(net32).to(device, dtype)
        steps, opt = _steps(net, img, k, ipc, param, compile=compile, batch=3)
        steps.outer_step(reals, torch.zeros((), dtype=torch.int64, device=device))  # makes the momentum buffer
        buf = opt.state[img]["momentum_buffer"]
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        results = []
        for step in (1, 2, 3):  # compiled once, replayed after (CUDA graphs record on a later call)
            loss, grad, new_buf, new_img = steps._outer_fn(reals, torch.tensor(step, device=device), buf)
            results.append((loss.clone(), grad.clone()))
            with torch.no_grad():
                img.copy_(new_img)
                buf.copy_(new_buf)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
        device_rng.counter(torch.device(device)).fill_(4)
        torch.manual_seed(4)
        steps.inner_epoch(img.detach().clone(), labels.to(device))
        out[name] = dict(results=results, img=img.detach().clone(), buf=buf.clone(), graphs=graphs,
                         params=[p.detach().clone() for p in net.parameters()])
    assert out["eager32"]["graphs"] == 0 and out["compiled"]["graphs"] == 1
    eps = torch.finfo(torch.float32).eps
    ref, e32, comp = out["eager64"], out["eager32"], out["compiled"]

    def check(a, b, r):
        scale = float(r.abs().max())
        assert _err(a, r) <= 2 * _err(b, r) + 8 * eps * scale, (_err(a, r), _err(b, r), scale)

    for (lc, gc), (l32, g32), (l64, g64) in zip(comp["results"], e32["results"], ref["results"]):
        check(lc, l32, l64)
        check(gc, g32, g64)
        assert float(gc.abs().max()) > 0
    check(comp["img"], e32["img"], ref["img"])
    check(comp["buf"], e32["buf"], ref["buf"])
    for pc, p32, p64 in zip(comp["params"], e32["params"], ref["params"]):
        check(pc, p32, p64)


@pytest.mark.skipif(not dsa_fast.has_ops(), reason="the compiled step is tested with the fused kernels")
def test_sum_grad_runs_between_the_compiled_gradient_and_the_update(monkeypatch):
    """With ``sum_grad`` (the all-reduce of a multi-process run) and compile='on', the loss and
    gradient are one compiled graph, the sum runs eagerly on its output, and the update uses the
    summed gradient: the same steps as eager with the same ``sum_grad``. Here the sum is that of two
    processes with equal gradients (doubling in place). Dynamo with fullgraph=True, backend
    'aot_eager' (no code generation), as the loop test below."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"}))
    k, ipc = 2, 2
    reals, img0, net0, _ = _problem(k=k, ipc=ipc)
    param = ParamDiffAug(rng="device")
    out = {}
    for compile in ("off", "on"):
        seen = []

        def sum_grad(g, seen=seen):
            seen.append(g.clone())
            g.mul_(2.0)

        img, net = img0.clone().requires_grad_(True), copy.deepcopy(net0)
        opt = torch.optim.SGD([img], lr=0.1, momentum=0.5)
        steps = MatchingSteps(net, img, opt, num_classes=k, ipc=ipc, strategy=STRATEGY, param=param, metric="ours",
                              lr_net=0.01, batch_train=3, key_base=77, compile=compile, sum_grad=sum_grad)
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        firsts = []
        for step in range(3):
            steps.outer_step(reals, torch.tensor(step))
            firsts.append(img.detach().clone())
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
        out[compile] = dict(img=img.detach().clone(), buf=opt.state[img]["momentum_buffer"].clone(), seen=seen,
                            graphs=graphs, first=firsts[0])
    assert out["off"]["graphs"] == 0 and out["on"]["graphs"] == 1
    assert len(out["on"]["seen"]) == len(out["off"]["seen"]) == 3
    scale = float(out["off"]["img"].abs().max())
    for g_on, g_off in zip(out["on"]["seen"], out["off"]["seen"]):
        assert float(g_off.abs().max()) > 0
        torch.testing.assert_close(g_on, g_off, rtol=1e-5, atol=1e-6 * float(g_off.abs().max()))
    torch.testing.assert_close(out["on"]["img"], out["off"]["img"], rtol=1e-5, atol=1e-6 * scale)
    torch.testing.assert_close(out["on"]["buf"], out["off"]["buf"], rtol=1e-5, atol=1e-6 * scale)
    # The update used the summed gradient: torch.optim.SGD's first step sets the buffer to the
    # gradient, so the images moved by lr times twice the gradient sum_grad was given.
    for run in out.values():
        torch.testing.assert_close(run["first"], img0 - 0.1 * (2.0 * run["seen"][0]))


def test_the_loop_traces_fullgraph_with_compile_on(tmp_path, monkeypatch):
    """The real loop (10 classes, ConvNetW8, outer and inner loops) with --compile on traces as one
    graph per callable: Dynamo with fullgraph=True, its backend swapped for 'aot_eager' (no inductor
    code generation: the inductor test above is the numerical one) to keep the test short. The run
    matches the eager run to float32 rounding."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"}))
    cfg = dict(iterations=3, outer_loop=2, inner_loop=1)
    on = condense(tiny(tmp_path / "on", compile="on", **cfg), progress=False)
    off = condense(tiny(tmp_path / "off", compile="off", **cfg), progress=False)
    torch.testing.assert_close(on.images, off.images, rtol=1e-5, atol=1e-5 * float(off.images.abs().max()))


# -- CUDA ---------------------------------------------------------------------------------------


@needs_cuda
def test_cuda_iteration_makes_no_host_sync(tmp_path):
    run = _Run(resolve(tiny(tmp_path / "r", device="cuda", rng="device")))
    for _ in range(2):  # lazy state, the first step
        run.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            run.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(run.eval_loss).item()


@needs_cuda
def test_cuda_compiled_steps_make_no_host_sync():
    k, ipc = 2, 2
    reals, img, net, labels = _problem(k=k, ipc=ipc)
    reals, labels = [r.cuda() for r in reals], labels.cuda()
    img = img.cuda().requires_grad_(True)
    steps, _ = _steps(net.cuda(), img, k, ipc, ParamDiffAug(rng="device"), compile="on", batch=3)
    key_step = torch.zeros((), dtype=torch.int64, device="cuda")

    def iteration():
        for _ in range(2):
            steps.outer_step(reals, key_step)
            key_step.add_(1)
            steps.inner_epoch(img.detach().clone(), labels)

    for _ in range(3):  # the eager first step, compilation, CUDA graph recording
        iteration()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        iteration()
    finally:
        torch.cuda.set_sync_debug_mode(0)
