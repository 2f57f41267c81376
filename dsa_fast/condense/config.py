"""The one place that holds the condensation settings and their published defaults.

``CondenseConfig()`` is the published DSA setting (docs/semantics.md §5: ``main.py --method DSA``);
``main_job_config()`` is the reduced run that ``python -m dsa_fast.condense`` does with no
arguments. ``resolve()`` fills in the settings whose default depends on others (loops from ipc,
strategy from the dataset, device from what is available) so the saved ``config.json`` states
exactly what ran.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .rng import check_run_seed

DATASETS: Tuple[str, ...] = ("MNIST", "FashionMNIST", "SVHN", "CIFAR10", "CIFAR100")
INITS: Tuple[str, ...] = ("noise", "real")
DIS_METRICS: Tuple[str, ...] = ("ours", "mse", "cos")
METHODS: Tuple[str, ...] = ("dsa", "dc", "dm")
RNGS: Tuple[str, ...] = ("compat", "device")  # dsa_fast.params.RNG_MODES
COMPILE: Tuple[str, ...] = ("off", "on")  # steps.COMPILE_MODES

# Published defaults that differ by method (main.py --method DSA/DC; main_DM.py), applied where the
# setting is None.
METHOD_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "dsa": {"iterations": 1000, "lr_img": 0.1},
    "dc": {"iterations": 1000, "lr_img": 0.1},
    "dm": {"iterations": 20000, "lr_img": 1.0},
}
# main_DM.py uses its default strategy for every dataset.
DM_STRATEGY = "color_crop_cutout_flip_scale_rotate"

# get_loops(ipc) of the official code: (outer_loop, inner_loop).
PUBLISHED_LOOPS: Dict[int, Tuple[int, int]] = {
    1: (1, 1),
    10: (10, 50),
    20: (20, 25),
    30: (30, 20),
    40: (40, 15),
    50: (50, 10),
}

# The strategy strings of the published DSA commands: no flip for digits.
PUBLISHED_STRATEGY: Dict[str, str] = {
    "MNIST": "color_crop_cutout_scale_rotate",
    "SVHN": "color_crop_cutout_scale_rotate",
    "FashionMNIST": "color_crop_cutout_flip_scale_rotate",
    "CIFAR10": "color_crop_cutout_flip_scale_rotate",
    "CIFAR100": "color_crop_cutout_flip_scale_rotate",
}

# Settings that change what a run computes. A checkpoint is only resumed under the same values.
# (device, out, checkpoint_every, log_every, eval_mode, compile and matching do not change the
# mathematics; they change the float summation order only.)
RUN_IDENTITY: Tuple[str, ...] = (
    "method", "dataset", "data_path", "ipc", "outer_loop", "inner_loop", "iterations", "init", "strategy",
    "dis_metric", "lr_img", "lr_net", "batch_real", "batch_train", "model", "eval_every",
    "eval_models", "eval_epochs", "seed", "rng",
)
# What a setting added later meant for runs saved before it existed (config.json, checkpoints).
SAVED_BEFORE: Dict[str, Any] = {"rng": "compat"}


@dataclass
class CondenseConfig:
    """Settings of one condensation run. Defaults are the published ones (docs/semantics.md §5; for DM, the official main_DM.py).

    ``None`` means "derived": ``iterations`` and ``lr_img`` from ``method`` (``METHOD_DEFAULTS``),
    ``outer_loop``/``inner_loop`` from ``ipc`` (published table; gradient matching only),
    ``strategy`` from ``dataset`` (DM: ``DM_STRATEGY``), ``device`` is 'cuda' when available else
    'cpu', ``rng`` (how the matching draws its augmentations) is 'device' on CUDA and 'compat' (the
    official per-class draws) elsewhere, ``out`` is ``runs/<dataset>[-<method>]-ipc<ipc>-seed<seed>``. ``data_path=None`` (the default) selects the small MNIST subset
    shipped in ``dsa_fast/assets`` (MNIST only); any other data is read only from an explicit
    ``data_path``, never from a folder that happens to exist.
    """

    method: str = "dsa"
    dataset: str = "MNIST"
    data_path: Optional[str] = None
    ipc: int = 1
    outer_loop: Optional[int] = None
    inner_loop: Optional[int] = None
    iterations: Optional[int] = None
    init: str = "real"
    strategy: Optional[str] = None
    dis_metric: str = "ours"
    lr_img: Optional[float] = None
    lr_net: float = 0.01
    batch_real: int = 256
    batch_train: int = 256
    model: str = "ConvNet"
    eval_every: int = 500  # evaluate before iterations 0, k, 2k, ... and after the last; 0: last only
    eval_models: int = 20
    eval_epochs: int = 1000  # the official epoch_eval_train: trains eval_epochs + 1 passes
    eval_mode: str = "auto"  # evaluation networks trained together ('ensemble') or one by one
    matching: str = "auto"  # gradient matching: classes as grouped copies of the net ('grouped') or one by one
    device: Optional[str] = None
    seed: int = 0
    rng: Optional[str] = None  # the iteration's DiffAugment draws: 'compat' (official) or 'device'
    compile: str = "off"  # 'on': the outer step and the inner epoch under torch.compile (steps.py)
    out: Optional[str] = None
    checkpoint_every: int = 10
    log_every: int = 10

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "CondenseConfig":
        """Build from a dict such as a saved config.json; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"dsa_fast.condense: unknown configuration keys {unknown}")
        return cls(**d)

    def replace(self, **changes: Any) -> "CondenseConfig":
        return dataclasses.replace(self, **changes)

    def identity(self) -> Dict[str, Any]:
        """The settings that decide what the run computes (see RUN_IDENTITY)."""
        d = self.to_dict()
        return {k: d[k] for k in RUN_IDENTITY}


