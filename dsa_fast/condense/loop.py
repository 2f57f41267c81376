"""The condensation loop (docs/semantics.md §5), with evaluation, outputs, checkpoints and resume.

One loop for every method: what an iteration does is the method's (``methods/``: ``dsa``, gradient
matching with DSA; ``dc``, the same without augmentation; ``dm``, distribution matching), given the
run's public ``methods.RunState``; the loop keeps the rest (``_Run``). For DSA, one
iteration: a freshly initialised network; for each outer step, per-class real batches and the
synthetic images of each class, augmented in pairs with a shared seed, give the matching loss
(``matching.match_loss``); one SGD step on the synthetic images; then, except after the last outer
step, ``inner_loop`` epochs of training the network on a detached copy of the synthetic set.

Differences from the official main.py, all deliberate:
- Seeds are explicit. The per-class DiffAugment seed comes from a generator seeded by ``--seed``
  (the official code uses the wall clock); network initialisation, real-batch sampling and
  evaluation have their own derived streams (``rng.py``).
- The run performs exactly ``iterations`` updates and evaluates before iterations 0, k, 2k, ...
  (k = eval_every) and after the last one; the saved set is the evaluated one. (The official loop
  makes one more update after its last evaluation and saves that.)
- Host syncs happen only at logging, checkpoint and evaluation points; the loss is accumulated on
  the device.

Several processes (torchrun; ``distributed.py``, docs/distributed.md): the hooks marked
``[distributed]`` divide the evaluation networks, leave the run folder to rank 0, and hand rank 0's
checkpoint to every process on resume; every process holds the whole run state.

Interruption (Ctrl-C, or SIGTERM/SIGHUP where the command maps them to KeyboardInterrupt): after every
complete iteration the run keeps a copy of its state on the device (``_Run.snapshot``, no host sync);
a KeyboardInterrupt anywhere in the loop or the final evaluation writes that copy as the checkpoint
(with further ``STOP_SIGNALS`` held off until the file is complete) and raises ``RunInterrupted``.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor

from .. import KEY_MASK, ParamDiffAug, __version__, unseeded_counter
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, CheckpointError, config_mismatch, load_checkpoint, \
    rng_state, save_checkpoint, set_rng_state
from .config import SAVED_BEFORE, CondenseConfig, resolve, save_config
from .cpu import threads_note
from .data import load_tensors
from . import distributed
from .distributed import ProcessGroupError, Processes
from .evaluate import evaluate_set, mean_std, random_real_subset
from .methods import RunState, get_method
from .outputs import CONFIG, METRICS, SUMMARY, SYNTHETIC, SYNTHETIC_PNG, append_jsonl, read_json, read_jsonl, save_png, \
    save_synthetic, write_json, write_jsonl
from .progress import Progress, plural
from .rng import STREAM_AUGMENT, STREAM_CONTROL, STREAM_INIT, STREAM_SAMPLE, derive_seed, generator
from .summary import run_summary

logger = logging.getLogger("dsa_fast.condense")



class RunDirError(RuntimeError):
    """The output folder cannot be used as asked (already holds a run, holds none to resume, or
    cannot be written)."""


class RunInterrupted(KeyboardInterrupt):
    """A KeyboardInterrupt that stopped a run after its checkpoint was written.

    ``iteration``: the last complete iteration, the one the checkpoint holds (None: the run was
    stopped before its state existed; its folder then resumes from iteration 0).
    """

    def __init__(self, out: str, iteration: Optional[int], total: int):
        super().__init__(f"run {out} interrupted")
        self.out, self.iteration, self.total = out, iteration, total


@dataclass
class RunResult:
    out: str
    images: Tensor
    labels: Tensor
    metrics: List[Dict[str, Any]]
    summary: Dict[str, Any] = field(default_factory=dict)


def loss_note(loss: float, first: int, last: int) -> str:
    """How the console names the matching loss: which iterations it averages (1-based, inclusive)."""
    if first == last:
        return f"matching loss of iteration {last}: {loss:.4f}"
    return f"mean matching loss over iterations {first}-{last}: {loss:.4f}"


# The signals that stop a run with a checkpoint: Ctrl-C, a kill or a launcher's stop, and the closing
# of the terminal the command runs in (SIGHUP; not on Windows).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _signals_held(out: str):
    """``STOP_SIGNALS`` are only noted (not raised) inside the block, so a second Ctrl-C cannot
    stop the checkpoint write half-way. Python runs signal handlers in the main thread only; in
    another thread there is nothing to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum, frame):
        try:
            sys.stderr.write(f"dsa_fast.condense: still writing the checkpoint of {out}; one moment\n")
        except OSError:  # the terminal is gone (SIGHUP): the write must still go on
            pass

    held = {s: signal.signal(s, note) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in held.items():
            if handler is not None:  # None: installed outside Python, cannot be put back
                signal.signal(s, handler)


def _cloned(x: Any) -> Any:
    """Copies of the tensors in ``x`` (dicts, lists, tuples): a snapshot the run cannot change."""
    if isinstance(x, Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: _cloned(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_cloned(v) for v in x)
    return copy.deepcopy(x)


def _on_cpu(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _on_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_on_cpu(v) for v in x)
    return x


class _Run:
    """The state of one run (data, synthetic set, optimiser, generators, metrics) and its method;
    ``_condense`` drives it. ``state`` is what the method sees (``methods.RunState``)."""

    def __init__(self, config: CondenseConfig, md5s=None, progress: Optional[bool] = None,
                 dist: Processes = distributed.SINGLE):
        self.cfg = config
        self.dist = dist  # [distributed] this process's part in the job (distributed.py)
        self.progress = progress  # bar or log lines, for the evaluations too
        self.out = config.out
        self.device = torch.device(config.device)
        self.train = load_tensors(config.dataset, config.data_path, "train", self.device, md5s=md5s)
        self.test = load_tensors(config.dataset, config.data_path, "test", self.device, md5s=md5s)
        info = self.info = self.train.info
        self.num_classes = info.num_classes
        dist.check_classes(self.num_classes)
        self.class_indices = [torch.nonzero(self.train.labels == c).flatten() for c in range(self.num_classes)]
        counts = [int(i.numel()) for i in self.class_indices]
        if min(counts) == 0:
            raise ValueError(f"dsa_fast.condense: classes {[c for c, n in enumerate(counts) if n == 0]} have no "
                             f"training images")
        method = get_method(config.method)
        # The evaluation's: official draws from its seeded generators (the method's align_corners).
        self.param = ParamDiffAug(align_corners=method.align_corners)
        self.control = generator("cpu", derive_seed(config.seed, STREAM_CONTROL))
        self.sampler = generator(self.device, derive_seed(config.seed, STREAM_SAMPLE))
        image_syn = self._initial_set().requires_grad_(True)
        self.state = RunState(
            config=config, dataset=info, device=self.device, image_syn=image_syn,
            label_syn=torch.arange(self.num_classes, device=self.device).repeat_interleave(config.ipc),
            opt_img=torch.optim.SGD([image_syn], lr=config.lr_img, momentum=0.5),
            param=ParamDiffAug(rng=config.rng, align_corners=method.align_corners),  # the iteration's
            control=self.control,
            # rng='device': the per-class keys (steps.class_keys) from this base and the global
            # outer-step counter, which lives on the device and goes into the checkpoint.
            key_base=derive_seed(config.seed, STREAM_AUGMENT),
            key_step=torch.zeros((), dtype=torch.int64, device=self.device),
            dist=dist, train=self.train, test=self.test, sample_real=self.sample_real, progress=progress)
        self.method = method(self.state)
        self.train, self.test = self.state.train, self.state.test  # as the method made them (mtt: whitened)
        self.iteration = 0
        self.metrics: List[Dict[str, Any]] = []
        # Loss accumulators stay on the device: (sum, count) since the last evaluation and log line.
        self.eval_loss = torch.zeros((), device=self.device)
        self.eval_count = 0
        self.log_loss = torch.zeros((), device=self.device)
        self.log_count = 0
        self.prior_wall = 0.0  # seconds spent before this process (resume)
        self.train_seconds = 0.0  # seconds in condensation iterations, all processes
        self.last_eval = (0, 0.0)  # (iteration, train_seconds) at the previous evaluation
        self.last_complete: Optional[Dict[str, Any]] = None  # snapshot() after the last complete iteration
        self.start_time = time.perf_counter()

    # The run state the loop itself reads too.
    image_syn = property(lambda self: self.state.image_syn)
    label_syn = property(lambda self: self.state.label_syn)
    opt_img = property(lambda self: self.state.opt_img)
    key_step = property(lambda self: self.state.key_step)

    # -- setup --------------------------------------------------------------------------------

    def _initial_set(self) -> Tensor:
        c, (h, w), k, ipc = self.info.channel, self.info.im_size, self.num_classes, self.cfg.ipc
        g = generator(self.device, derive_seed(self.cfg.seed, STREAM_INIT))
        if self.cfg.init == "noise":
            return torch.randn(k * ipc, c, h, w, generator=g, device=self.device)
        parts = []
        for cls, idx in enumerate(self.class_indices):
            if idx.numel() < ipc:
                raise ValueError(f"dsa_fast.condense: init='real' needs ipc={ipc} images of class {cls}, "
                                 f"the training set has {idx.numel()}")
            parts.append(self.train.images[idx[torch.randperm(idx.numel(), generator=g, device=self.device)[:ipc]]])
        return torch.cat(parts).clone()

    def wall(self) -> float:
        return self.prior_wall + time.perf_counter() - self.start_time

    # -- checkpoint ---------------------------------------------------------------------------

    def snapshot(self) -> Dict[str, Any]:
        """The checkpoint of the state now, as copies on the run's device (no host sync), so the
        run can go on while it is kept; ``_on_cpu`` of it is what ``checkpoint.pt`` holds."""
        return {
            "format": CHECKPOINT_FORMAT,
            "dsa_fast_version": __version__,
            "identity": self.cfg.identity(),
            "iteration": self.iteration,
            "image_syn": self.image_syn.detach().clone(),
            "label_syn": self.label_syn.clone(),
            "opt_img": copy.deepcopy(self.opt_img.state_dict()),  # the momentum buffer changes in place
            "rng": rng_state({"control": self.control, "sampler": self.sampler}),
            "key_step": self.key_step.clone(),
            "method_state": _cloned(self.method.state_dict()),
            "metrics": list(self.metrics),
            "eval_loss": self.eval_loss.clone(), "eval_count": self.eval_count,
            "log_loss": self.log_loss.clone(), "log_count": self.log_count,
            "wall_seconds": self.wall(), "train_seconds": self.train_seconds,
            "last_eval": list(self.last_eval),
        }

    def check(self, state: Dict[str, Any], path: str) -> None:
        """Refuse the checkpoint ``state`` (read from ``path``) unless it belongs to this run."""
        diff = config_mismatch({**SAVED_BEFORE, **state["identity"]}, self.cfg.identity())
        if diff:
            raise CheckpointError(f"{path} belongs to a different run configuration ({diff}); refusing to resume")
        if tuple(state["image_syn"].shape) != tuple(self.image_syn.shape):
            raise CheckpointError(f"{path}: synthetic set of shape {tuple(state['image_syn'].shape)}, expected "
                                  f"{tuple(self.image_syn.shape)}")

    def restore(self, state: Dict[str, Any], path: str) -> None:
        """Continue from ``state``, the checkpoint read from ``path``."""
        self.check(state, path)
        with torch.no_grad():
            self.image_syn.copy_(state["image_syn"].to(self.device))
        self.opt_img.load_state_dict(state["opt_img"])
        set_rng_state(state["rng"], {"control": self.control, "sampler": self.sampler})
        if "key_step" in state:
            self.key_step.copy_(state["key_step"])
        self.method.load_state_dict(state.get("method_state", {}))  # none before methods kept state
        self.iteration = int(state["iteration"])
        self.metrics = list(state["metrics"])
        self.eval_loss, self.eval_count = state["eval_loss"].to(self.device), int(state["eval_count"])
        self.log_loss, self.log_count = state["log_loss"].to(self.device), int(state["log_count"])
        self.prior_wall, self.train_seconds = float(state["wall_seconds"]), float(state["train_seconds"])
        self.last_eval = (int(state["last_eval"][0]), float(state["last_eval"][1]))
        self.start_time = time.perf_counter()

    # -- one iteration ------------------------------------------------------------------------

    def sample_real(self, cls: int, n: int) -> Tensor:
        idx = self.class_indices[cls]
        pick = torch.randperm(idx.numel(), generator=self.sampler, device=self.device)[:n]
        return self.train.images[idx[pick]]

    def step(self) -> None:
        # NB: network initialisation and the per-sample augmentation of the inner loop use torch's
        # global generators; seeding them from the control stream makes each iteration a function
        # of the checkpointed state.
        seed = int(torch.randint(0, 2**62, (1,), generator=self.control))
        torch.manual_seed(seed)
        if self.state.param.rng == "device":  # the inner loop's per-sample keys (dsa_fast.unseeded_counter)
            unseeded_counter(self.image_syn.device).fill_(seed & KEY_MASK)
        loss = self.method.iteration()
        self.eval_loss += loss
        self.log_loss += loss
        self.eval_count += 1
        self.log_count += 1

    # -- evaluation and outputs ---------------------------------------------------------------

    def eval_kwargs(self) -> Dict[str, Any]:
        c = self.cfg
        return dict(n_models=c.eval_models, seed=c.seed, model=c.model, epochs=c.eval_epochs, lr=c.lr_net,
                    batch_train=c.batch_train, strategy=c.strategy, param=self.param, mode=c.eval_mode)

    def eval_lr(self) -> float:
        """The synthetic set's evaluation learning rate: the method's (mtt: the learned α), else lr_net."""
        lr = self.method.eval_lr()
        return self.cfg.lr_net if lr is None else lr

    def save_set(self) -> None:
        extra = dict(iteration=self.iteration, ipc=self.cfg.ipc, model=self.cfg.model, strategy=self.cfg.strategy,
                     data_source="embedded" if self.cfg.data_path is None else "files",
                     data_path=self.cfg.data_path, seed=self.cfg.seed, **self.method.outputs())
        save_synthetic(os.path.join(self.out, SYNTHETIC), self.image_syn, self.label_syn, self.info, **extra)
        save_png(os.path.join(self.out, SYNTHETIC_PNG), self.image_syn, self.label_syn, self.info)

    def evaluate_images(self, images: Tensor, labels: Tensor, what: str, lr: Optional[float] = None) -> List[float]:
        """``evaluate_set`` with a progress report per network (a bar on a terminal); ``lr``: the
        networks' learning rate (default lr_net)."""
        passes = self.cfg.eval_epochs + 1
        mine = self.dist.share(self.cfg.eval_models)  # [distributed] this process's networks
        kwargs = {**self.eval_kwargs(), **({} if lr is None else {"lr": lr})}
        with Progress(len(mine) * passes, desc=f"{what}: training pass", unit="pass", log_every=passes,
                      bar=self.progress, leave=False) as bar:
            accs = evaluate_set(images, labels, self.test, on_pass=bar.update, models=mine, **kwargs)
        return self.dist.gather(mine, accs, self.cfg.eval_models)

    def evaluate(self) -> Dict[str, Any]:
        it = self.iteration
        t0 = time.perf_counter()
        accs = self.evaluate_images(self.image_syn.detach().clone(), self.label_syn, f"evaluation at iteration {it}",
                                    lr=self.eval_lr())
        m, s = mean_std(accs)
        loss = float(self.eval_loss / self.eval_count) if self.eval_count else None
        note = "" if loss is None else "; " + loss_note(loss, it - self.eval_count + 1, it)
        done, secs = it - self.last_eval[0], self.train_seconds - self.last_eval[1]
        record = {
            "iteration": it,
            "accuracy_mean": m,
            "accuracy_std": s,
            "accuracies": accs,
            "loss": loss,
            "wall_seconds": round(self.wall(), 3),
            "iterations_per_second": round(done / secs, 4) if done and secs > 0 else None,
            "eval_seconds": round(time.perf_counter() - t0, 3),
        }
        self.metrics.append(record)
        self.eval_loss.zero_()
        self.eval_count = 0
        self.last_eval = (it, self.train_seconds)
        if self.dist.writer:
            append_jsonl(os.path.join(self.out, METRICS), record)
            self.save_set()
        logger.info("iteration %d: accuracy %.2f ± %.2f %% over %s%s", it, 100 * m, 100 * s,
                    plural(len(accs), "model"), note)
        return record


def _check_fresh_out(out: str) -> None:
    if os.path.exists(os.path.join(out, SUMMARY)):
        raise RunDirError(f"{out} already holds a finished run ({SUMMARY}); choose another --out (or delete {out})")
    for name in (CONFIG, CHECKPOINT_NAME):
        if os.path.exists(os.path.join(out, name)):
            raise RunDirError(f"{out} already holds a run ({name}); continue it with --resume {out}, or choose "
                              f"another --out")


def _check_writable(out: str) -> None:
    """Fail before the data is loaded when ``out`` cannot be created or written."""
    path = os.path.abspath(out)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise RunDirError(f"cannot write the run folder {out}: {path} is a file, not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write the run folder {out}: {path} is not writable (permission denied)")


def condense(
    config: CondenseConfig,
    *,
    resume: bool = False,
    progress: Optional[bool] = None,
    on_iteration: Optional[Callable[[int], None]] = None,
    md5s=None,
    dist: Optional[Processes] = None,
) -> RunResult:
    """Run DSA condensation as ``config`` says and write every output into ``config.out``.

    ``resume=True`` continues the run in ``config.out`` from its checkpoint (the configuration must
    match); a folder without a checkpoint yet starts from iteration 0. ``progress``: a tqdm bar
    (default: when stderr is a terminal), else log lines. ``on_iteration(i)`` is called after
    iteration i is complete and checkpointed (tests use it to interrupt a run). ``md5s`` is passed
    to the data loaders (tests). ``dist``: the job this process is part of (default
    ``distributed.current()``: the initialised default process group, else this process alone;
    docs/distributed.md); only its rank 0 reads and writes ``config.out`` and reports progress.

    A KeyboardInterrupt during the run writes the checkpoint of the last complete iteration and
    raises ``RunInterrupted`` (a KeyboardInterrupt); ``condense(config, resume=True)`` continues it.
    """
    cfg = resolve(config)
    dist = distributed.current() if dist is None else dist
    cfg = cfg.replace(device=dist.device(cfg.device))  # [distributed] several processes: the local rank's GPU
    done = dist.on_writer(_prepare_out, cfg, resume)
    if done is not None:
        return done
    device = torch.device(cfg.device)
    fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    # The run seeds torch's global generators (and rng='device': the device's counter of unseeded
    # draws) as it goes; the caller gets theirs back afterwards.
    with torch.random.fork_rng(devices=fork_devices), _counter_kept(device, cfg.rng == "device"), dist.quiet():
        return _condense(cfg, resume, progress if dist.writer else False, on_iteration, md5s, dist)


def _prepare_out(cfg: CondenseConfig, resume: bool) -> Optional[RunResult]:
    """Check the run folder before anything is loaded; the result of a finished run to resume."""
    out = cfg.out
    if resume:
        if not os.path.isdir(out):
            raise RunDirError(f"cannot resume: {out} does not exist; start a new run with --out {out}")
        done = read_json(os.path.join(out, SUMMARY))
        if done is not None and done.get("iterations") == cfg.iterations:
            logger.info("%s: the run is already complete; nothing to do", out)
            syn = torch.load(os.path.join(out, SYNTHETIC), map_location="cpu", weights_only=True)
            return RunResult(out, syn["images"], syn["labels"], read_jsonl(os.path.join(out, METRICS)), done)
    else:
        _check_fresh_out(out)
    _check_writable(out)
    return None


@contextlib.contextmanager
def _counter_kept(device: torch.device, used: bool):
    if not used:
        yield
        return
    counter = unseeded_counter(device)
    kept = counter.clone()
    try:
        yield
    finally:
        counter.copy_(kept)


def data_description(cfg: CondenseConfig) -> str:
    """Which data a run reads, for the console."""
    if cfg.data_path is None:
        return "the embedded MNIST subset (dsa_fast/assets; --data-path DIR reads the full dataset)"
    return f"{cfg.dataset} files under {cfg.data_path}"


def _open_folder(run: _Run, resume: bool, ckpt_path: str) -> Optional[Dict[str, Any]]:
    """Make the run folder and write config.json (a new run), or read and check the checkpoint (a
    resume); the checkpoint's state, or None to start from iteration 0."""
    cfg, out = run.cfg, run.out
    try:
        os.makedirs(out, exist_ok=True)
        if resume and os.path.exists(ckpt_path):
            state = load_checkpoint(ckpt_path)
            run.check(state, ckpt_path)
            write_jsonl(os.path.join(out, METRICS), list(state["metrics"]))  # drop lines written after it
            return state
        if not resume:
            save_config(cfg.replace(device=run.dist.saved_device(cfg.device)), os.path.join(out, CONFIG), meta={
                "dsa_fast": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
                **run.dist.describe(cfg.device)})
        write_jsonl(os.path.join(out, METRICS), [])
        return None
    except OSError as e:
        raise RunDirError(f"cannot write the run folder {out}: {e.strerror or e}") from e


def _write_last_complete(run: _Run, ckpt_path: str) -> Optional[int]:
    """Rank 0 writes the state of the last complete iteration; its iteration (None: none written)."""
    state = run.last_complete
    if state is None or not run.dist.writer:
        return None
    save_checkpoint(ckpt_path, _on_cpu(state))
    return state["iteration"]


def _condense(cfg: CondenseConfig, resume: bool, progress: Optional[bool], on_iteration, md5s,
              dist: Processes) -> RunResult:
    out = cfg.out
    # Loads the data first: a missing file leaves no empty run folder.
    run = _Run(cfg, md5s=md5s, progress=progress, dist=dist)
    ckpt_path = os.path.join(out, CHECKPOINT_NAME)
    try:
        state = dist.on_writer(_open_folder, run, resume, ckpt_path)  # [distributed] rank 0 reads, all restore
        restored = state is not None
        if restored:
            run.restore(state, ckpt_path)
        run.last_complete = run.snapshot()  # before anything is reported: an interrupt from now on keeps it
        on = threads_note(cfg.device) + ("" if dist.size == 1 else f" on {dist.size} processes")
        if restored:
            logger.info("resuming %s at iteration %d of %d%s", out, run.iteration, cfg.iterations, on)
        else:
            logger.info("%s %s at %s for %s on %s%s -> %s",
                        "resuming (no checkpoint yet: from iteration 0)" if resume else "condensing",
                        cfg.dataset, plural(cfg.ipc, "image") + " per class", plural(cfg.iterations, "iteration"),
                        cfg.device, on, out)
        logger.info("data: %s", data_description(cfg))
        return _iterate(run, ckpt_path, progress, on_iteration)
    except (KeyboardInterrupt, ProcessGroupError) as e:  # [distributed] or another process is gone
        # One clause: under torchrun a SIGTERM may follow a failed collective at once.
        with _signals_held(out):
            iteration = _write_last_complete(run, ckpt_path)
        if isinstance(e, KeyboardInterrupt):
            raise RunInterrupted(out, iteration, cfg.iterations) from None
        e.iteration = iteration
        raise


def _iterate(run: _Run, ckpt_path: str, progress: Optional[bool], on_iteration) -> RunResult:
    cfg, out = run.cfg, run.out
    evaluating = cfg.eval_models > 0
    evaluated = {m["iteration"] for m in run.metrics}
    with Progress(cfg.iterations, desc="iteration", unit="it", log_every=cfg.log_every, initial=run.iteration,
                  bar=progress, clock=lambda: run.train_seconds) as bar:
        while run.iteration < cfg.iterations:
            it = run.iteration
            if evaluating and cfg.eval_every and it % cfg.eval_every == 0 and it not in evaluated:
                run.evaluate()
                evaluated.add(it)
                run.last_complete = run.snapshot()  # an interrupt now need not evaluate again
            t0 = time.perf_counter()
            run.step()
            run.iteration = it + 1
            run.train_seconds += time.perf_counter() - t0
            note = None
            if bar.due():
                loss = float(run.log_loss / run.log_count)  # host sync: logging points only
                note = loss_note(loss, run.iteration - run.log_count + 1, run.iteration)
                run.log_loss.zero_()
                run.log_count = 0
            # Copied before it is reported: once "iteration i" shows, an interrupt keeps at least i.
            run.last_complete = run.snapshot()
            bar.update(1, note)
            if (run.iteration % cfg.checkpoint_every == 0 or run.iteration == cfg.iterations) and run.dist.writer:
                save_checkpoint(ckpt_path, _on_cpu(run.last_complete))
            if on_iteration is not None:
                on_iteration(run.iteration)

    final = None
    if evaluating:
        final = next((m for m in run.metrics if m["iteration"] == cfg.iterations), None) or run.evaluate()
    elif run.dist.writer:
        run.save_set()
    baseline = None
    if evaluating:
        bx, by = random_real_subset(run.train, cfg.ipc, cfg.seed)
        baseline = run.evaluate_images(bx, by, "random real baseline")
        bm, bs = mean_std(baseline)
        logger.info("random real baseline (%s per class): %.2f ± %.2f %%", plural(cfg.ipc, "image"), 100 * bm, 100 * bs)
    # [distributed] the processes that ran the last part
    summary = run_summary(cfg, final, baseline, run.wall(), run.train_seconds, run.dist.describe(cfg.device))
    if run.dist.writer:
        write_json(os.path.join(out, SUMMARY), summary)
    return RunResult(out, run.image_syn.detach().cpu(), run.label_syn.cpu(), run.metrics, summary)
