"""One condensation on several processes (``torchrun``), with torch.distributed; docs/distributed.md.

What is divided, what is replicated (every process holds the whole run state):

- The classes of each outer step (``share``): a process augments, forwards and differentiates the
  classes of its contiguous slice only; the image gradient is summed over the processes
  (``sum_grad``, an all-reduce) before the one SGD step that every process makes, so the synthetic
  set stays identical everywhere. A class's gradient rows are non-zero on one process only, so the
  sum adds exact zeros: the set equals the one-process set up to how each process computes its own
  classes (the matching loss, a sum of per-class terms, is summed in another order).
- Every random draw is replicated: all processes draw every class's real batch and DSA seed from
  the same streams and use their slice, so a class gets the same seed whichever process takes it;
  the network of an iteration comes from the same seed everywhere; the inner-loop training (and its
  per-sample DSA draws) runs on every process, after which rank 0's network is broadcast
  (``same_module``) so that non-deterministic kernels cannot let the copies drift apart.
- The evaluation networks (``share`` of the E networks): network k keeps the seed stream k
  whichever process trains it; the accuracies are gathered (``gather``).
- Rank 0 alone reads and writes the run folder (``on_writer`` runs a function there and hands
  its result, or its error, to every process) and reports progress; the others log errors only.

``Processes`` is the run's view of the job; ``SINGLE`` (one process, no torch.distributed) makes
every method the identity, so the loop has one code path. Collectives that fail (a process died,
the network failed, or another process did not answer within the timeout) raise
``ProcessGroupError``.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import pickle
from typing import Any, Callable, Iterator, List, Optional, Sequence

import torch
from torch import Tensor, nn

# Seconds a collective may wait for the other processes before the job stops (env override). A
# process that dies is noticed at once (its connections close); the timeout bounds a process that
# hangs. Evaluations are divided, so the wait at their end is about one network's training.
TIMEOUT_ENV = "DSA_FAST_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800


class ProcessGroupError(RuntimeError):
    """A collective of a multi-process run failed: another process died or did not answer."""

    def __init__(self, message: str, rank: int, size: int):
        super().__init__(message)
        self.rank, self.size = rank, size
        self.iteration: Optional[int] = None  # the checkpoint rank 0 wrote afterwards (None: none)


def _timeout() -> datetime.timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"dsa_fast.condense: ${TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise ValueError(f"dsa_fast.condense: ${TIMEOUT_ENV} must be > 0 seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def launched() -> bool:
    """Whether this process was started as one of a job (torchrun and the env:// convention set
    ``WORLD_SIZE``)."""
    return bool(os.environ.get("WORLD_SIZE"))


def launch(device: Optional[str]) -> "Processes":
    """Join the job that started this process (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT`` as torchrun sets them); ``SINGLE`` when not launched so.

    ``device``: the --device asked for (None: the default, cuda where there is one). For CUDA each
    process takes the GPU of its local rank; CUDA tensors go through NCCL, CPU tensors (and runs on
    the CPU) through gloo.
    """
    import torch.distributed as dist

    if not launched():
        return SINGLE
    if dist.is_initialized():
        return current()
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if cuda:
        count = torch.cuda.device_count()
        if local >= count:
            raise ValueError(f"dsa_fast.condense: the process of local rank {local} needs GPU {local}, and this "
                             f"machine has {count}; start at most {count} processes per machine "
                             f"(--nproc-per-node {count}) or run on the CPU (--device cpu)")
        torch.cuda.set_device(local)
    backend = "cpu:gloo,cuda:nccl" if cuda and dist.is_nccl_available() else "gloo"
    try:
        dist.init_process_group(backend=backend, timeout=_timeout())
    except (RuntimeError, ValueError) as e:
        raise ProcessGroupError(f"could not join the job ({type(e).__name__}: {_first_line(e)})",
                                int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])) from e
    return current()


def finish(processes: "Processes", completed: bool = False) -> None:
    """Leave the job that ``launch`` joined (its threads would otherwise be torn down at exit).
    ``completed``: this process ran to the end, so every process has made the run's collectives;
    they then meet once more before tearing the group down, so that none closes its connections
    while another is still inside the teardown (gloo may then end that process with
    std::terminate)."""
    import torch.distributed as dist

    if processes is not SINGLE and dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):  # a job that lost a process: its group may be broken
            if completed:
                dist.barrier()
            dist.destroy_process_group()


def current() -> "Processes":
    """The job this process belongs to: the default process group if one is initialised (a caller
    of ``condense`` may set it up itself), else ``SINGLE``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    rank, size = dist.get_rank(), dist.get_world_size()
    return Processes(rank, size, int(os.environ.get("LOCAL_RANK", rank)), str(dist.get_backend()))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class Processes:
    """This process's part in a job of ``size`` processes (rank 0 writes the outputs)."""

    def __init__(self, rank: int, size: int, local_rank: int = 0, backend: str = ""):
        self.rank, self.size, self.local_rank, self.backend = rank, size, local_rank, backend
        self.writer = rank == 0

    def __repr__(self) -> str:
        return f"Processes(rank={self.rank}, size={self.size}, backend={self.backend!r})"

    # -- placement --------------------------------------------------------------------------

    def device(self, device: str) -> str:
        """The device this process runs a ``device`` run on: with several processes, 'cuda' (or
        any 'cuda:n') is the GPU of the local rank."""
        dev = torch.device(device)
        if self.size == 1 or dev.type != "cuda":
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise ValueError(f"dsa_fast.condense: the process of local rank {self.local_rank} needs GPU "
                             f"{self.local_rank}; this machine has {torch.cuda.device_count()}")
        return f"cuda:{self.local_rank}"

    def saved_device(self, device: str) -> str:
        """What config.json records: 'cuda' rather than rank 0's own GPU, so a resume with another
        number of processes places every process on its own GPU."""
        return "cuda" if self.size > 1 and torch.device(device).type == "cuda" else device

    def check_classes(self, num_classes: int) -> None:
        if self.size > num_classes:
            raise ValueError(f"dsa_fast.condense: {self.size} processes for {num_classes} classes; every process "
                             f"needs at least one class: start at most {num_classes}")

    # -- division of work -------------------------------------------------------------------

    def share(self, n: int) -> range:
        """This process's contiguous slice of ``n`` items (classes, evaluation networks); the first
        ``n % size`` processes take one more."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (1 if self.rank < extra else 0))

    # -- collectives ------------------------------------------------------------------------

    def _collective(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (RuntimeError, ValueError) as e:  # DistError and the backends' errors are RuntimeErrors
            raise ProcessGroupError(f"{what} failed ({type(e).__name__}: {_first_line(e)})", self.rank,
                                    self.size) from e

    def sum_grad(self, tensor: Tensor) -> None:
        """Sum ``tensor.grad`` over the processes, in place (every process then steps alike)."""
        if tensor.grad is not None:
            self.sum_(tensor.grad)

    def sum_(self, tensor: Tensor) -> None:
        """Sum the image gradient ``tensor`` over the processes, in place."""
        if self.size == 1:
            return
        import torch.distributed as dist

        self._collective("the all-reduce of the image gradient", lambda: dist.all_reduce(tensor))

    def sum(self, value: Tensor) -> Tensor:
        """The sum over the processes of a (detached) tensor, e.g. the per-class losses."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        out = value.detach().clone()
        self._collective("the all-reduce of the matching loss", lambda: dist.all_reduce(out))
        return out

    def same_module(self, module: nn.Module) -> None:
        """Every process takes rank 0's parameters of ``module`` (one broadcast of them all)."""
        if self.size == 1:
            return
        import torch.distributed as dist

        params = [p for p in module.parameters()]
        if not params:
            return
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in params])
            self._collective("the broadcast of the network", lambda: dist.broadcast(flat, src=0))
            for p, v in zip(params, flat.split([p.numel() for p in params])):
                p.copy_(v.view_as(p))

    def gather(self, mine: Sequence[int], values: Sequence[float], n: int) -> List[float]:
        """The ``n`` values of which this process computed those at indices ``mine``, in index
        order, on every process (float64 all-reduce of disjoint parts: exact)."""
        if len(mine) != len(values):
            raise ValueError(f"dsa_fast.condense: {len(values)} values for {len(mine)} indices")
        if self.size == 1:
            return list(values)
        import torch.distributed as dist

        buf = torch.zeros(n, dtype=torch.float64)
        if len(mine):
            buf[torch.as_tensor(list(mine))] = torch.as_tensor(list(values), dtype=torch.float64)
        self._collective("the gathering of the evaluation accuracies", lambda: dist.all_reduce(buf))
        return buf.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (pickled, sent through the CPU backend)."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.writer else None]
        self._collective("the broadcast of the run state",
                         lambda: dist.broadcast_object_list(box, src=0, device=torch.device("cpu")))
        return box[0]

    def on_writer(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` run on rank 0 only (file system work); every process returns its
        result, or raises its error (marked ``shared_error``: every process has it, rank 0 says it)."""
        if self.size == 1:
            return fn(*args, **kwargs)
        outcome: Any = None
        error: Optional[Exception] = None
        if self.writer:
            try:
                outcome = (True, fn(*args, **kwargs))
            except Exception as e:  # handed to every process, raised there
                error = e
                try:
                    outcome = (False, pickle.loads(pickle.dumps(e)))
                except Exception:
                    outcome = (False, RuntimeError(f"{type(e).__name__}: {e}"))
        ok, value = self.broadcast(outcome)
        if not ok:
            value = error if error is not None else value  # rank 0 raises its own
            value.shared_error = True
            raise value
        return value

    # -- reporting --------------------------------------------------------------------------

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """On ranks other than 0, the package's loggers say errors only inside the block."""
        if self.writer:
            yield
            return
        log = logging.getLogger("dsa_fast")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            log.setLevel(level)

    def describe(self, device: str) -> dict:
        """What config.json and summary.json record about the processes that ran a ``device`` run:
        their number and the backend that carried the run's tensors (None without a process group)."""
        backend: Optional[str] = self.backend or None
        if backend is not None and ":" in backend:  # e.g. 'cpu:gloo,cuda:nccl': the one for the device
            by_type = dict(part.split(":", 1) for part in backend.split(","))
            backend = by_type.get(torch.device(device).type, backend)
        return {"processes": self.size, "backend": backend}


SINGLE = Processes(0, 1)