# The DM main job (``main_job_config(method="dm")``): measured in docs/condense.md.
DM_MAIN_JOB_ITERATIONS = 200
DM_MAIN_JOB_MODEL = "ConvNetW32"
DM_MAIN_JOB_BATCH_REAL = 32
DM_MAIN_JOB_EVAL = {"eval_models": 4, "eval_epochs": 120}


def main_job_config(**overrides: Any) -> CondenseConfig:
    """The embedded main job: the DSA algorithm at ipc 1 on the MNIST subset shipped in the package,
    with counts cut so it finishes in a few minutes on a 2-core CPU.

    Same loop, distance, augmentation, optimisers and learning rates as the published setting;
    fewer and smaller pieces: ``iterations``, ``batch_real``, ``model`` width, ``eval_models`` and
    ``eval_epochs`` (the baseline gets exactly the same evaluation). Width 32 and 64 real images
    per class because the published ConvNet-128 with 256 takes ~20 s per iteration on such a CPU.
    With ``method="dm"``: distribution matching at ipc 10 (``DM_MAIN_JOB_*`` counts), the same
    evaluation.
    docs/condense.md gives the measured time and accuracies.
    """
    base = CondenseConfig(
        dataset="MNIST",
        data_path=None,
        ipc=1,
        iterations=120,
        batch_real=64,
        model="ConvNetW32",
        eval_every=0,
        eval_models=5,
        eval_epochs=300,
        checkpoint_every=50,
        log_every=20,
    )
    if overrides.get("method") == "dm":
        # DM at ipc 10: one cheap image step per iteration, so many iterations fit (docs/condense.md).
        base = base.replace(method="dm", ipc=10, iterations=DM_MAIN_JOB_ITERATIONS, model=DM_MAIN_JOB_MODEL,
                            batch_real=DM_MAIN_JOB_BATCH_REAL, checkpoint_every=50, log_every=20, **DM_MAIN_JOB_EVAL)
    return base.replace(**overrides)


def published_loops(ipc: int) -> Tuple[int, int]:
    if ipc not in PUBLISHED_LOOPS:
        raise ValueError(
            f"dsa_fast.condense: ipc={ipc} has no published outer/inner loops "
            f"(published for ipc in {sorted(PUBLISHED_LOOPS)}); give outer_loop and inner_loop "
            f"explicitly (--outer-loop/--inner-loop)"
        )
    return PUBLISHED_LOOPS[ipc]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def available_devices() -> Tuple[str, ...]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return tuple(found)


def check_device(device: str) -> None:
    """A ValueError naming the devices there are, unless ``device`` can hold this run's tensors."""
    import torch

    here = ", ".join(available_devices()) + " (choose with --device)"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"dsa_fast.condense: {device!r} is not a torch device; devices here: {here}") from e
    if dev.type == "meta":
        raise ValueError(f"dsa_fast.condense: device {device!r} holds no data; devices here: {here}")
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index is None or dev.index < torch.cuda.device_count())
    elif dev.type == "mps":
        ok = torch.backends.mps.is_available()
    else:
        try:
            torch.empty(0, device=dev)
            ok = True
        except (RuntimeError, AssertionError, NotImplementedError):
            ok = False
    if not ok:
        raise ValueError(f"dsa_fast.condense: device {device!r} is not available here; devices here: {here}")


def default_out(config: CondenseConfig) -> str:
    name = "mnist-subset" if config.data_path is None else config.dataset
    method = "" if config.method == "dsa" else f"-{config.method}"
    return f"runs/{name}{method}-ipc{config.ipc}-seed{config.seed}"


