"""The settings every method shares, ``CondenseConfig`` that holds a run's values, and ``resolve``.

``CondenseConfig()`` is the published DSA setting (docs/semantics.md §5: ``main.py --method DSA``);
``main_job_config()`` is the reduced run that ``python -m dsa_fast.condense`` does with no
arguments. ``resolve()`` fills in the settings whose default depends on others (loops from ipc,
strategy from the dataset or the method, device from what is available) so the saved
``config.json`` states exactly what ran.

The shared settings are declared once in ``SETTINGS`` (default, help, choices); each method adds
its own (``methods``), and its published defaults where they differ from these.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

from ..params import RNG_MODES
from .batched import MATCHINGS
from .data import DATASETS, get_dataset
from .ensemble import MODES as EVAL_MODES
from .methods import Method, get_method, method_names, methods
from .networks import check_model_name, model_names
from .command import run_seed
from .rng import check_run_seed
from .settings import Setting
from .steps import COMPILE_MODES

def _per_method(name: str) -> str:
    """'1000 (dsa, dc), 20000 (dm)': a setting's published default per method."""
    by_value: Dict[str, list] = {}
    for m in methods():
        if name in m.defaults:
            by_value.setdefault(str(m.defaults[name]), []).append(m.name)
    return ", ".join(f"{v} ({', '.join(names)})" for v, names in by_value.items())


def _loops_help() -> str:
    ipcs = sorted({ipc for m in methods() if m.loops is not None for ipc in m.loops})
    return "the published value for --ipc " + "/".join(map(str, ipcs))


def _strategy_help() -> str:
    own = "; ".join(f"{m.name}: {m.strategy}" for m in methods() if m.strategy is not None)
    return "the published one for the dataset" + (f" ({own})" if own else "")


# The shared settings, in the order of config.json and of the command's help. Published defaults
# (docs/semantics.md §5; for DM, the official main_DM.py); None: derived (``derived`` says from what).
# ``identity=False``: the setting does not change the mathematics (device, out, checkpoint_every,
# log_every, eval_mode, compile and matching change the float summation order at most), so a
# checkpoint resumes under another value.
SETTINGS: Tuple[Setting, ...] = (
    Setting("method", "dsa", lambda: "; ".join(f"{m.name}: {m.help}" for m in methods()), choices=method_names),
    Setting("dataset", "MNIST", "dataset to condense", choices=lambda: tuple(DATASETS)),
    Setting("data_path", None, "root folder of the dataset files in torchvision's layout (e.g. <root>/MNIST/raw/*.gz); "
            "needed for every dataset but MNIST", derived="the embedded MNIST subset"),
    Setting("ipc", 1, "synthetic images per class", type=int, minimum=1),
    Setting("outer_loop", None, "outer loops per iteration", type=int, derived=_loops_help),
    Setting("inner_loop", None, "network epochs per outer loop", type=int, derived=_loops_help),
    Setting("iterations", None, "condensation iterations", type=int, minimum=0,
            derived=lambda: _per_method("iterations")),
    Setting("init", "real", "initial synthetic images: N(0,1) noise or random real images", choices=("noise", "real")),
    Setting("strategy", None, "DSA strategy ('none': no augmentation)", derived=_strategy_help),
    Setting("dis_metric", "ours", "gradient distance", choices=("ours", "mse", "cos")),
    Setting("lr_img", None, "learning rate of the synthetic images (SGD, momentum 0.5)", type=float,
            derived=lambda: _per_method("lr_img")),
    Setting("lr_net", 0.01, "learning rate of the network (matching and evaluation)", type=float),
    Setting("batch_real", 256, "real images per class per outer loop", type=int, minimum=1),
    Setting("batch_train", 256, "batch size for training networks on the synthetic set", type=int, minimum=1),
    Setting("model", "ConvNet", lambda: "network: " + model_names()),
    Setting("eval_every", 500, "evaluate before iterations 0, k, 2k, ... and after the last (0: after the last only)",
            type=int, minimum=0),
    Setting("eval_models", 20, "networks trained per evaluation (0: no evaluation)", type=int, minimum=0),
    Setting("eval_epochs", 1000, "epochs per evaluation network (trains epochs+1 passes, as the official code)",
            type=int, minimum=1),
    Setting("eval_mode", "auto", "evaluation networks trained together as one grouped ensemble (auto: where the "
            "model allows; batch norm trains one by one) or one after another", choices=EVAL_MODES, identity=False),
    Setting("matching", "auto", "gradient matching: the classes as grouped copies of the network, one pass for all "
            "(auto: for the ConvNets without batch norm, off the CPU) or one class after another; equal up to float "
            "rounding", choices=MATCHINGS, identity=False),
    Setting("device", None, "torch device: cpu, cuda, cuda:<n>, or mps where there is one",
            derived="cuda if available, else cpu", identity=False),
    Setting("seed", 0, "seed of every random stream of the run", type=run_seed),
    Setting("rng", None, "how the iteration draws its augmentations: compat (the official per-class draws, made on "
            "the host) or device (keys on the device, drawn inside the augmentation op; no host value per step)",
            choices=RNG_MODES, derived="device on CUDA, compat on the CPU"),
    Setting("compile", "off", "run the outer step and the inner epoch under torch.compile (CUDA: with CUDA graphs; "
            "needs --rng device, gradient matching, no batch norm)", choices=COMPILE_MODES, identity=False),
    Setting("out", None, "output folder", derived="runs/<dataset>-ipc<ipc>-seed<seed>, made unique", identity=False),
    Setting("checkpoint_every", 10, "write a checkpoint every this many iterations", type=int, minimum=1,
            identity=False),
    Setting("log_every", 10, "loss/ETA line (or progress bar update) every this many iterations", type=int,
            minimum=1, identity=False),
)
DEFAULT_METHOD = SETTINGS[0].default
# What a setting added later meant for runs saved before it existed (config.json, checkpoints).
SAVED_BEFORE: Dict[str, Any] = {"rng": "compat"}