def resolve(config: CondenseConfig) -> CondenseConfig:
    """Check every setting and fill in the derived ones; the result is what config.json records."""
    c = config
    if c.method not in METHODS:
        raise ValueError(f"dsa_fast.condense: unknown method {c.method!r}; expected one of {METHODS}")
    c = c.replace(**{k: v for k, v in METHOD_DEFAULTS[c.method].items() if getattr(c, k) is None})
    if c.dataset not in DATASETS:
        raise ValueError(f"dsa_fast.condense: unknown dataset {c.dataset!r}; expected one of {DATASETS}")
    if c.data_path is None and c.dataset != "MNIST":
        raise ValueError(
            f"dsa_fast.condense: {c.dataset} needs a data path (--data-path DIR, the folder that holds the "
            f"original files); without one only MNIST runs, on the embedded subset"
        )
    if c.init not in INITS:
        raise ValueError(f"dsa_fast.condense: unknown init {c.init!r}; expected one of {INITS}")
    if c.dis_metric not in DIS_METRICS:
        raise ValueError(f"dsa_fast.condense: unknown dis_metric {c.dis_metric!r}; expected one of {DIS_METRICS}")
    for name in ("ipc", "batch_real", "batch_train", "eval_epochs", "checkpoint_every", "log_every"):
        if getattr(c, name) < 1:
            raise ValueError(f"dsa_fast.condense: {name} must be >= 1, got {getattr(c, name)}")
    for name in ("iterations", "eval_every", "eval_models"):
        if getattr(c, name) < 0:
            raise ValueError(f"dsa_fast.condense: {name} must be >= 0, got {getattr(c, name)}")
    check_run_seed(c.seed)
    if (c.outer_loop is None) != (c.inner_loop is None):
        raise ValueError("dsa_fast.condense: give both outer_loop and inner_loop, or neither")
    if c.method == "dm":  # one image step per iteration: no loops
        if c.outer_loop is not None:
            raise ValueError("dsa_fast.condense: outer_loop/inner_loop do not apply to method 'dm' (one image step "
                             "per iteration); drop --outer-loop/--inner-loop")
        outer, inner = None, None
    else:
        outer, inner = (c.outer_loop, c.inner_loop) if c.outer_loop is not None else published_loops(c.ipc)
        if outer < 1 or inner < 0:
            raise ValueError(f"dsa_fast.condense: need outer_loop >= 1 and inner_loop >= 0, got {outer}, {inner}")
    default_strategy = DM_STRATEGY if c.method == "dm" else PUBLISHED_STRATEGY[c.dataset]
    strategy = default_strategy if c.strategy is None else c.strategy
    if strategy not in ("", "none", "None"):
        from .. import TOKENS

        unknown = [t for t in strategy.split("_") if t not in TOKENS]
        if unknown:  # fail now, not at iteration 0
            raise ValueError(
                f"dsa_fast.condense: unknown augmentation {unknown} in strategy {strategy!r}; "
                f"valid tokens are {', '.join(TOKENS)} joined by '_' (or 'none')"
            )
    from .networks import check_model_name

    check_model_name(c.model)
    from .batched import MATCHINGS
    from .ensemble import MODES

    if c.matching not in MATCHINGS:
        raise ValueError(f"dsa_fast.condense: unknown matching {c.matching!r}; expected one of {MATCHINGS}")
    if c.eval_mode not in MODES:
        raise ValueError(f"dsa_fast.condense: unknown eval_mode {c.eval_mode!r}; expected one of {MODES}")
    device = default_device() if c.device is None else c.device
    check_device(device)
    # NB: on the CPU the official draws cost no device round trip, and keep the published bits.
    rng = ("device" if device.startswith("cuda") else "compat") if c.rng is None else c.rng
    if rng not in RNGS:
        raise ValueError(f"dsa_fast.condense: unknown rng {rng!r}; expected one of {RNGS}")
    if c.compile not in COMPILE:
        raise ValueError(f"dsa_fast.condense: unknown compile setting {c.compile!r}; expected one of {COMPILE}")
    if c.compile == "on":
        if c.method == "dm":
            raise ValueError("dsa_fast.condense: --compile on applies to gradient matching (dsa, dc), not to dm")
        augments = c.method != "dc" and strategy not in ("", "none", "None")  # dc: none in the iteration
        if rng != "device" and augments:
            raise ValueError("dsa_fast.condense: --compile on needs --rng device (rng='compat' draws on the host)")
    # An absolute data path keeps `--resume` working from another working directory.
    data_path = None if c.data_path is None else os.path.abspath(c.data_path)
    resolved = c.replace(outer_loop=outer, inner_loop=inner, strategy=strategy, device=device, data_path=data_path,
                         rng=rng)
    if resolved.out is None:
        resolved = resolved.replace(out=default_out(resolved))
    return resolved


def save_config(config: CondenseConfig, path: str, meta: Optional[Dict[str, Any]] = None) -> None:
    """Write config.json: the resolved settings, plus a ``meta`` block (versions) that loading ignores."""
    from .checkpoint import atomic_write_bytes

    d = config.to_dict()
    if meta:
        d["meta"] = meta
    atomic_write_bytes(path, (json.dumps(d, indent=2, sort_keys=False) + "\n").encode())


def load_config(path: str) -> CondenseConfig:
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    d.pop("meta", None)
    for k, v in SAVED_BEFORE.items():
        d.setdefault(k, v)
    return CondenseConfig.from_dict(d)