def all_settings() -> Dict[str, Setting]:
    """Every setting by name: the shared ones, then each registered method's own."""
    table = {s.name: s for s in SETTINGS}
    for m in methods():
        for s in m.settings:
            if s.name in table:
                raise ValueError(f"dsa_fast.condense: method {m.name!r} declares the setting {s.name!r}, which "
                                 f"exists already")
            table[s.name] = s
    return table


def _owner(name: str) -> Optional[Method]:
    return next((m for m in methods() if any(s.name == name for s in m.settings)), None)


class CondenseConfig:
    """Settings of one condensation run. Defaults are the published ones (docs/semantics.md §5; for DM, the official main_DM.py).

    ``CondenseConfig(name=value, ...)`` for any setting of ``SETTINGS`` or of a registered method;
    the others keep their defaults. ``None`` means "derived": ``iterations`` and ``lr_img`` from
    ``method`` (its ``defaults``), ``outer_loop``/``inner_loop`` from ``ipc`` (the method's
    published table; methods without loops leave them None), ``strategy`` from ``dataset`` (or the
    method's own), ``device`` is 'cuda' when available else 'cpu', ``rng`` (how the matching draws
    its augmentations) is 'device' on CUDA and 'compat' (the official per-class draws) elsewhere,
    ``out`` is ``runs/<dataset>[-<method>]-ipc<ipc>-seed<seed>``. ``data_path=None`` (the default) selects the small MNIST subset
    shipped in ``dsa_fast/assets`` (MNIST only); any other data is read only from an explicit
    ``data_path``, never from a folder that happens to exist.
    """

    def __init__(self, **values: Any):
        table = all_settings()
        unknown = sorted(set(values) - set(table))
        if unknown:
            raise TypeError(f"CondenseConfig: unknown settings {unknown}")
        for name, s in table.items():
            setattr(self, name, values.get(name, s.default))

    def __getattr__(self, name: str) -> Any:
        # A setting of a method registered after this object was made: its default.
        if name.startswith("__"):
            raise AttributeError(name)
        s = all_settings().get(name)
        if s is None:
            raise AttributeError(f"CondenseConfig has no setting {name!r}")
        return s.default

    def _values(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in all_settings()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CondenseConfig) and self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the settings are

    def __repr__(self) -> str:
        return "CondenseConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    def to_dict(self) -> Dict[str, Any]:
        """The shared settings, then those of the run's method (what config.json holds)."""
        own = get_method(self.method).settings if self.method in method_names() else ()
        return {s.name: getattr(self, s.name) for s in SETTINGS + tuple(own)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "CondenseConfig":
        """Build from a dict such as a saved config.json; unknown keys are an error."""
        unknown = sorted(set(d) - set(all_settings()))
        if unknown:
            raise ValueError(f"dsa_fast.condense: unknown configuration keys {unknown}")
        return cls(**d)

    def replace(self, **changes: Any) -> "CondenseConfig":
        return CondenseConfig(**{**self._values(), **changes})

    def identity(self) -> Dict[str, Any]:
        """The settings that decide what the run computes (``Setting.identity``)."""
        return {k: v for k, v in self.to_dict().items() if all_settings()[k].identity}


def main_job_config(**overrides: Any) -> CondenseConfig:
    """The embedded main job: the DSA algorithm at ipc 1 on the MNIST subset shipped in the package,
    with counts cut so it finishes in a few minutes on a 2-core CPU.

    Same loop, distance, augmentation, optimisers and learning rates as the published setting;
    fewer and smaller pieces: ``iterations``, ``batch_real``, ``model`` width, ``eval_models`` and
    ``eval_epochs`` (the baseline gets exactly the same evaluation). Width 32 and 64 real images
    per class because the published ConvNet-128 with 256 takes ~20 s per iteration on such a CPU.
    With another ``method``: what its ``main_job`` changes (``dm``: distribution matching at
    ipc 10, with the same evaluation).
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
    if "method" in overrides:
        base = base.replace(method=overrides["method"], **get_method(overrides["method"]).main_job)
    return base.replace(**overrides)


def published_loops(method: type, ipc: int) -> Tuple[int, int]:
    """The method's published (outer_loop, inner_loop) for ``ipc``."""
    if ipc not in method.loops:
        raise ValueError(
            f"dsa_fast.condense: ipc={ipc} has no published outer/inner loops "
            f"(published for ipc in {sorted(method.loops)}); give outer_loop and inner_loop "
            f"explicitly (--outer-loop/--inner-loop)"
        )
    return method.loops[ipc]


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
    method = "" if config.method == DEFAULT_METHOD else f"-{config.method}"
    return f"runs/{name}{method}-ipc{config.ipc}-seed{config.seed}"


def resolve(config: CondenseConfig) -> CondenseConfig:
    """Check every setting and fill in the derived ones; the result is what config.json records."""
    c = config
    method = get_method(c.method)
    c = c.replace(**{k: v for k, v in method.defaults.items() if getattr(c, k) is None})
    dataset = get_dataset(c.dataset)
    if c.data_path is None and dataset.embedded is None:
        shipped = " and ".join(d.name for d in DATASETS.values() if d.embedded is not None)
        raise ValueError(
            f"dsa_fast.condense: {c.dataset} needs a data path (--data-path DIR, the folder that holds the "
            f"original files); without one only {shipped} runs, on the embedded subset"
        )
    table = all_settings()
    for name, s in table.items():
        owner = _owner(name)
        if owner is not None and owner is not method and getattr(c, name) != s.default:
            raise ValueError(f"dsa_fast.condense: {name} applies to method {owner.name!r}, not {c.method!r}; "
                             f"drop {s.flag}")
        value = getattr(c, name)
        if s.minimum is not None and value is not None and value < s.minimum:
            raise ValueError(f"dsa_fast.condense: {name} must be >= {s.minimum}, got {value}")
    check_run_seed(c.seed)
    if (c.outer_loop is None) != (c.inner_loop is None):
        raise ValueError("dsa_fast.condense: give both outer_loop and inner_loop, or neither")
    if method.loops is None:
        if c.outer_loop is not None:
            raise ValueError(f"dsa_fast.condense: outer_loop/inner_loop do not apply to method {c.method!r} "
                             f"({method.no_loops_reason}); drop --outer-loop/--inner-loop")
        outer, inner = None, None
    else:
        outer, inner = (c.outer_loop, c.inner_loop) if c.outer_loop is not None else published_loops(method, c.ipc)
        if outer < 1 or inner < 0:
            raise ValueError(f"dsa_fast.condense: need outer_loop >= 1 and inner_loop >= 0, got {outer}, {inner}")
    default_strategy = method.strategy if method.strategy is not None else dataset.strategy
    strategy = default_strategy if c.strategy is None else c.strategy
    if strategy not in ("", "none", "None"):
        from .. import TOKENS

        unknown = [t for t in strategy.split("_") if t not in TOKENS]
        if unknown:  # fail now, not at iteration 0
            raise ValueError(
                f"dsa_fast.condense: unknown augmentation {unknown} in strategy {strategy!r}; "
                f"valid tokens are {', '.join(TOKENS)} joined by '_' (or 'none')"
            )
    check_model_name(c.model)
    device = default_device() if c.device is None else c.device
    check_device(device)
    # NB: on the CPU the official draws cost no device round trip, and keep the published bits.
    rng = ("device" if device.startswith("cuda") else "compat") if c.rng is None else c.rng
    c = c.replace(rng=rng)
    for name, s in table.items():
        choices = s.choice_list()
        derived_later = s.default is None and getattr(c, name) is None  # filled in by its method's resolve
        if name not in ("method", "dataset") and choices is not None and not derived_later \
                and getattr(c, name) not in choices:
            raise ValueError(f"dsa_fast.condense: unknown {name} {getattr(c, name)!r}; expected one of {choices}")
    if c.compile == "on":
        if not method.compiles:
            compiling = ", ".join(m.name for m in methods() if m.compiles)
            raise ValueError(f"dsa_fast.condense: --compile on applies to {compiling}, not to {c.method}")
        augments = method.augments and strategy not in ("", "none", "None")
        if rng != "device" and augments:
            raise ValueError("dsa_fast.condense: --compile on needs --rng device (rng='compat' draws on the host)")
    # An absolute data path keeps `--resume` working from another working directory.
    data_path = None if c.data_path is None else os.path.abspath(c.data_path)
    resolved = c.replace(outer_loop=outer, inner_loop=inner, strategy=strategy, device=device, data_path=data_path)
    if resolved.out is None:
        resolved = resolved.replace(out=default_out(resolved))
    return method.resolve(resolved)


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
